"""One guard for every plan braggscope runs: a lost device or a bad frame ends the run at once, named.

:func:`guarded` wraps a plan and watches its messages, whatever the plan is (the scan plans wrap
themselves; :func:`install_guard` puts it on a RunEngine, so the session's ``ascan``, ``mesh``,
``ct`` and any bluesky plan typed there get it too):

* **connections**: every Channel Access signal of the devices the plan touches reports its
  disconnection (ophyd connection callbacks, from the CA client's thread); the pending moves and
  triggers of the plan fail at once and the run stops with a :class:`DeviceLostError` naming the
  PV, the device and the point. A loss also stops the run at its next message, even when the IOC
  is back by then: a restarted IOC forgot its positions, so nothing more is recorded;
* **frames**: a detector reading whose frame counter (``*_num_captured``) or unique id
  (``*_unique_id``) did not increase since the previous event of its stream is refused with a
  :class:`DetectorFrameError` before its event is saved;
* **time-outs** (optional) on the waits for moves and triggers, for devices that stay connected
  but never finish;
* after a loss, the plan's clean-up readings (a closing baseline) are skipped, so the stop
  document says the first cause rather than a later "not connected".

Guards nest: a plan's own guard (its time-outs) inside the session's applies its time-outs
through the outer one, which does the watching once.

A plan that outlives a loss (an operando campaign waits for the IOC and measures the checkpoint
again) says so with :func:`recovered` once its devices are back: the guard then watches afresh.
"""

from __future__ import annotations

import threading
import time

from bluesky.utils import FailedStatus, Msg, RunEngineControlException, root_ancestor

from braggscope.core.errors import ArgumentError

__all__ = ["DetectorFrameError", "DeviceLostError", "ConnectionWatchdog", "MOVE_TIMEOUT_S", "TRIGGER_TIMEOUT_S",
           "WATCHDOG", "guarded", "install_guard", "recovered"]

#: Default bound (s) of the scan plans on one point's detector trigger (exposure + read-out + file write).
TRIGGER_TIMEOUT_S = 30.0
#: Default bound (s) of the scan plans on one point's moves.
MOVE_TIMEOUT_S = 300.0
#: Event-field suffixes of a detector's frame counters: each must increase from one event to the next.
FRAME_COUNTERS = ("_unique_id", "_num_captured")
#: The messages before which a lost connection stops the plan (clean-up messages pass).
_CHECKED = frozenset({"checkpoint", "set", "trigger", "wait", "create", "read", "save", "stage", "open_run",
                      "kickoff", "complete", "collect", "prepare"})
#: Seconds a failed status, time-out or disconnection waits for a connection callback that would explain it.
LOSS_WAIT_S = 2.0
_HANDSHAKE = "braggscope_guard"  # a Msg('null') keyword an enclosing guard answers
_RECOVERED = "braggscope_guard_recovered"  # a Msg('null') keyword: the plan dealt with its losses


class DeviceLostError(ConnectionError):
    """A device's connection was lost during a run (IOC killed, restarted or unreachable)."""


class DetectorFrameError(RuntimeError):
    """A detector's frame counter or unique id stalled or went backwards: the point has no frame of its own."""


