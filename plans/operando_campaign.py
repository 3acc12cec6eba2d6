"""What an operando campaign is: its checkpoints, its measurement, its tracking; and where it stands.

:class:`Campaign` is the whole description, checked once and recorded in the start document of every
run of the campaign (so that :func:`campaign_from_catalog` can take it up again). :func:`due` says
whether a checkpoint's condition is met by the cell's state; :class:`Tracker` predicts where the peak and
the particle will be from where they were; :func:`completed_checkpoints` reads what the catalog holds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from braggscope.core.electrochem import Protocol
from braggscope.core.errors import ArgumentError
from braggscope.core.numbers import finite_float

from .checks import eccentricity_model

__all__ = ["Campaign", "Tracker", "campaign_from_catalog", "completed_checkpoints", "due", "MEASURE_KINDS"]

#: What a checkpoint measures: a fly SXDM map, a step SXDM map, an oversampled BCDI rocking scan.
MEASURE_KINDS = ("fly", "step", "bcdi")
#: How the particle is re-centred: fluorescence line scans, diffraction (ROI) line scans, not at all,
#: or fluorescence when the campaign has a fluorescence detector and diffraction otherwise.
RECENTRE_KINDS = ("auto", "xrf", "diffraction", "none")


@dataclass(frozen=True)
class Campaign:
    """An operando campaign: when to measure, what, and how to find the particle again.

    Checkpoints (one of): ``every_s`` (seconds of the protocol's clock, the first at the start),
    ``voltages`` (V, each met when the cell's voltage crosses it, in order) or ``charges`` (mAh passed,
    likewise); ``count`` caps their number (needed with ``every_s`` unless the protocol ends).

    Measurement: ``measure`` (:data:`MEASURE_KINDS`); a map of ``points`` (nx, ny) over
    ``half_width_um`` (x, y) around the particle at the rocking angles ``etas`` (degrees, relative to
    the peak found), ``dwell_s`` per point (a fly map's point period, a step map's exposure); for
    ``bcdi`` the keywords of :func:`braggscope.plans.bcdi_rocking` in ``bcdi`` (``size_m``,
    ``d_spacing``, ``oversampling`` ...) and the exposure ``dwell_s``.

    Tracking at every checkpoint: ``recentre`` (:data:`RECENTRE_KINDS`) line scans of ``line_points``
    over +-``line_half_um``; the peak by a radial (eta, delta = 2 eta) scan of ``radial_points`` over
    +-``radial_half_deg`` and a rocking scan of ``rocking_points`` over +-``rocking_half_deg``, each
    point exposed ``track_exposure_s``, the ROI counter's window ``roi`` (rows, cols) set first.
    ``start`` (``eta``, ``delta``, ``x``, ``y``): where the aligned particle is at the start (default: where
    the motors are). ``protocol``: run it from the campaign's start (default: follow what the cell runs).
    ``pause_cell``: hold the cell at open circuit while a checkpoint measures.
    """

    campaign_id: str
    every_s: float | None = None
    voltages: tuple = ()
    charges: tuple = ()
    count: int | None = None
    measure: str = "fly"
    points: tuple = (16, 16)
    half_width_um: tuple = (1.6, 1.6)
    etas: tuple = (-0.1, 0.0, 0.1)
    dwell_s: float = 0.005
    bcdi: dict = field(default_factory=dict)
    recentre: str = "auto"
    line_half_um: float = 2.0
    line_points: int = 15
    radial_half_deg: float = 0.2
    radial_points: int = 17
    rocking_half_deg: float = 0.2
    rocking_points: int = 15
    track_exposure_s: float = 0.01
    roi: tuple | None = None
    start: dict | None = None
    protocol: dict | None = None
    pause_cell: bool = False
    eccentricity: dict | None = None
    sample: str | None = None
    max_recoveries: int = 3
    reconnect_timeout_s: float = 600.0
    poll_s: float = 1.0

    def __post_init__(self):
        _check_identity(self)
        _check_schedule(self)
        _check_measurement(self)
        _check_tracking(self)

    @classmethod
    def coerce(cls, value) -> Campaign:
        """A Campaign from itself or a dict of its fields (unknown keys refused, naming them)."""
        if isinstance(value, Campaign):
            return value
        if not isinstance(value, dict):
            raise ArgumentError(f"campaign must be a Campaign or a dict of its fields, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ArgumentError(f"campaign: unknown keys {unknown} (known: {', '.join(sorted(known))})")
        return cls(**value)

    def to_dict(self) -> dict:
        """Plain values for a start document."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @property
    def thresholds(self) -> tuple[str, list]:
        """``("voltage", [...])``, ``("charge", [...])`` or ``("time_s", [])`` (every ``every_s``)."""
        if self.voltages:
            return "voltage", list(self.voltages)
        if self.charges:
            return "charge", list(self.charges)
        return "time_s", []

    def last_index(self) -> int | None:
        """Index of the last checkpoint, or None when the protocol's end decides."""
        kind, values = self.thresholds
        n = len(values) if values else None
        if self.count is not None:
            n = self.count if n is None else min(n, self.count)
        return None if n is None else n - 1

    def rocking_angles(self, eta_peak: float) -> list[float]:
        """The measurement's rocking angles around the peak found (degrees)."""
        return [float(eta_peak) + float(e) for e in self.etas]


def _check_identity(c: Campaign) -> None:
    if not isinstance(c.campaign_id, str) or not c.campaign_id.strip() or len(c.campaign_id) > 80:
        raise ArgumentError(f"campaign_id must be a non-empty name of at most 80 characters, got {c.campaign_id!r}")
    if c.protocol is not None:
        object.__setattr__(c, "protocol", _protocol_dict(c.protocol))
    if c.eccentricity is not None:
        object.__setattr__(c, "eccentricity", eccentricity_model(c.eccentricity).to_dict())
    if c.start is not None:
        unknown = sorted(set(c.start) - {"eta", "delta", "x", "y"})
        if unknown or len(c.start) != 4:
            raise ArgumentError(f"campaign start must give eta, delta, x and y, got {c.start!r}")
        object.__setattr__(c, "start", {k: finite_float(v, f"start[{k!r}]", error=ArgumentError)
                                        for k, v in c.start.items()})


def _protocol_dict(value) -> dict:
    protocol = Protocol.coerce(value)
    return {"steps": [s.to_dict() for s in protocol.steps], "cycles": protocol.cycles}


def _check_schedule(c: Campaign) -> None:
    given = [name for name in ("every_s", "voltages", "charges") if getattr(c, name) not in (None, (), [])]
    if len(given) != 1:
        raise ArgumentError(f"campaign checkpoints: give one of every_s, voltages or charges, got {given or 'none'}")
    if c.every_s is not None and not finite_float(c.every_s, "every_s", error=ArgumentError) > 0:
        raise ArgumentError(f"every_s must be > 0 s, got {c.every_s!r}")
    for name in ("voltages", "charges"):
        values = [finite_float(v, f"{name}[{i}]", error=ArgumentError) for i, v in enumerate(getattr(c, name))]
        object.__setattr__(c, name, tuple(values))
    if c.count is not None and (int(c.count) != c.count or c.count < 1):
        raise ArgumentError(f"count must be an integer >= 1, got {c.count!r}")
    for name in ("poll_s", "reconnect_timeout_s"):
        if not finite_float(getattr(c, name), name, error=ArgumentError) > 0:
            raise ArgumentError(f"{name} must be > 0 s, got {getattr(c, name)!r}")
    if int(c.max_recoveries) != c.max_recoveries or not 0 <= c.max_recoveries <= 100:
        raise ArgumentError(f"max_recoveries must be an integer in 0..100, got {c.max_recoveries!r}")


def _check_measurement(c: Campaign) -> None:
    if c.measure not in MEASURE_KINDS:
        raise ArgumentError(f"measure must be one of {MEASURE_KINDS}, got {c.measure!r}")
    points = tuple(c.points)
    if len(points) != 2 or any(int(n) != n or n < 2 for n in points):
        raise ArgumentError(f"points must be (nx, ny), integers >= 2, got {c.points!r}")
    object.__setattr__(c, "points", tuple(int(n) for n in points))
    half = tuple(finite_float(v, "half_width_um", error=ArgumentError) for v in c.half_width_um)
    if len(half) != 2 or min(half) <= 0:
        raise ArgumentError(f"half_width_um must be (x, y) > 0, got {c.half_width_um!r}")
    object.__setattr__(c, "half_width_um", half)
    etas = tuple(finite_float(v, "etas", error=ArgumentError) for v in c.etas)
    if not etas:
        raise ArgumentError("etas must hold at least one rocking angle (relative to the peak, degrees)")
    object.__setattr__(c, "etas", etas)
    if not finite_float(c.dwell_s, "dwell_s", error=ArgumentError) > 0:
        raise ArgumentError(f"dwell_s must be > 0 s, got {c.dwell_s!r}")
    if c.measure == "bcdi" and not {"size_m", "d_spacing"} <= set(c.bcdi):
        raise ArgumentError(f"measure='bcdi' needs bcdi={{'size_m': ..., 'd_spacing': ...}}, got {c.bcdi!r}")


def _check_tracking(c: Campaign) -> None:
    if c.recentre not in RECENTRE_KINDS:
        raise ArgumentError(f"recentre must be one of {RECENTRE_KINDS}, got {c.recentre!r}")
    for name in ("line_half_um", "radial_half_deg", "rocking_half_deg", "track_exposure_s"):
        if not finite_float(getattr(c, name), name, error=ArgumentError) > 0:
            raise ArgumentError(f"{name} must be > 0, got {getattr(c, name)!r}")
    for name in ("line_points", "radial_points", "rocking_points"):
        n = getattr(c, name)
        if int(n) != n or n < 5:
            raise ArgumentError(f"{name} must be an integer >= 5, got {n!r}")
    if c.roi is not None:
        roi = tuple(c.roi)
        if len(roi) != 4 or any(int(v) != v or v < 0 for v in roi) or roi[1] <= roi[0] or roi[3] <= roi[2]:
            raise ArgumentError(f"roi must be (row0, row1, col0, col1) with row0 < row1, col0 < col1, got {c.roi!r}")
        object.__setattr__(c, "roi", tuple(int(v) for v in roi))


def due(campaign: Campaign, index: int, state: dict | None, previous: dict | None) -> bool:
    """Whether checkpoint ``index`` is due with the cell in ``state``.

    ``previous`` is the state the last checkpoint was measured at (or the campaign's start): a threshold
    is met once the cell's value has crossed it coming from there, so a threshold passed while nobody
    was watching (a session that ended) is due at once.
    """
    if state is None:
        return True
    kind, values = campaign.thresholds
    if kind == "time_s":
        return float(state["time_s"]) >= index * float(campaign.every_s) - 1e-9
    target, now = values[index], float(state[kind])
    before = float(previous[kind]) if previous is not None else now
    return (now - target) * (before - target) <= 0


class Tracker:
    """Where the peak (``eta``, ``delta``) and the particle (``x``, ``y``) were at each checkpoint, and
    where they will be: a straight line through the last two positions in the protocol's time."""

    KEYS = ("eta", "delta", "x", "y")

    def __init__(self, history=()):
        self.history = [dict(h) for h in history]

    def add(self, time_s: float, position: dict) -> None:
        self.history.append({"time_s": float(time_s), **{k: float(position[k]) for k in self.KEYS}})

    def predict(self, time_s: float | None, fallback: dict) -> dict:
        """The expected position at protocol time ``time_s`` (``fallback`` before any checkpoint)."""
        if not self.history:
            return dict(fallback)
        last = self.history[-1]
        if len(self.history) < 2 or time_s is None:
            return {k: last[k] for k in self.KEYS}
        prev = self.history[-2]
        span = last["time_s"] - prev["time_s"]
        if span <= 0:
            return {k: last[k] for k in self.KEYS}
        ahead = min(max(float(time_s) - last["time_s"], 0.0), 2.0 * span)  # not far beyond what was seen
        return {k: last[k] + (last[k] - prev[k]) * ahead / span for k in self.KEYS}


def completed_checkpoints(client, campaign_id: str) -> list[dict]:
    """The campaign's measured checkpoints in the catalog ``client``, in order: one dict each with
    ``checkpoint``, ``uid``, ``state`` (the cell at the measurement), ``position`` (eta, delta, x, y found).

    Only measurements that ended ``success`` count: a checkpoint whose measurement failed is measured
    again; one measured twice (it cannot happen, but a hand-made run could) counts once.
    """
    from braggscope.storage import find_runs  # the catalog client: only a campaign that resumes needs it

    found = {}
    for run in find_runs(client, campaign_id=campaign_id, operando_role="measure"):
        stop = run.metadata.get("stop") or {}
        if stop.get("exit_status") != "success":
            continue
        start = run.metadata["start"]
        index = int(start["checkpoint"])
        found.setdefault(index, {"checkpoint": index, "uid": start["uid"], "state": start["operando"]["state"],
                                 "position": start["operando"]["position"],
                                 "campaign": start["operando"].get("campaign")})
    return [found[k] for k in sorted(found)]


def campaign_from_catalog(client, campaign_id: str) -> Campaign:
    """The campaign as its latest run recorded it (to take it up again with nothing but its id)."""
    from braggscope.storage import find_runs  # as above

    for run in find_runs(client, campaign_id=campaign_id):
        recorded = (run.metadata["start"].get("operando") or {}).get("campaign")
        if recorded:
            return Campaign.coerce({k: (tuple(v) if isinstance(v, list) else v) for k, v in recorded.items()})
    raise ArgumentError(f"campaign {campaign_id!r}: no run of it in the catalog; give the whole campaign")


def expected_wait_s(campaign: Campaign, index: int, capacity_mah: float | None) -> float:
    """A rough protocol time (s) from the campaign's start to checkpoint ``index``, for a dry run: exact for
    ``every_s``; for charges, the first current step's C-rate; for voltages, evenly spread over that
    step's nominal hour per C."""
    kind, values = campaign.thresholds
    if kind == "time_s":
        return index * float(campaign.every_s)
    c_rate = 1.0
    for step in (campaign.protocol or {}).get("steps", []):
        if step.get("kind", "").startswith("cc_"):
            c_rate = float(step["c_rate"])
            break
    if kind == "charge" and capacity_mah:
        return abs(values[index]) / (c_rate * capacity_mah) * 3600.0
    return (index + 1) / (len(values) + 1) * 3600.0 / c_rate if values else 0.0


def finite_or_none(value):
    """``value`` as a float, or None when it is missing or not finite (a dry run's readings)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None

