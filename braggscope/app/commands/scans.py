"""Counting and scan commands of the operator's session, SPEC/BLISS style.

``ct``, ``ascan``, ``dscan``, ``a2scan``, ``d2scan``, ``mesh`` run bluesky's
``scan``/``rel_scan``/``grid_scan``, one point at a time by ``plans.stubs.step_point``, on the
session's guarded RunEngine (``plans.guard``: a lost IOC or a stalled detector ends the run,
named), ``intervals`` + 1 points, ``count_time`` seconds per point, as in SPEC;
after a 1D scan ``cen``, ``peak`` and ``com`` move to the peak statistics of
the scan's counter (bluesky's :class:`~bluesky.callbacks.fitting.PeakStats`),
after a confirmation. Mixed into :class:`braggscope.app.commands.Commands`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import bluesky.plan_stubs as bps
import bluesky.plans as bp
from bluesky.callbacks.fitting import PeakStats

from braggscope.core.errors import ArgumentError, UserError
from braggscope.plans.checks import check_number, check_within_limits
from braggscope.plans.stubs import step_point

__all__ = ["LastScan", "PeakTracker", "ScanCommands"]


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

    def __init__(self):
        self.last: LastScan | None = None
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
        self._run = None


def hinted_fields(descriptor, detectors) -> list[str]:
    """The hinted fields of ``detectors`` (names) in an event descriptor, ROI counters first."""
    hints = descriptor.get("hints", {})
    fields = [f for det in detectors for f in hints.get(det, {}).get("fields", [])]
    return sorted(fields, key=lambda f: "roistat" not in f)  # stable: the ROI counter leads


class ScanCommands:
    """``ct``, ``ascan`` ... ``mesh``, ``cen``/``peak``/``com``, ``where`` (needs the Commands attributes)."""

    # -- counting -----------------------------------------------------------------------
    def ct(self, count_time=None, *detectors) -> dict[str, float]:
        """Count once with the detectors (default: all), print and return the counters.

        Nothing is recorded in the catalog (no run is opened): the detectors are
        staged, triggered, read and unstaged.

        Parameters
        ----------
        count_time : float, optional
            Seconds per count; it stays the detectors' count time (as SPEC's ``ct``).
        *detectors : devices, optional
        """
        dets = self._detectors(detectors or None)
        t = None if count_time is None else check_number("ct count_time", count_time, positive=True)

        def plan():
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

        readings = self._run(plan()).plan_result
        hinted = [f for det in dets for f in det.hints.get("fields", [])]
        values = {f: float(readings[f]["value"]) for f in hinted if f in readings}
        width = max((len(f) for f in values), default=10) + 2
        for f, v in values.items():
            self.out(f"{f:<{width}}{v:>14.6g}")
        return values

    # -- scans ------------------------------------------------------------------------
    def ascan(self, motor, start, stop, intervals, count_time=None, *, detectors=None, md=None):
        """Absolute scan: ``intervals`` + 1 points from ``start`` to ``stop``, ``count_time`` s each.

        Example: ``ascan(eta, 10, 11, 20, 0.1)``. Returns the RunEngine result
        (``.run_start_uids``); the peak statistics print at the end, ``cen()`` moves there.
        """
        motor, (start, stop) = self._motor(motor), self._range("ascan", motor, start, stop)
        num = self._intervals("ascan", intervals)
        check_within_limits(motor, "ascan", min(start, stop), max(start, stop))
        dets = self._detectors(detectors)
        plan = bp.scan(dets, motor, start, stop, num, per_step=step_point, md=md)
        return self._scan(plan, dets, count_time, "ascan")

    def dscan(self, motor, start, stop, intervals, count_time=None, *, detectors=None, md=None):
        """Scan relative to the current position (``dscan(eta, -0.5, 0.5, 20, 0.1)``); the motor returns after."""
        motor, (start, stop) = self._motor(motor), self._range("dscan", motor, start, stop)
        num = self._intervals("dscan", intervals)
        here = float(motor.position)
        check_within_limits(motor, "dscan", here + min(start, stop), here + max(start, stop))
        dets = self._detectors(detectors)
        plan = bp.rel_scan(dets, motor, start, stop, num, per_step=step_point, md=md)
        return self._scan(plan, dets, count_time, "dscan")

    def a2scan(self, motor1, start1, stop1, motor2, start2, stop2, intervals, count_time=None, *,
               detectors=None, md=None):
        """Two motors together, absolute: ``a2scan(eta, 10, 11, delta, 20, 22, 20, 0.1)``."""
        args = self._two_motors("a2scan", motor1, start1, stop1, motor2, start2, stop2, relative=False)
        num, dets = self._intervals("a2scan", intervals), self._detectors(detectors)
        return self._scan(bp.scan(dets, *args, num, per_step=step_point, md=md), dets, count_time, "a2scan")

    def d2scan(self, motor1, start1, stop1, motor2, start2, stop2, intervals, count_time=None, *,
               detectors=None, md=None):
        """Two motors together, relative to their positions; they return after."""
        args = self._two_motors("d2scan", motor1, start1, stop1, motor2, start2, stop2, relative=True)
        num, dets = self._intervals("d2scan", intervals), self._detectors(detectors)
        return self._scan(bp.rel_scan(dets, *args, num, per_step=step_point, md=md), dets, count_time, "d2scan")

    def mesh(self, motor1, start1, stop1, intervals1, motor2, start2, stop2, intervals2, count_time=None, *,
             snake=False, detectors=None, md=None):
        """A grid, ``motor1`` the fast (inner) axis as in SPEC/BLISS: ``mesh(pix, 0, 2, 20, piy, 0, 2, 20, 0.05)``.

        ``snake=True``: the fast axis goes back and forth. Runs bluesky's
        ``grid_scan`` (``motor2`` outer).
        """
        a = self._two_motors("mesh", motor1, start1, stop1, motor2, start2, stop2, relative=False)
        n1, n2 = self._intervals("mesh intervals1", intervals1), self._intervals("mesh intervals2", intervals2)
        dets = self._detectors(detectors)
        plan = bp.grid_scan(dets, a[3], a[4], a[5], n2, a[0], a[1], a[2], n1, snake_axes=bool(snake),
                            per_step=step_point, md=md)
        return self._scan(plan, dets, count_time, "mesh")

    # -- after a scan -----------------------------------------------------------------
    def cen(self, counter=None, *, yes=False):
        """Move the last 1D scan's motor to the centre of the peak (mid-point of the half-maximum crossings).

        Parameters
        ----------
        counter : str, optional
            The field fitted (default: the ROI counter, else the first hinted field).
        yes : bool
            Move without asking.

        Returns
        -------
        float
            The position (moved to or not).
        """
        return self._goto("cen", counter, yes)

    def peak(self, counter=None, *, yes=False):
        """Move the last 1D scan's motor to the point of maximum counts (see :meth:`cen`)."""
        return self._goto("max", counter, yes)

    def com(self, counter=None, *, yes=False):
        """Move the last 1D scan's motor to the centre of mass of the counts (see :meth:`cen`)."""
        return self._goto("com", counter, yes)

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
    def _scan(self, plan, dets, count_time, command):
        t = None if count_time is None else check_number(f"{command} count_time", count_time, positive=True)

        def full():
            yield from self._count_time_plan(dets, t)
            return (yield from plan)

        result = self._run(full())
        last = self.peaks.last
        if last is not None and result.run_start_uids and last.uid == result.run_start_uids[0]:
            stats = last.stats[self._counter(last, None)]
            if getattr(stats, "x_data", None) is not None and len(stats.x_data):
                self.out(f"{last.motor} scan {last.scan_id} ({stats.y}): "
                         + ", ".join(f"{k} {v:.6g}" for k, v in _summary(stats).items())
                         + "  -> cen() / peak() / com()")
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
        last = self.peaks.last
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

    def _goto(self, what, counter, yes):
        last, stats = self._last_stats(counter)
        value = getattr(stats, what)
        if what == "max" and value is not None:
            value = value[0]
        if value is None or not _finite(value):
            raise UserError(f"{what}: no {what} in scan {last.scan_id} of {stats.y} "
                            "(no peak crossing half maximum?); peak() moves to the maximum")
        value = float(value)
        motor = self._motor(last.motor)
        check_within_limits(motor, what, value, value)
        label = {"max": "peak"}.get(what, what)
        if not yes:
            answer = self.ask(f"move {motor.name} from {float(motor.position):.6g} to {label} {value:.6g} "
                              f"{self.unit(motor)} ({stats.y})? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                self.out(f"{motor.name} not moved")
                return value
        self.mv(motor, value)
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