class ConnectionWatchdog:
    """Record Channel Access disconnections of ophyd signals and fail the statuses waiting on them.

    One instance (:data:`WATCHDOG`) serves every plan of a process: :meth:`watch` subscribes each
    signal once; losses are numbered so that a plan considers only those after its start
    (:meth:`mark`) and of its own devices.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._lost = threading.Condition(self._lock)
        self._watched: set[int] = set()
        self._pending: dict = {}  # status -> the device names it depends on (a guard's live set)
        self.losses: list[dict] = []  # {"time", "device", "signal", "pv"}

    def watch(self, device) -> None:
        """Subscribe to the connection state of every EPICS signal of ``device`` (idempotent)."""
        signals = [item.item for item in device.walk_signals()] if hasattr(device, "walk_signals") else [device]
        for signal in signals:
            if not hasattr(signal, "pvname") or id(signal) in self._watched:
                continue
            self._watched.add(id(signal))
            signal.subscribe(self._on_meta, event_type=signal.SUB_META, run=False)

    def mark(self) -> int:
        """The number of losses so far: losses after it are :meth:`losses_since` it."""
        with self._lock:
            return len(self.losses)

    def losses_since(self, since: int, devices) -> list[dict]:
        """The losses after loss number ``since`` of the devices named in ``devices``."""
        if len(self.losses) <= since:  # the common case, without the lock
            return []
        with self._lock:
            return [loss for loss in self.losses[since:] if loss["device"] in devices]

    def wait_for_losses(self, since: int, devices, timeout: float) -> list[dict]:
        """:meth:`losses_since`, waiting up to ``timeout`` s for one (its callback may still be on its way)."""
        deadline = time.monotonic() + timeout
        with self._lost:
            while True:
                lost = [loss for loss in self.losses[since:] if loss["device"] in devices]
                remaining = deadline - time.monotonic()
                if lost or remaining <= 0:
                    return lost
                self._lost.wait(remaining)

    def guard(self, status, since: int, devices) -> None:
        """Fail ``status`` as soon as one of ``devices`` (names; a live set) loses a connection."""
        lost = self.losses_since(since, devices)
        if lost:
            _fail(status, DeviceLostError(describe(lost, "while waiting")))
            return
        with self._lock:  # finished statuses are forgotten here (a done-callback costs more than this)
            self._pending = {s: d for s, d in self._pending.items() if not s.done}
            self._pending[status] = devices

    def _on_meta(self, *, obj=None, connected=True, **kwargs):
        if connected or obj is None:
            return
        root = obj.root if getattr(obj, "root", None) is not None else obj
        loss = {"time": time.time(), "device": root.name, "signal": obj.name, "pv": getattr(obj, "pvname", "?")}
        with self._lock:
            self.losses.append(loss)
            self._lost.notify_all()
            hit = [status for status, devices in self._pending.items() if root.name in devices]
            for status in hit:
                del self._pending[status]
        for status in hit:
            _fail(status, DeviceLostError(describe([loss], "while waiting")))


#: The process-wide watchdog the guards use.
WATCHDOG = ConnectionWatchdog()


def _fail(status, error) -> None:
    if not status.done:
        try:
            status.set_exception(error)
        except Exception:  # noqa: BLE001 - finished meanwhile
            pass


def describe(losses: list[dict], where: str) -> str:
    """The stop reason of a run that lost ``losses`` (the first named) ``where``."""
    first = losses[0]
    more = f" (and {len(losses) - 1} more PVs)" if len(losses) > 1 else ""
    return (f"lost connection to {first['pv']} of device {first['device']!r}{more} {where}: its IOC died, "
            "restarted or became unreachable; the run stops here (a restarted IOC forgot its positions, "
            "so no further point is recorded). reconnect() (braggscope shell) and start a new run")


def guarded(plan, *, trigger_timeout_s: float | None = None, move_timeout_s: float | None = None,
            watchdog: ConnectionWatchdog | None = None):
    """``plan`` with the guard (see the module): lost devices and bad frames stop it, named.

    Parameters
    ----------
    plan : iterable of Msg
    trigger_timeout_s, move_timeout_s : float, optional
        Seconds a wait for triggers (or for moves only) may take; None: no bound.
    watchdog : ConnectionWatchdog, optional
        Default :data:`WATCHDOG`.

    Raises (in the plan)
    --------------------
    DeviceLostError
        A CA connection of a device of the plan was lost since the plan started.
    DetectorFrameError
        A detector's frame counter or unique id stalled or went backwards.
    TimeoutError
        A move or trigger did not finish in time.
    """
    for name, value in (("trigger_timeout_s", trigger_timeout_s), ("move_timeout_s", move_timeout_s)):
        if value is not None and not float(value) > 0:
            raise ArgumentError(f"{name} must be > 0 s, got {value!r}")
    timeouts = (trigger_timeout_s, move_timeout_s)
    outer = yield Msg("null", None, **{_HANDSHAKE: True})  # answered by an enclosing guard, else None
    if isinstance(outer, _Guard):  # it watches: ours only adds the time-outs
        outer.timeouts.append(timeouts)
        try:
            return (yield from plan)
        finally:
            outer.timeouts.remove(timeouts)
    return (yield from _Guard(WATCHDOG if watchdog is None else watchdog, timeouts).run(plan))


def recovered():
    """Tell the guard around this plan that the plan caught a :class:`DeviceLostError` (or a
    :class:`DetectorFrameError`), waited for its devices and goes on: losses before now are forgotten,
    frame counters start again (a restarted IOC counts from 0). A plan stub; nothing without a guard."""
    yield Msg("null", None, **{_RECOVERED: True})


def install_guard(RE) -> None:
    """Run every plan of ``RE`` guarded (see :func:`guarded`; no time-outs of its own); idempotent.

    The guard is the outermost preprocessor when installed last (the session installs it after
    its baseline), so it also sees the baseline readings.
    """
    if _run_guarded not in RE.preprocessors:
        RE.preprocessors.append(_run_guarded)


def _run_guarded(plan):
    """The RunEngine's guard: the outermost, so without the handshake of a nested one."""
    return (yield from _Guard(WATCHDOG, (None, None)).run(plan))


