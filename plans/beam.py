"""What an acquisition does when the beam goes: bluesky's suspenders, their record, the monitor per point.

:func:`install_beam` arms a RunEngine (the session, the queue worker and the demos do it, from the
configuration's ``[beam]``):

* **suspenders** (bluesky's own): the run suspends while the ring current is below a floor
  (:class:`~bluesky.suspenders.SuspendFloor`) or the front-end shutter is closed
  (:class:`~bluesky.suspenders.SuspendBoolLow`), and resumes ``resume_delay_s`` after the beam is
  back. A step point interrupted by the suspension is taken again (the RunEngine rewinds to the
  point's checkpoint); a fly line is flown again by ``sxdm_fly``;
* **a record of every suspension** in the run: an event of the ``suspensions`` stream
  (:class:`SuspensionLog`: when, why, how long), written when the run resumes;
* **a check of every point** before its event is saved: a point whose exposure saw the beam down
  and that no suspension took again fails the run (:class:`BeamLostError`), so a run ends
  ``success`` only when every point's data were taken with beam;
* **the monitor with every point**: where a plan triggers a detector but not the incident-flux
  monitor, the monitor is counted and read with it (its count time set to the detector's exposure
  once per run), so every event of every plan carries ``mon1``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bluesky.suspenders import SuspendBoolLow, SuspendFloor
from bluesky.utils import Msg
from ophyd import Device

from braggscope.devices.machine import BeamWatch

__all__ = ["BeamLostError", "BeamPolicy", "SuspensionLog", "beam_checked", "beam_suspenders", "describe_policy",
           "install_beam"]

#: Seconds a point whose exposure saw the beam down waits for the suspension that takes it again.
SUSPENSION_GRACE_S = 0.3
_NO_TRIGGER = Device.trigger  # ophyd's: nothing to count (motors, the machine)


class BeamLostError(RuntimeError):
    """A point was exposed while the beam was down and nothing took it again."""


@dataclass(frozen=True)
class BeamPolicy:
    """The configuration's ``[beam]``: whether and when acquisitions suspend.

    Attributes
    ----------
    suspend : bool
        Arm the suspenders and the check of every point.
    current_floor_ma : float
        Suspend while the ring current is below this (mA); 0: not on the current.
    shutter : bool
        Suspend while the front-end shutter is closed.
    resume_delay_s : float
        The beam back this long before the run resumes (s).
    fly_refill_guard : bool
        Fly maps: a line waits for a refill due before the line would end.
    refill_margin_s : float
        Added to a line's duration when it is compared with the refill countdown (s).
    """

    suspend: bool = True
    current_floor_ma: float = 10.0
    shutter: bool = True
    resume_delay_s: float = 2.0
    fly_refill_guard: bool = True
    refill_margin_s: float = 0.5

    @classmethod
    def from_config(cls, cfg) -> BeamPolicy:
        """From ``cfg["beam"]`` (defaults for the keys it lacks)."""
        section = dict(cfg.get("beam", {}) or {})
        return cls(**{k: v for k, v in section.items() if k in cls.__dataclass_fields__})

    def watch(self, machine) -> BeamWatch:
        """A :class:`~braggscope.devices.machine.BeamWatch` on ``machine`` with these thresholds."""
        return BeamWatch(machine, current_floor_ma=self.current_floor_ma, shutter=self.shutter)


def describe_policy(policy: BeamPolicy, machine, monitor) -> str:
    """One line for a banner: what suspends the runs and what is recorded."""
    if machine is None:
        beam = "no machine PVs (pv.machine): runs do not suspend"
    elif not policy.suspend:
        beam = "suspenders off ([beam] suspend = false)"
    else:
        causes = [f"ring current < {policy.current_floor_ma:g} mA"] if policy.current_floor_ma > 0 else []
        causes += ["shutter closed"] if policy.shutter else []
        beam = f"suspend while {' or '.join(causes) or 'never'} (resume {policy.resume_delay_s:g} s after)"
    counted = f"; {monitor.name} counted with every point" if monitor is not None else ""
    return beam + counted


class _SuspensionRecord:
    """The readable behind every event of the ``suspensions`` stream (one per process: bluesky wants the same
    objects read in every event of a stream, whichever log writes it). Read on the RunEngine's thread."""

    name = "suspension"
    parent = None
    FIELDS = {"kind": "string", "reason": "string", "start": "number", "end": "number", "duration_s": "number"}

    def __init__(self):
        self.values = {"kind": "", "reason": "", "start": 0.0, "end": 0.0, "duration_s": 0.0}

    def describe(self) -> dict:
        return {f"{self.name}_{k}": {"source": "braggscope.plans.beam", "dtype": t, "shape": []}
                for k, t in self.FIELDS.items()}

    def read(self) -> dict:
        stamp = time.time()
        return {f"{self.name}_{k}": {"value": v, "timestamp": stamp} for k, v in self.values.items()}

    def read_configuration(self) -> dict:
        return {}

    def describe_configuration(self) -> dict:
        return {}


