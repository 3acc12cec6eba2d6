"""Dry run: what a plan would do, without a RunEngine and without moving anything."""

from __future__ import annotations

from dataclasses import dataclass, field

from braggscope.core.errors import ArgumentError

from .checks import motor_limits

__all__ = ["dry_run", "DryRunSummary"]

#: Per-point overhead (s) of a step scan on top of exposure and motion when none
#: is given: bookkeeping, put-with-completion round trips and the areaDetector
#: read-out/file write. Measured over Channel Access to the simulators: 21-27 ms
#: per point in total with 10 ms exposures on 2 shared cores
#: (benchmarks/bench_scan_overhead.py; docs/benchmarks.md, "Step scans").
DEFAULT_OVERHEAD_S = 0.015


@dataclass
class DryRunSummary:
    """Result of :func:`dry_run`.

    Attributes
    ----------
    points : int
        Number of detector triggers in the primary stream (events).
    runs : int
        Number of runs the plan opens.
    moves : dict
        Motor name -> (min, max) of all set-points.
    violations : list of str
        Set-points outside a motor's limits (empty when all is well).
    duration_s : float
        Estimated duration: moves at the motors' velocities + per-point
        acquire time + ``overhead_s`` per stepped point; a flown line costs
        its points' dwell + :data:`FLY_LINE_OVERHEAD_S`.
    """

    points: int = 0
    runs: int = 0
    moves: dict = field(default_factory=dict)
    violations: list = field(default_factory=list)
    duration_s: float = 0.0
    plan_names: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        lines = [f"{self.runs} run(s) {self.plan_names}, {self.points} points, "
                 f"estimated {self.duration_s:.1f} s ({self.duration_s / 60:.1f} min)"]
        for name, (lo, hi) in sorted(self.moves.items()):
            lines.append(f"  {name}: {lo:.6g} .. {hi:.6g}")
        lines += [f"  LIMIT: {v}" for v in self.violations]
        return "\n".join(lines)


#: Estimated overhead of one fly-scan line (s): ramps, arming, the final flush and counts, the slow axis
#: move (measured 28-33 ms on a quiet machine, more under load; docs/fly.md).
FLY_LINE_OVERHEAD_S = 0.05


def dry_run(plan, *, acquire_time_s: float | None = None, overhead_s: float = DEFAULT_OVERHEAD_S,
            start_positions: dict | None = None, raise_on_violation: bool = False) -> DryRunSummary:
    """Walk a plan's messages without a RunEngine: count, check limits, estimate time.

    Nothing is staged, triggered or moved: every message is answered with
    ``None``, as ``bluesky.simulators.summarize_plan`` does. Argument errors of
    braggscope plans surface here, as they would before the first motion.

    Parameters
    ----------
    plan : generator
        A plan, e.g. ``sxdm_map(...)``.
    acquire_time_s : float, optional
        Exposure per point; defaults to the detectors' ``acquire_time`` /
        ``cam.acquire_time`` setting when it can be read, else 0.
    overhead_s : float
        Per-point overhead (s) on top of exposure and motion.
    start_positions : dict, optional
        Motor name -> current position; read from the motors when omitted.
    raise_on_violation : bool
        Raise ``ArgumentError`` listing the limit violations.

    Returns
    -------
    DryRunSummary
    """
    if not overhead_s >= 0:
        raise ArgumentError(f"overhead_s must be >= 0 s, got {overhead_s!r}")
    summary = DryRunSummary()
    positions = dict(start_positions or {})
    pending: dict = {}  # motor name -> move time since the last wait
    acquire = acquire_time_s
    reported: set = set()
    stepped = 0  # points taken one trigger each (a fly line's points are costed with the line)
    for msg in _messages(plan):
        cmd = msg.command
        if cmd == "open_run":
            summary.runs += 1
            summary.plan_names.append(msg.kwargs.get("plan_name"))
        elif cmd == "set":
            obj, target = msg.obj, float(msg.args[0])
            name = obj.name
            lo, hi = summary.moves.get(name, (target, target))
            summary.moves[name] = (min(lo, target), max(hi, target))
            lim = motor_limits(obj)
            if lim is not None and not (lim[0] <= target <= lim[1]) and name not in reported:
                summary.violations.append(f"{name} -> {target:.6g} outside limits [{lim[0]:.6g}, {lim[1]:.6g}]")
                reported.add(name)
            start = positions.get(name)
            if start is None:
                start = _position(obj)
            velocity = _velocity(obj)
            if start is not None and velocity:
                pending[name] = abs(target - start) / velocity
            positions[name] = target
        elif cmd == "wait":
            summary.duration_s += max(pending.values(), default=0.0)
            pending.clear()
        elif cmd == "prepare" and isinstance(msg.args[0] if msg.args else None, dict) \
                and {"num", "dwell_s"} <= set(msg.args[0]):  # a fly-scan line (plans.fly.sxdm_fly)
            line = msg.args[0]
            summary.points += int(line["num"])
            summary.duration_s += int(line["num"]) * float(line["dwell_s"]) + FLY_LINE_OVERHEAD_S
        elif cmd == "trigger" and acquire is None:
            acquire = _acquire_time(msg.obj)
        elif cmd == "create" and msg.kwargs.get("name", "primary") == "primary":
            summary.points += 1
            stepped += 1
    summary.duration_s += max(pending.values(), default=0.0)
    summary.duration_s += stepped * ((acquire or 0.0) + overhead_s)
    if raise_on_violation and summary.violations:
        raise ArgumentError("plan leaves the motor limits: " + "; ".join(summary.violations))
    return summary


def _messages(plan):
    reply = None
    while True:
        try:
            msg = plan.send(reply)
        except StopIteration:
            return
        yield msg
        reply = None


def _position(obj):
    try:
        return float(obj.position)
    except Exception:
        return None


def _velocity(obj):
    v = getattr(obj, "velocity", None)
    if v is None:
        return None
    try:
        v = float(v.get()) if hasattr(v, "get") else float(v)
    except Exception:
        return None
    return v if v > 0 else None


def _acquire_time(det):
    for path in ("cam.acquire_time", "acquire_time"):
        obj = det
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return float(obj.get())
        except Exception:
            continue
    return None
