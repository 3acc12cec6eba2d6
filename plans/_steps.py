"""Per-step hook with time-outs: a dead IOC fails the run with a clear message instead of hanging.

``bluesky.plan_stubs.one_nd_step`` waits forever for a motor or detector
status; when an IOC dies mid-scan its status never completes. The hook
below is ``one_nd_step`` with the moves and the trigger each bounded by a
time-out, raising ``TimeoutError`` that names the devices and the point.
"""

from __future__ import annotations

from bluesky import plan_stubs as bps
from bluesky.utils import root_ancestor, separate_devices, short_uid

#: Default bound (s) on one point's detector trigger (exposure + read-out + file write).
TRIGGER_TIMEOUT_S = 30.0
#: Default bound (s) on one point's moves.
MOVE_TIMEOUT_S = 300.0


def guarded_step(*, trigger_timeout_s: float = TRIGGER_TIMEOUT_S, move_timeout_s: float = MOVE_TIMEOUT_S):
    """A ``per_step`` for ``scan_nd`` that bounds every move and trigger in time."""
    for name, v in (("trigger_timeout_s", trigger_timeout_s), ("move_timeout_s", move_timeout_s)):
        if not float(v) > 0:
            raise ValueError(f"{name} must be > 0 s, got {v!r}")
    counter = {"point": 0}

    def take_reading(devices, name="primary"):
        devices = separate_devices(root_ancestor(d) for d in devices)
        group = short_uid("trigger")
        triggered = [d for d in devices if hasattr(d, "trigger")]
        for obj in triggered:
            yield from bps.trigger(obj, group=group)
        try:
            yield from bps.wait(group=group, timeout=trigger_timeout_s)
        except TimeoutError as exc:
            raise TimeoutError(
                f"{', '.join(d.name for d in triggered)} did not finish point {counter['point']} within "
                f"{trigger_timeout_s:g} s (detector IOC down or not acquiring?)") from exc
        yield from bps.create(name)
        readings = {}
        for obj in devices:
            reading = yield from bps.read(obj)
            if reading is not None:
                readings.update(reading)
        yield from bps.save()
        return readings

    def per_step(detectors, step, pos_cache):
        # a checkpoint per point, as in one_nd_step: a deferred pause (Ctrl-C) stops here
        # and a resume after an immediate pause re-does only this point
        yield from bps.checkpoint()
        group = short_uid("move")
        moving = []
        for motor, target in step.items():
            if pos_cache.get(motor) == target:
                continue
            yield from bps.abs_set(motor, target, group=group)
            pos_cache[motor] = target
            moving.append(motor)
        if moving:
            try:
                yield from bps.wait(group=group, timeout=move_timeout_s)
            except TimeoutError as exc:
                raise TimeoutError(
                    f"{', '.join(m.name for m in moving)} did not reach point {counter['point']} within "
                    f"{move_timeout_s:g} s (motor IOC down or motor stuck?)") from exc
        motors = list(step.keys())
        result = yield from take_reading(list(detectors) + motors)
        counter["point"] += 1
        return result

    return per_step