_RECORD = _SuspensionRecord()


class SuspensionLog:
    """The ``suspensions`` stream: one event per suspension (and per fly line held for a refill).

    Fields ``suspension_kind`` (``current``, ``shutter``, ``refill``), ``suspension_reason``,
    ``suspension_start``, ``suspension_end`` (epoch s) and ``suspension_duration_s``.
    """

    def __init__(self):
        self.records: list[dict] = []  # every record written (this process)
        self.resumed_at = 0.0  # time.time() of the last resumption from a suspension (its rewind follows)

    def record(self, kind: str, reason: str, start: float, end: float):
        """Plan: an event of the ``suspensions`` stream for this record."""
        values = {"kind": kind, "reason": reason, "start": float(start), "end": float(end),
                  "duration_s": max(float(end) - float(start), 0.0)}
        self.records.append(values)
        _RECORD.values = dict(values)
        yield Msg("create", None, name="suspensions")
        yield Msg("read", _RECORD)
        yield Msg("save", None)


class _Runs:
    """Whether a run is open on the RunEngine (a RunEngine callback): the record of a suspension goes
    into the run, and a suspension outside any run (``ct``) records nothing."""

    def __init__(self):
        self.open = 0

    def __call__(self, name, doc):
        if name == "start":
            self.open += 1
        elif name == "stop":
            self.open = max(self.open - 1, 0)


def _recording(kind: str, log: SuspensionLog, runs: _Runs):
    """A suspender class for ``kind`` that notes when it tripped and records the suspension on resuming."""
    base = SuspendFloor if kind == "current" else SuspendBoolLow

    class Recording(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, post_plan=lambda: self._post_plan_(), **kwargs)
            self.since, self.reason = None, ""

        def __repr__(self):  # bluesky prints it at every resume; the base's repr names the post-plan
            return f"{type(self).__name__}({self._sig.name})"

        def __call__(self, value, **kwargs):
            was = self.tripped
            super().__call__(value, **kwargs)
            if self.tripped and not was:
                self.since, self.reason = time.time(), f"{self._tripped_message} ({self._sig.name} = {value!r})"

        def _post_plan_(self):
            since, self.since = self.since, None
            log.resumed_at = time.time()
            if since is not None and runs.open:
                yield from log.record(kind, self.reason, since, log.resumed_at)

    Recording.__name__ = Recording.__qualname__ = f"Recording{base.__name__}"
    return Recording


def beam_suspenders(machine, policy: BeamPolicy, log: SuspensionLog, runs=None) -> list:
    """bluesky suspenders on ``machine``'s current and shutter, as ``policy`` says, recording into ``log``."""
    runs = _Runs() if runs is None else runs
    out = []
    if policy.current_floor_ma > 0:
        out.append(_recording("current", log, runs)(
            machine.current, policy.current_floor_ma, sleep=policy.resume_delay_s,
            tripped_message=f"the ring current is below {policy.current_floor_ma:g} mA: no beam"))
    if policy.shutter:
        out.append(_recording("shutter", log, runs)(
            machine.shutter, sleep=policy.resume_delay_s, tripped_message="the front-end shutter is closed"))
    return out


def install_beam(RE, devices: dict, policy: BeamPolicy = BeamPolicy()) -> dict:
    """Arm ``RE`` for the beam: suspenders and the check of every point (``policy.suspend`` and a
    ``machine`` in ``devices``), the monitor ``mon1`` counted with every point (when in ``devices``).

    Install it before the guard (``plans.guard.install_guard``), which then watches the monitor too.

    Returns
    -------
    dict
        ``suspenders`` (installed), ``log`` (:class:`SuspensionLog`), ``watch`` (:class:`BeamWatch` or None).
    """
    machine, monitor = devices.get("machine"), devices.get("mon1")
    log, runs = SuspensionLog(), _Runs()
    RE.subscribe(runs)
    suspenders, watch = [], None
    if machine is not None and policy.suspend:
        watch = policy.watch(machine)
        suspenders = beam_suspenders(machine, policy, log, runs)
        for suspender in suspenders:
            RE.install_suspender(suspender)
    if watch is not None or monitor is not None:
        RE.preprocessors.append(lambda plan: beam_checked(plan, watch=watch, monitor=monitor, log=log))
    return {"suspenders": suspenders, "log": log, "watch": watch}


