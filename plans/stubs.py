"""The messages of one step-scan point, built directly: a ``per_step`` for bluesky's ``scan_nd``.

:func:`step_point` does what bluesky's ``one_nd_step`` does (a checkpoint, the moves, then
``trigger_and_read`` of the detectors and motors) in fewer messages and without bluesky's
``@plan`` decorator, which captures the caller's stack at every plan stub it calls (about a third
of the RunEngine's time per point, measured in ``benchmarks/bench_scan_overhead.py``):

* motors that stay where they are are neither moved nor waited for;
* devices whose ``trigger()`` is ophyd's do-nothing ``Device.trigger`` (motors) are not triggered.

Every bluesky scan takes it: ``scan``, ``rel_scan``, ``grid_scan``, ``list_scan``, ``scan_nd``
(``per_step=step_point``); :func:`read_point` is its ``take_reading``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bluesky.preprocessors import rewindable_wrapper
from bluesky.utils import Msg, all_safe_rewind, separate_devices, short_uid
from ophyd import Device

__all__ = ["move_point", "read_point", "step_point"]

_NO_TRIGGER = Device.trigger  # ophyd's: returns a finished status, nothing to wait for


def step_point(detectors: Sequence, step: Mapping, pos_cache: dict, take_reading=None):
    """One point of an N-dimensional step scan: checkpoint, move, trigger and read (``per_step``).

    Parameters
    ----------
    detectors : list of readable devices
    step : dict
        Motor -> position of this point.
    pos_cache : dict
        Motor -> last position set (updated).
    take_reading : plan, optional
        ``take_reading(devices, name="primary")``; default :func:`read_point`.

    Returns
    -------
    dict
        The point's readings.
    """
    yield Msg("checkpoint")
    yield from move_point(step, pos_cache)
    return (yield from (take_reading or read_point)(list(detectors) + list(step)))


def move_point(step: Mapping, pos_cache: dict):
    """Move the motors of ``step`` that are not there yet, together, and wait for them."""
    group = None
    for motor, position in step.items():
        if pos_cache.get(motor) == position:
            continue
        group = group or short_uid("set")
        yield Msg("set", motor, position, group=group)
        pos_cache[motor] = position
    if group is not None:
        yield Msg("wait", None, group=group)


def read_point(devices: Sequence, name: str = "primary"):
    """Trigger the devices that acquire, wait, and bundle every device's reading into one event.

    As bluesky's ``trigger_and_read`` (the event is dropped when a reading fails); returns the readings.
    """
    devices = separate_devices(devices)
    plan = _trigger_and_read(devices, name)
    if not all_safe_rewind(devices):
        plan = rewindable_wrapper(plan, False)
    return (yield from plan)


def _trigger_and_read(devices, name):
    triggered = [d for d in devices if _acquires(d)]
    if triggered:
        group = short_uid("trigger")
        for device in triggered:
            yield Msg("trigger", device, group=group)
        yield Msg("wait", None, group=group)
    yield Msg("create", None, name=name)
    readings = {}
    try:
        for device in devices:
            reading = yield Msg("read", device)
            if reading is not None:
                readings.update(reading)
    except Exception:
        yield Msg("drop")
        raise
    yield Msg("save")
    return readings


def _acquires(device) -> bool:
    """Whether ``device.trigger()`` does something (not ophyd's do-nothing ``Device.trigger``)."""
    trigger = getattr(type(device), "trigger", None)
    return trigger is not None and trigger is not _NO_TRIGGER
