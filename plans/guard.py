"""Per-step hook that fails a run fast, with its cause, when a device is lost.

``bluesky.plan_stubs.one_nd_step`` waits forever for a motor or detector
status; when an IOC dies mid-scan its status never completes. The hook below
is ``one_nd_step`` with two guards:

* a **connection watchdog**: every Channel Access signal of the scan's devices
  reports its disconnection (ophyd connection callbacks, from the CA client's
  thread) and the watchdog fails the point's pending move and trigger statuses
  at once, so the run ends within a fraction of a second of an IOC's death with
  the PV and device named (not after the move time-out). A lost connection also
  fails the run at the next point, and between a point's readings and its event,
  even when the IOC has come back meanwhile: a restarted IOC lost its state
  (motors at their start-up positions), so no point is recorded after it;
* time-outs on the moves and the trigger, for devices that stay connected but
  never finish (a stuck motor, a detector that does not acquire).
"""

from __future__ import annotations

import threading
import time

from bluesky import plan_stubs as bps
from bluesky.utils import FailedStatus, root_ancestor, separate_devices, short_uid

from braggscope.core.errors import ArgumentError

__all__ = ["DeviceLostError", "MOVE_TIMEOUT_S", "TRIGGER_TIMEOUT_S", "WATCHDOG", "ConnectionWatchdog",
           "guarded_step"]

#: Default bound (s) on one point's detector trigger (exposure + read-out + file write).
TRIGGER_TIMEOUT_S = 30.0
#: Default bound (s) on one point's moves.
MOVE_TIMEOUT_S = 300.0


class DeviceLostError(ConnectionError):
    """A device's connection was lost during a run (IOC killed, restarted or unreachable)."""