def beam_checked(plan, *, watch=None, monitor=None, log=None):
    """``plan`` with the monitor counted at every point and every point checked against the beam.

    Parameters
    ----------
    plan : iterable of Msg
    watch : BeamWatch, optional
        When given, a point that saw the beam down (from its checkpoint, or from the last resumption
        of a suspension, which took it again, to its ``save``) waits :data:`SUSPENSION_GRACE_S` for
        the suspension; still not taken again, the run fails with :class:`BeamLostError`.
    monitor : IncidentMonitor, optional
        Triggered beside the first detector of every point that does not trigger it, read before
        the point's ``save``.
    log : SuspensionLog, optional
        The suspenders' log (its ``resumed_at``); without it, a point is checked from its checkpoint.
    """
    return (yield from _BeamCheck(watch, monitor, log).run(plan))


class _BeamCheck:
    def __init__(self, watch, monitor, log=None):
        self.watch, self.monitor, self.log = watch, monitor, log
        self.in_run = self.triggered = self.read = self.synced = False
        self.own_group = None  # the monitor's trigger group when the detector's trigger had none
        self.pending = None  # the group of the point's detectors, the monitor to be triggered in it
        self.stream = None  # the bundle being read
        self.point_start, self.points = time.time(), 0

    def run(self, plan):
        reply, error = None, None
        while True:
            try:
                msg = plan.throw(error) if error is not None else plan.send(reply)
            except StopIteration as stop:
                return stop.value
            error = None
            try:
                yield from self._before(msg)
                reply = yield msg
                self._after(msg)
            except GeneratorExit:
                plan.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - thrown into the plan, as the RunEngine would
                error = exc

    def _before(self, msg):
        command = msg.command
        if command == "save" and self.in_run and self.stream == "primary":
            yield from self._add_monitor()
            if self.triggered and not self.read:
                if self.own_group is not None:
                    yield Msg("wait", None, group=self.own_group)
                yield Msg("read", self.monitor)
            yield from self._check_point()
        elif command == "read" and msg.obj is self.monitor:
            self.read = True
        elif command == "trigger" and msg.obj is self.monitor:
            self.triggered, self.pending = True, None
        elif command == "trigger" and self._counting(msg.obj):
            yield from self._sync_count_time(msg.obj)
            self.pending = msg.kwargs.get("group") or ""
        elif command == "wait":
            yield from self._add_monitor()

    def _after(self, msg):
        command = msg.command
        if command == "open_run":
            self.in_run, self.synced = True, False
        elif command == "close_run":
            self.in_run = False
        elif command == "checkpoint":
            self.point_start, self.triggered, self.read, self.pending = time.time(), False, False, None
        elif command == "create":
            self.stream = msg.kwargs.get("name", "primary")
        elif command == "save":
            self.points += self.stream == "primary"

    def _counting(self, obj) -> bool:
        """Whether triggering ``obj`` counts a point's detector while the monitor is not counted yet."""
        return self.monitor is not None and self.in_run and not self.triggered and _counts(obj)

    def _add_monitor(self):
        """The monitor triggered with the point's detectors, once they are all triggered (at the point's
        ``wait``: a plan that counts the monitor itself has triggered it by then), in their group."""
        if self.pending is None or self.triggered:
            return
        group, self.pending = self.pending, None
        self.own_group = None if group else f"braggscope-monitor-{self.points}"
        yield Msg("trigger", self.monitor, group=group or self.own_group)
        self.triggered = True

    def _sync_count_time(self, detector):
        """Once per run: the monitor counts as long as the detector exposes."""
        if self.synced:
            return
        self.synced = True
        signal = getattr(getattr(detector, "cam", detector), "acquire_time", None)
        if signal is None or not hasattr(signal, "get"):
            return
        exposure = float(signal.get())
        if abs(float(self.monitor.acquire_time.get()) - exposure) > 1e-9:
            yield Msg("set", self.monitor.acquire_time, exposure, group="braggscope-monitor-time")
            yield Msg("wait", None, group="braggscope-monitor-time")

    def _check_point(self):
        """The point about to be saved was taken with beam, or a suspension takes it again."""
        if self.watch is None:
            return
        for attempt in range(2):
            since = max(self.point_start, self.log.resumed_at if self.log is not None else 0.0)
            if not self.watch.down_between(since):
                return
            if attempt == 0:  # the suspender's request may be on its way: let it rewind the point
                yield Msg("sleep", None, SUSPENSION_GRACE_S)
        raise BeamLostError(f"point {self.points}: the beam was down during its exposure and no suspension "
                            f"took it again (are the suspenders installed? [beam] suspend); not recorded")


def _counts(obj) -> bool:
    """Whether triggering ``obj`` counts something (a detector), not a motor's or the machine's no-op."""
    trigger = getattr(type(obj), "trigger", None)
    return trigger is not None and trigger is not _NO_TRIGGER and not hasattr(obj, "kickoff")
