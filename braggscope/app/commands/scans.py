"""Counting and scan commands of the operator's session, BLISS style beside bluesky's plans.

``ct``, ``ascan``, ``dscan``, ``a2scan``, ``d2scan``, ``amesh``/``mesh``, ``dmesh`` and ``lineup`` run
bluesky's ``scan``/``rel_scan``/``grid_scan``/``rel_grid_scan``, one point at a time by
``plans.stubs.step_point``, on the session's guarded RunEngine (``plans.guard``: a lost IOC or a stalled
detector ends the run, named): ``intervals`` + 1 points, ``count_time`` seconds per point, then the
counters, as in BLISS (``ascan(eta, 8, 10, 40, 0.1, xrf)``). After a 1D scan ``cen()``, ``peak()``,
``com()`` and ``fwhm()`` return the peak statistics of the scan's counter (bluesky's
:class:`~bluesky.callbacks.fitting.PeakStats`), ``goto_cen()``, ``goto_peak()`` and ``goto_com()``
move there, and ``peaks`` holds them all as BestEffortCallback's ``peaks`` does. Mixed into
:class:`braggscope.app.commands.Commands`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import bluesky.plan_stubs as bps
import bluesky.plans as bp
from bluesky.callbacks.best_effort import PeakResults
from bluesky.callbacks.fitting import PeakStats

from braggscope.core.errors import ArgumentError, UserError
from braggscope.plans.checks import check_number, check_within_limits
from braggscope.plans.stubs import step_point

__all__ = ["LastScan", "PeakResults", "PeakTracker", "ScanCommands"]


@dataclass
class LastScan:
    """The peak statistics of the last 1D scan: motor, x field, and one PeakStats per hinted counter field."""

    uid: str
    scan_id: int | None
    motor: str
    x: str
    stats: dict = field(default_factory=dict)


class PeakTracker:
    """RunEngine callback: bluesky ``PeakStats`` of every hinted detector field of each 1D scan.

    A 1D scan is a run whose start document names motors and has one
    dimension (``scan``, ``rel_scan``, ``list_scan`` ...); x is the first
    motor. :attr:`last` holds the latest finished one (:class:`LastScan`).
    """

    def __init__(self, results: PeakResults | None = None):
        self.last: LastScan | None = None
        self.results = results  # BestEffortCallback-like ``peaks``, refreshed at each 1D scan's end
        self._run: LastScan | None = None
        self._start = None
        self._primary = None

    def __call__(self, name, doc):
        getattr(self, name, lambda doc: None)(doc)

    @property
    def current(self) -> LastScan | None:
        """The 1D scan in progress (None between runs or for other runs)."""
        return self._run

    def start(self, doc):
        self._run, self._primary = None, None
        motors, shape = doc.get("motors") or [], doc.get("shape") or [0]
        dimensions = (doc.get("hints") or {}).get("dimensions") or [()]
        if motors and len(shape) == 1 and len(dimensions) == 1:
            self._start = doc
            self._run = LastScan(doc["uid"], doc.get("scan_id"), motors[0], motors[0])

    def descriptor(self, doc):
        if self._run is None or doc.get("name") != "primary" or self._primary is not None:
            return
        self._primary = doc["uid"]
        fields = hinted_fields(doc, self._start.get("detectors") or [])
        if self._run.x not in doc["data_keys"]:
            self._run = None
            return
        for y in fields:
            stats = PeakStats(self._run.x, y)
            stats("start", self._start)
            stats("descriptor", doc)
            self._run.stats[y] = stats

    def event(self, doc):
        if self._run is not None and doc["descriptor"] == self._primary:
            for stats in self._run.stats.values():
                stats("event", doc)

    def stop(self, doc):
        if self._run is not None and self._run.stats:
            for stats in self._run.stats.values():
                stats("stop", doc)
            self.last = self._run
            if self.results is not None:
                self.results.clear()
                self.results.update(self._run.stats)
        self._run = None


def hinted_fields(descriptor, detectors) -> list[str]:
    """The hinted fields of ``detectors`` (names) in an event descriptor, ROI counters first."""
    hints = descriptor.get("hints", {})
    fields = [f for det in detectors for f in hints.get(det, {}).get("fields", [])]
    return sorted(fields, key=lambda f: "roistat" not in f)  # stable: the ROI counter leads


class ScanCommands:
    """``ct``, ``ascan`` ... ``dmesh``, ``lineup``, ``cen``/``peak``/``com``/``fwhm``, ``goto_*``, ``where``.

    Needs the :class:`~braggscope.app.commands.Commands` attributes (``devices``, ``_run``, ``out``,
    ``peak_tracker``, ``mv``).
    """

    # -- counting -----------------------------------------------------------------------
    def ct(self, count_time=None, *counters) -> dict[str, float]:
        """Count once and print the counters: ``ct(0.1)``, ``ct(0.1, xrf)``, ``ct(xrf)``.

        Nothing is recorded in the catalog (no run is opened): the counters are staged,
        triggered, read and unstaged.

        Parameters
        ----------
        count_time : float, optional
            Seconds per count; it stays the counters' count time (as in BLISS and SPEC). A counter
            in its place (``ct(xrf)``) counts that counter for its current count time.
        *counters : devices or their names, optional
            Default: every detector of the session.
        """
        if count_time is not None and not isinstance(count_time, (int, float)):
            counters, count_time = (count_time, *counters), None
        dets = self._counters("ct", counters)
        t = None if count_time is None else check_number("ct count_time", count_time, positive=True)
        readings = self._run(self._count_once(dets, t)).plan_result
        hinted = [f for det in dets for f in det.hints.get("fields", [])]
        values = {f: float(readings[f]["value"]) for f in hinted if f in readings}
        width = max((len(f) for f in values), default=10) + 2
        for f, v in values.items():
            self.out(f"{f:<{width}}{v:>14.6g}")
        return values

    def _count_once(self, dets, t):
        yield from self._count_time_plan(dets, t)
        for det in dets:
            yield from bps.stage(det)
        try:
            for det in dets:
                yield from bps.trigger(det, group="ct")
            yield from bps.wait(group="ct")
            readings = {}
            for det in dets:
                readings.update((yield from bps.read(det)) or {})
        finally:
            _drop_asset_docs(dets)  # this count's resource/datum belong to no run: not into the next one
            for det in reversed(dets):
                yield from bps.unstage(det)
        return readings

    # -- scans ------------------------------------------------------------------------
    def ascan(self, motor, start, stop, intervals, count_time=None, *counters, detectors=None, md=None):
        """Absolute scan: ``intervals`` + 1 points from ``start`` to ``stop``, ``count_time`` s each.

        Example: ``ascan(eta, 8.4, 9.7, 26, 0.1, xrf)`` (counters after the count time, as in BLISS;
        ``detectors=[xrf]`` is the bluesky spelling). Returns the RunEngine result
        (``.run_start_uids``); the peak statistics print at the end, ``goto_cen()`` moves there.
        """
        motor, (start, stop) = self._motor(motor), self._range("ascan", motor, start, stop)
        num = self._intervals("ascan", intervals)
        check_within_limits(motor, "ascan", min(start, stop), max(start, stop))
        dets = self._counters("ascan", counters, detectors)
        plan = bp.scan(dets, motor, start, stop, num, per_step=step_point, md=md)
        return self._scan(plan, dets, count_time, "ascan")

    def dscan(self, motor, start, stop, intervals, count_time=None, *counters, detectors=None, md=None):
        """Scan relative to the current position (``dscan(eta, -0.5, 0.5, 20, 0.1)``); the motor returns after."""
        motor, (start, stop) = self._motor(motor), self._range("dscan", motor, start, stop)
        num = self._intervals("dscan", intervals)
        here = float(motor.position)
        check_within_limits(motor, "dscan", here + min(start, stop), here + max(start, stop))
        dets = self._counters("dscan", counters, detectors)
        plan = bp.rel_scan(dets, motor, start, stop, num, per_step=step_point, md=md)
        return self._scan(plan, dets, count_time, "dscan")

    def a2scan(self, motor1, start1, stop1, motor2, start2, stop2, intervals, count_time=None, *counters,
               detectors=None, md=None):
        """Two motors together, absolute: ``a2scan(eta, 10, 11, delta, 20, 22, 20, 0.1)``."""
        args = self._two_motors("a2scan", motor1, start1, stop1, motor2, start2, stop2, relative=False)
        num, dets = self._intervals("a2scan", intervals), self._counters("a2scan", counters, detectors)
        return self._scan(bp.scan(dets, *args, num, per_step=step_point, md=md), dets, count_time, "a2scan")

    def d2scan(self, motor1, start1, stop1, motor2, start2, stop2, intervals, count_time=None, *counters,
               detectors=None, md=None):
        """Two motors together, relative to their positions; they return after."""
        args = self._two_motors("d2scan", motor1, start1, stop1, motor2, start2, stop2, relative=True)
        num, dets = self._intervals("d2scan", intervals), self._counters("d2scan", counters, detectors)
        return self._scan(bp.rel_scan(dets, *args, num, per_step=step_point, md=md), dets, count_time, "d2scan")

    def amesh(self, motor1, start1, stop1, intervals1, motor2, start2, stop2, intervals2, count_time=None,
              *counters, backnforth=False, snake=None, detectors=None, md=None):
        """A grid, ``motor1`` the fast (inner) axis as in BLISS: ``amesh(pix, 0, 2, 20, piy, 0, 2, 20, 0.05)``.

        ``backnforth=True`` (or bluesky's ``snake=True``): the fast axis goes back and forth.
        Runs bluesky's ``grid_scan`` (``motor2`` outer). ``mesh`` is the same command.
        """
        return self._mesh("amesh", False, motor1, start1, stop1, intervals1, motor2, start2, stop2, intervals2,
                          count_time, counters, backnforth if snake is None else snake, detectors, md)

    mesh = amesh

    def dmesh(self, motor1, start1, stop1, intervals1, motor2, start2, stop2, intervals2, count_time=None,
              *counters, backnforth=False, snake=None, detectors=None, md=None):
        """:meth:`amesh` relative to the motors' positions (bluesky's ``rel_grid_scan``); they return after."""
        return self._mesh("dmesh", True, motor1, start1, stop1, intervals1, motor2, start2, stop2, intervals2,
                          count_time, counters, backnforth if snake is None else snake, detectors, md)

    def lineup(self, motor, start, stop, intervals, count_time=None, *counters, detectors=None, md=None):
        """:meth:`dscan`, then :meth:`goto_peak` on the first counter (BLISS ``lineup``); returns the peak position."""
        self.dscan(motor, start, stop, intervals, count_time, *counters, detectors=detectors, md=md)
        first = self._counters("lineup", counters, detectors)[0]
        fields = [f for f in first.hints.get("fields", []) if f in self.peak_tracker.last.stats]
        return self.goto_peak(fields[0] if fields else None)

    # -- after a scan -----------------------------------------------------------------
    def cen(self, counter=None) -> float:
        """The centre of the last 1D scan's peak (mid-point of the half-maximum crossings); nothing moves.

        Parameters
        ----------
        counter : str, optional
            The field (default: the ROI counter, else the first hinted field).
        """
        return self._statistic("cen", counter)

    def peak(self, counter=None) -> float:
        """The motor position of the last 1D scan's maximum counts (see :meth:`cen`)."""
        return self._statistic("max", counter)

    def com(self, counter=None) -> float:
        """The centre of mass of the last 1D scan's counts (see :meth:`cen`)."""
        return self._statistic("com", counter)

    def fwhm(self, counter=None) -> float:
        """The full width at half maximum of the last 1D scan's peak, in the motor's units (see :meth:`cen`)."""
        return self._statistic("fwhm", counter)

    def goto_cen(self, counter=None) -> float:
        """Move the last 1D scan's motor to :meth:`cen` (checked against its soft limits first)."""
        return self._goto("cen", counter)

    def goto_peak(self, counter=None) -> float:
        """Move the last 1D scan's motor to :meth:`peak`."""
        return self._goto("max", counter)

    def goto_com(self, counter=None) -> float:
        """Move the last 1D scan's motor to :meth:`com`."""
        return self._goto("com", counter)

    def where(self, counter=None) -> dict:
        """The last 1D scan's motor now and the scan's peak statistics (``cen``, ``com``, ``peak``, ``fwhm``)."""
        last, stats = self._last_stats(counter)
        motor = self._motor(last.motor)
        out = {"motor": motor.name, "position": float(motor.position), "counter": stats.y}
        out.update(_summary(stats))
        self.out(f"{motor.name} = {out['position']:.6g} {self.unit(motor)}; scan {last.scan_id} {stats.y}: "
                 + ", ".join(f"{k} {v:.6g}" for k, v in _summary(stats).items()))
        return out

    # -- helpers ----------------------------------------------------------------------
    def _mesh(self, command, relative, m1, s1, e1, n1, m2, s2, e2, n2, count_time, counters, snake, detectors, md):
        a = self._two_motors(command, m1, s1, e1, m2, s2, e2, relative=relative)
        n1, n2 = self._intervals(f"{command} intervals1", n1), self._intervals(f"{command} intervals2", n2)
        dets = self._counters(command, counters, detectors)
        grid = bp.rel_grid_scan if relative else bp.grid_scan
        plan = grid(dets, a[3], a[4], a[5], n2, a[0], a[1], a[2], n1, snake_axes=bool(snake), per_step=step_point,
                    md=md)
        return self._scan(plan, dets, count_time, command)

    def _scan(self, plan, dets, count_time, command):
        t = None if count_time is None else check_number(f"{command} count_time", count_time, positive=True)

        def full():
            yield from self._count_time_plan(dets, t)
            return (yield from plan)

        result = self._run(full())
        last = self.peak_tracker.last
        if last is not None and result.run_start_uids and last.uid == result.run_start_uids[0]:
            stats = last.stats[self._counter(last, None)]
            if getattr(stats, "x_data", None) is not None and len(stats.x_data):
                self.out(f"{last.motor} scan {last.scan_id} ({stats.y}): "
                         + ", ".join(f"{k} {v:.6g}" for k, v in _summary(stats).items())
                         + "  -> goto_cen() / goto_peak() / goto_com()")
        return result

    def _count_time_plan(self, dets, t):
        """Put ``t`` in each detector's count time (``cam.acquire_time`` and period, or ``acquire_time``)."""
        if t is None:
            return
        for det in dets:
            cam = getattr(det, "cam", None)
            if cam is not None and hasattr(cam, "acquire_time"):
                yield from bps.mv(cam.acquire_time, t)
                if hasattr(cam, "acquire_period"):
                    yield from bps.mv(cam.acquire_period, t)
            elif hasattr(det, "acquire_time"):
                yield from bps.mv(det.acquire_time, t)

    def _counters(self, command, counters=(), detectors=None) -> list:
        """The counters of a command: given after the count time, or ``detectors=[...]``, or the session's."""
        if counters and detectors is not None:
            raise ArgumentError(f"{command}: give the counters after the count time or as detectors=[...], "
                                "not both")
        given = list(counters) if counters else detectors
        return self._detectors(None if given is None else [self._counter_device(command, c) for c in given])

    def _counter_device(self, command, counter):
        """A counting device from the device or its name (one line naming it otherwise)."""
        device = self.devices.get(counter) if isinstance(counter, str) else counter
        counts = hasattr(device, "trigger") and hasattr(device, "read")
        if device is None or not counts or hasattr(device, "position"):  # a motor is not a counter
            names = ", ".join(d.name for d in self.default_detectors())
            raise ArgumentError(f"{command}: {getattr(counter, 'name', counter)!r} is not a counter; counters: "
                                f"{names}")
        return device

    def _detectors(self, detectors):
        if detectors is None:
            detectors = self.default_detectors()
        dets = list(detectors)
        if not dets:
            raise ArgumentError("no detectors: give detectors=[...] or label a device 'detectors'")
        return dets

    def _range(self, command, motor, start, stop):
        name = getattr(motor, "name", motor)
        return (check_number(f"{command} {name} start", start), check_number(f"{command} {name} stop", stop))

    @staticmethod
    def _intervals(command, intervals):
        try:
            n = int(intervals)
        except (TypeError, ValueError, OverflowError):
            n = -1
        if n != intervals or n < 1:
            raise ArgumentError(f"{command}: intervals must be an integer >= 1 (points = intervals + 1), "
                                f"got {intervals!r}")
        return n + 1

    def _two_motors(self, command, m1, s1, e1, m2, s2, e2, *, relative):
        out = []
        for motor, start, stop in ((m1, s1, e1), (m2, s2, e2)):
            motor = self._motor(motor)
            start, stop = self._range(command, motor, start, stop)
            here = float(motor.position) if relative else 0.0
            check_within_limits(motor, command, here + min(start, stop), here + max(start, stop))
            out += [motor, start, stop]
        if out[0] is out[3]:
            raise ArgumentError(f"{command}: the two motors are the same ({out[0].name})")
        return out

    def _last_stats(self, counter):
        last = self.peak_tracker.last
        if last is None:
            raise UserError("no 1D scan yet: run ascan/dscan first")
        return last, last.stats[self._counter(last, counter)]

    def _counter(self, last, counter):
        counter = counter or self.counter
        if counter is None:
            return next(iter(last.stats))
        if counter not in last.stats:
            raise ArgumentError(f"counter {counter!r} was not a hinted field of scan {last.scan_id}; "
                                f"available: {', '.join(last.stats)}")
        return counter

    def _statistic(self, what, counter) -> float:
        """One peak statistic of the last 1D scan (``cen``, ``max``'s position, ``com``, ``fwhm``), printed."""
        last, stats = self._last_stats(counter)
        value = getattr(stats, what)
        if what == "max" and value is not None:
            value = value[0]
        label = {"max": "peak"}.get(what, what)
        if value is None or not _finite(value):
            raise UserError(f"{label}: no {label} in scan {last.scan_id} of {stats.y} "
                            "(no peak crossing half maximum?); peak() is the maximum")
        value = float(value)
        motor = self._motor(last.motor)
        self.out(f"{label} of scan {last.scan_id} ({stats.y}): {motor.name} {value:.6g} {self.unit(motor)}")
        return value

    def _goto(self, what, counter) -> float:
        value = self._statistic(what, counter)
        motor = self._motor(self.peak_tracker.last.motor)
        check_within_limits(motor, "goto_" + ("peak" if what == "max" else what), value, value)
        before = float(motor.position)
        self.mv(motor, value)
        self.out(f"{motor.name} moved from {before:.6g} to {value:.6g} {self.unit(motor)}")
        return value


def _drop_asset_docs(dets) -> None:
    """Consume the Resource/Datum documents a count outside a run left in the detectors' caches.

    A file-writing detector queues them at stage/trigger and the RunEngine
    collects them at the next read inside a run: left there, ``ct``'s frame
    would appear in the next scan's documents.
    """
    for det in dets:
        collect = getattr(det, "collect_asset_docs", None)
        if collect is not None:
            for _ in collect():
                pass


def _finite(value) -> bool:
    try:
        return float(value) == float(value) and abs(float(value)) != float("inf")
    except (TypeError, ValueError):
        return False


def _summary(stats) -> dict[str, float]:
    out = {}
    if stats.cen is not None:
        out["cen"] = float(stats.cen)
    if stats.com is not None:
        out["com"] = float(stats.com)
    if stats.max is not None:
        out["peak"] = float(stats.max[0])
    if stats.fwhm is not None:
        out["fwhm"] = float(stats.fwhm)
    return out