class ConnectionWatchdog:
    """Record Channel Access disconnections of ophyd signals and fail the statuses waiting on them.

    One instance (:data:`WATCHDOG`) serves every plan of a process: ``watch``
    subscribes each signal once; losses are numbered so that a plan considers
    only those after its start (:meth:`mark`).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._watched: set[int] = set()
        self._pending: set = set()
        self.losses: list[dict] = []  # {"time", "device", "signal", "pv"}

    def watch(self, devices) -> None:
        """Subscribe to the connection state of every EPICS signal of ``devices`` (idempotent)."""
        for device in separate_devices(root_ancestor(d) for d in devices):
            signals = [item.item for item in device.walk_signals()] if hasattr(device, "walk_signals") \
                else [device]
            for signal in signals:
                if not hasattr(signal, "pvname") or id(signal) in self._watched:
                    continue
                self._watched.add(id(signal))
                signal.subscribe(self._on_meta, event_type=signal.SUB_META, run=False)

    def mark(self) -> int:
        """The number of losses so far: pass it to :meth:`check` to ignore older ones."""
        with self._lock:
            return len(self.losses)

    def check(self, since: int, where: str) -> None:
        """Raise :class:`DeviceLostError` if a connection was lost after loss number ``since``."""
        with self._lock:
            new = self.losses[since:]
        if new:
            raise DeviceLostError(_describe(new, where))

    def guard(self, status, since: int, where: str):
        """Fail ``status`` as soon as a connection is lost (at once if one already was)."""
        with self._lock:
            new = self.losses[since:]
            if not new:
                self._pending.add(status)
        if not new:
            status.add_callback(self._forget)  # runs at once if already done: outside the lock
        elif not status.done:
            status.set_exception(DeviceLostError(_describe(new, where)))
        return status

    def _forget(self, status):
        with self._lock:
            self._pending.discard(status)

    def _on_meta(self, *, obj=None, connected=True, **kwargs):
        if connected or obj is None:
            return
        root = obj.root if getattr(obj, "root", None) is not None else obj
        loss = {"time": time.time(), "device": root.name, "signal": obj.name,
                "pv": getattr(obj, "pvname", "?")}
        with self._lock:
            self.losses.append(loss)
            pending, self._pending = list(self._pending), set()
        error = DeviceLostError(_describe([loss], "while waiting"))
        for status in pending:
            if not status.done:
                try:
                    status.set_exception(error)
                except Exception:  # noqa: BLE001 - finished meanwhile
                    pass


#: The process-wide watchdog used by :func:`guarded_step`.
WATCHDOG = ConnectionWatchdog()


def _describe(losses: list[dict], where: str) -> str:
    first = losses[0]
    more = f" (and {len(losses) - 1} more PVs)" if len(losses) > 1 else ""
    return (f"lost connection to {first['pv']} of device {first['device']!r}{more} {where}: its IOC died, "
            "restarted or became unreachable; the run stops here (a restarted IOC forgot its positions, "
            "so no further point is recorded). reconnect() (braggscope shell) and start a new run")


def _failure_cause(exc: FailedStatus, where: str) -> FailedStatus:
    """A ``FailedStatus`` saying which device failed where, and why (its own error, also the ``__cause__``):
    what the stop document should say (``str(FailedStatus)`` was only ``DeviceStatus(device=..., success=False)``)."""
    status = exc.args[0] if exc.args else None
    device = getattr(getattr(status, "device", None), "name", None) or getattr(getattr(status, "obj", None),
                                                                               "name", "a device")
    try:
        cause = status.exception() if status is not None else None
    except Exception:  # noqa: BLE001 - statuses without exception()
        cause = None
    if cause is None:
        return exc
    failed = FailedStatus(f"{device} failed {where}: {type(cause).__name__}: {cause}")
    failed.__cause__ = cause  # the device's own exception, as bluesky chains it
    return failed


def guarded_step(*, trigger_timeout_s: float = TRIGGER_TIMEOUT_S, move_timeout_s: float = MOVE_TIMEOUT_S,
                 watchdog: ConnectionWatchdog | None = None):
    """A ``per_step`` for ``scan_nd`` that fails fast on a lost device and bounds every move and trigger.

    Parameters
    ----------
    trigger_timeout_s, move_timeout_s : float
        Seconds a point's trigger and moves may take.
    watchdog : ConnectionWatchdog, optional
        Default :data:`WATCHDOG`.

    Raises (in the plan)
    --------------------
    DeviceLostError
        A CA connection of a scanned device was lost since the plan's first
        point (names the PV and the device).
    TimeoutError
        A move or trigger did not finish in time.
    """
    for name, v in (("trigger_timeout_s", trigger_timeout_s), ("move_timeout_s", move_timeout_s)):
        if not float(v) > 0:
            raise ArgumentError(f"{name} must be > 0 s, got {v!r}")
    dog = WATCHDOG if watchdog is None else watchdog
    state = {"point": 0, "since": None, "names": ""}

    def start_and_wait(starts, group, timeout, what):
        """Yield the ``(plan stub, args)`` in ``starts`` (all in ``group``), then wait, guarded."""
        where = f"at point {state['point']} ({what}; scan of {state['names']})"
        try:
            statuses = []
            for stub, args in starts:
                statuses.append((yield from stub(*args, group=group)))
            for status in statuses:
                if status is not None and hasattr(status, "add_callback"):
                    dog.guard(status, state["since"], where)
            yield from bps.wait(group=group, timeout=timeout)
        except FailedStatus as exc:  # thrown at the wait or, for a status failed at once, at a start
            dog.check(state["since"], where)  # a lost device: say so rather than "status failed"
            failure = _failure_cause(exc, where)
            raise failure from failure.__cause__
        dog.check(state["since"], where)

    def take_reading(devices, name="primary"):
        devices = separate_devices(root_ancestor(d) for d in devices)
        group = short_uid("trigger")
        triggered = [d for d in devices if hasattr(d, "trigger")]
        try:
            yield from start_and_wait([(bps.trigger, (obj,)) for obj in triggered], group, trigger_timeout_s,
                                      f"trigger of {', '.join(d.name for d in triggered)}")
        except TimeoutError as exc:
            raise TimeoutError(
                f"{', '.join(d.name for d in triggered)} did not finish point {state['point']} within "
                f"{trigger_timeout_s:g} s (detector IOC down or not acquiring?)") from exc
        yield from bps.create(name)
        readings = {}
        for obj in devices:
            reading = yield from bps.read(obj)
            if reading is not None:
                readings.update(reading)
        # the readings are only recorded if every device stayed connected until now
        dog.check(state["since"], f"at point {state['point']} (reading; scan of {state['names']})")
        yield from bps.save()
        return readings

    def per_step(detectors, step, pos_cache):
        if state["since"] is None:  # first point: watch everything this scan uses
            dog.watch(list(detectors) + list(step.keys()))
            state["since"] = dog.mark()
            state["names"] = ", ".join(d.name for d in list(detectors) + list(step.keys()))
        # a checkpoint per point, as in one_nd_step: a deferred pause (Ctrl-C) stops here
        # and a resume after an immediate pause re-does only this point
        yield from bps.checkpoint()
        dog.check(state["since"], f"before point {state['point']} (scan of {state['names']})")
        moving = [motor for motor, target in step.items() if pos_cache.get(motor) != target]
        for motor in moving:
            pos_cache[motor] = step[motor]
        if moving:
            try:
                yield from start_and_wait([(bps.abs_set, (m, step[m])) for m in moving], short_uid("move"),
                                          move_timeout_s, f"move of {', '.join(m.name for m in moving)}")
            except TimeoutError as exc:
                raise TimeoutError(
                    f"{', '.join(m.name for m in moving)} did not reach point {state['point']} within "
                    f"{move_timeout_s:g} s (motor IOC down or motor stuck?)") from exc
        motors = list(step.keys())
        result = yield from take_reading(list(detectors) + motors)
        state["point"] += 1
        return result

    return per_step