class _Guard:
    """The state of one guarded plan: its devices, point, open event bundle and frame counters."""

    def __init__(self, dog: ConnectionWatchdog, timeouts):
        self.dog, self.since = dog, dog.mark()
        self.timeouts = [timeouts]  # the innermost plan's (trigger, move) time-outs last
        self.devices: set[str] = set()  # names of the root devices the plan touched
        self._roots: dict[int, object] = {}
        self.groups: dict = {}  # wait group -> {"move": [names], "trigger": [names]}
        self.counters: dict = {}  # (stream, field) -> last value
        self.point, self.triggered, self.stream, self.bundle_open = 0, False, None, False
        self.waiting = None  # the kinds of the group of the last wait
        self.failing, self.lost = False, set()

    # -- the message loop ---------------------------------------------------------------------------
    def run(self, plan):
        reply, error = None, None
        while True:
            try:
                msg = plan.send(reply) if error is None else plan.throw(error)
            except StopIteration as stop:
                return stop.value
            reply, error = None, None
            try:
                if self._skip(msg):
                    continue
                msg = self._before(msg)
            except (DeviceLostError, DetectorFrameError) as exc:
                yield from self._drop_bundle()  # the point's event is never saved
                error = self._failing(exc)
                continue
            if msg.command == "null" and msg.kwargs.get(_HANDSHAKE):
                reply = self  # a nested guard: it gives us its time-outs
                continue
            if msg.command == "null" and msg.kwargs.get(_RECOVERED):
                self._recover()
                continue
            try:
                reply = yield msg
            except GeneratorExit:
                plan.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - explained, then thrown into the plan
                if self._consequence(exc):
                    continue  # the plan is on its way out already with the first cause
                error = self._failing(self._explain(msg, exc))
                continue
            try:
                reply = self._after(msg, reply)
            except DetectorFrameError as exc:
                reply = None
                yield from self._drop_bundle()
                error = self._failing(exc)

    def _recover(self) -> None:
        """The plan goes on after its losses (:func:`recovered`): watch from now, count frames afresh."""
        self.since = self.dog.mark()
        self.failing, self.lost = False, set()
        self.counters.clear()
        self.groups.clear()
        self.stream, self.bundle_open = None, False

    def _drop_bundle(self):
        """Drop the open event bundle (the plan's own drop that follows is skipped)."""
        if self.bundle_open:
            self.bundle_open = False
            try:
                yield Msg("drop")
            except Exception:  # noqa: BLE001 - the RunEngine closed it already: the plan's error matters
                pass

    def _consequence(self, exc) -> bool:
        """Whether ``exc`` (thrown by the RunEngine during the clean-up of a run stopped by a loss) is a
        consequence of that loss: a status of a lost device failing late, a lost device not answering."""
        return bool(self.failing and self.lost) and isinstance(exc, (FailedStatus, ConnectionError, TimeoutError))

    def _failing(self, exc):
        self.failing = True
        if isinstance(exc, DeviceLostError):
            self.lost = {loss["device"] for loss in self.dog.losses_since(self.since, self.devices)}
        return exc

    def _skip(self, msg) -> bool:
        """After a loss, skip the readings and moves of the clean-up (a closing baseline) and a second drop."""
        command = msg.command
        if command == "drop" and not self.bundle_open:
            return True  # dropped by the guard already
        if not (self.failing and self.lost):
            return False
        if command == "create":
            self.stream = "skipped"
            return True
        if command in ("save", "drop") and self.stream == "skipped":
            self.stream = None
            return True
        return ((command in ("read", "trigger") and self.stream == "skipped")
                or (command in ("set", "trigger", "read") and self._root_name(msg.obj) in self.lost))

    # -- before a message goes to the RunEngine -----------------------------------------------------
    def _before(self, msg):
        command, obj = msg.command, msg.obj
        if obj is not None:
            self._root_name(obj)
        if command not in _CHECKED:
            return msg
        if not self.failing:
            lost = self.dog.losses_since(self.since, self.devices)
            if lost:
                raise DeviceLostError(describe(lost, self._where(msg)))
        if command == "checkpoint":
            self.triggered = False
        elif command == "trigger":
            self.triggered = True
        elif command == "wait":
            return self._bounded(msg)
        elif command == "create":
            self.stream, self.bundle_open = msg.kwargs.get("name", "primary"), True
        elif command == "open_run":
            self.counters.clear()
            self.point = 0
        elif command == "stage":  # a new file: its frame count starts again
            prefix = f"{self._root_name(obj)}_"
            self.counters = {k: v for k, v in self.counters.items() if not k[1].startswith(prefix)}
        return msg

    def _bounded(self, msg):
        """The wait with the innermost time-out of its kind, where the plan gave none."""
        kinds = self.waiting = self.groups.pop(_group(msg), None)
        if kinds is None or msg.kwargs.get("timeout") is not None:
            return msg
        trigger_s, move_s = self.timeouts[-1]
        timeout = trigger_s if kinds["trigger"] else move_s
        if timeout is None:
            return msg
        return msg._replace(kwargs={**msg.kwargs, "timeout": timeout})

    # -- after the RunEngine answered -------------------------------------------------------------
    def _after(self, msg, reply):
        command = msg.command
        if command in ("set", "trigger") and getattr(reply, "done", True) is False:  # a pending status
            group = msg.kwargs.get("group")
            if group is not None:
                kinds = self.groups.setdefault(group, {"move": [], "trigger": []})
                kinds["move" if command == "set" else "trigger"].append(getattr(msg.obj, "name", repr(msg.obj)))
            self.dog.guard(reply, self.since, self.devices)
        elif command == "read" and reply:
            self._check_counters(msg.obj, reply)
        elif command in ("save", "drop"):
            if command == "save" and self.stream == "primary":
                self.point += 1
                self.triggered = False
            self.bundle_open = False
        return reply

    def _check_counters(self, obj, reading) -> None:
        stream = self.stream if self.bundle_open else None
        for key, value in reading.items():
            if not key.endswith(FRAME_COUNTERS):
                continue
            value = value.get("value")
            last = self.counters.get((stream, key))
            if last is not None and not value > last:
                what = "stalled" if value == last else "went backwards"
                raise DetectorFrameError(
                    f"{obj.name}: {key} {what} at point {self.point} ({last} -> {value}): this reading has no "
                    "frame of its own (an exposure lost, or a restarted detector IOC); the run stops here, "
                    "every point recorded before keeps its own frame")
            self.counters[(stream, key)] = value

    # -- explaining a failure -----------------------------------------------------------------------
    def _explain(self, msg, exc):
        """The first cause of ``exc`` raised at ``msg``: a lost device, a device's own error, a time-out."""
        if isinstance(exc, RunEngineControlException) or self.failing:
            return exc
        where = self._where(msg)
        lost = self.dog.losses_since(self.since, self.devices)
        if not lost and isinstance(exc, (FailedStatus, ConnectionError, TimeoutError)):
            # a status failed by a dropped connection can come before the connection callback
            lost = self.dog.wait_for_losses(self.since, self.devices, LOSS_WAIT_S)
        if lost:
            error = DeviceLostError(describe(lost, where))
            error.__cause__ = exc
            return error
        if isinstance(exc, FailedStatus):
            return _failure_cause(exc, where)
        if isinstance(exc, TimeoutError) and msg.command == "wait" and self.waiting:
            trigger = bool(self.waiting["trigger"])
            names = ", ".join(self.waiting["trigger" if trigger else "move"])
            why = "detector IOC down or not acquiring?" if trigger else "motor IOC down or motor stuck?"
            error = TimeoutError(f"{names} did not {'finish' if trigger else 'reach'} point {self.point} within "
                                 f"{msg.kwargs.get('timeout'):g} s ({why})")
            error.__cause__ = exc
            return error
        return exc

    def _where(self, msg) -> str:
        command = msg.command
        if command == "checkpoint" or (command == "set" and not self.triggered and not self.bundle_open):
            detail = f" (move of {getattr(msg.obj, 'name', repr(msg.obj))})" if command == "set" else ""
            return f"before point {self.point}{detail}"
        if command == "wait":
            kinds = self.groups.get(_group(msg)) or self.waiting or {}
            if kinds.get("trigger"):
                return f"at point {self.point} (trigger of {', '.join(kinds['trigger'])})"
            if kinds.get("move"):
                return f"at point {self.point} (move of {', '.join(kinds['move'])})"
        if command in ("set", "trigger"):
            name = getattr(msg.obj, "name", repr(msg.obj))
            return f"at point {self.point} ({'move' if command == 'set' else 'trigger'} of {name})"
        if command in ("create", "read", "save"):
            return f"at point {self.point} (reading)"
        return f"at point {self.point}"

    def _root_name(self, obj) -> str:
        root = self._roots.get(id(obj))
        if root is None:
            try:
                root = root_ancestor(obj)
            except AttributeError:  # not an ophyd object
                root = obj
            self._roots[id(obj)] = root
            name = getattr(root, "name", None)
            if name is not None and name not in self.devices:
                self.dog.watch(root)
                self.devices.add(name)
        return getattr(root, "name", None)


def _group(msg):
    """The group a ``wait`` message waits for."""
    return msg.kwargs.get("group", msg.args[0] if msg.args else None)


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
        return FailedStatus(f"{device} failed {where} (its status reports no error of its own)")
    failed = FailedStatus(f"{device} failed {where}: {type(cause).__name__}: {cause}")
    failed.__cause__ = cause  # the device's own exception, as bluesky chains it
    return failed
