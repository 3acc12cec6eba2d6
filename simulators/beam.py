"""The X-ray beam of the simulated beamline: storage ring, front-end shutter, incident-flux monitor.

Pure physics on a clock (seconds, any monotonic origin), no EPICS: the machine IOC
(:mod:`.ioc_machine`) serves it, and the detectors scale their counts by :meth:`IncidentBeam.mean_flux`
over each exposure. The model:

* the ring current decays exponentially with ``lifetime_h`` (0: no decay) from ``current_ma``, the
  value every refill restores;
* refills start every ``refill_period_s`` (0: none; the countdown to the next one is served) and
  last ``refill_duration_s``, during which the front end is closed (no beam on the sample) and the
  current climbs back to ``current_ma``;
* beam dumps come at random (a Poisson process of ``dump_rate_per_h``, seeded) or on request
  (:meth:`StorageRing.dump`): the current is zero for ``dump_duration_s``, then the ring is refilled;
* the front-end shutter is opened and closed by the operator.

The flux on the sample is ``current / current_ma`` while the beam is delivered and the shutter open,
else 0. The defaults are a quiet beam: constant current, no refill, no dump.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["IncidentBeam", "MonitorCounter", "RingSettings", "RingState", "StorageRing"]

#: Outages and shutter changes older than this (s) are forgotten (exposures are shorter).
HISTORY_S = 3600.0


@dataclass(frozen=True)
class RingSettings:
    """The simulated storage ring (the ``[simulator]`` keys ``ring_*``, ``refill_*``, ``dump_*``).

    Attributes
    ----------
    current_ma : float
        Current right after a refill (mA), > 0.
    lifetime_h : float
        Beam lifetime (h); 0 for a current that does not decay.
    refill_period_s, refill_duration_s : float
        Time between refill starts and the length of a refill (s); period 0 for no refills.
    dump_rate_per_h, dump_duration_s : float
        Mean number of random beam dumps per hour (0: none) and how long the beam stays off (s).
    seed : int or None
        Seed of the random dumps.
    """

    current_ma: float = 200.0
    lifetime_h: float = 0.0
    refill_period_s: float = 0.0
    refill_duration_s: float = 30.0
    dump_rate_per_h: float = 0.0
    dump_duration_s: float = 60.0
    seed: int | None = 0

    def __post_init__(self):
        values = {k: getattr(self, k) for k in ("current_ma", "lifetime_h", "refill_period_s", "refill_duration_s",
                                                "dump_rate_per_h", "dump_duration_s")}
        bad = [k for k, v in values.items() if not (math.isfinite(v) and v >= 0)]
        if bad or self.current_ma <= 0:
            raise ValueError(f"ring settings must be finite and >= 0 (current_ma > 0), got {values}")

    @classmethod
    def from_config(cls, cfg) -> RingSettings:
        """From ``[simulator]``: ``ring_current_ma``, ``ring_lifetime_h``, ``refill_period_s``,
        ``refill_duration_s``, ``dump_rate_per_h``, ``dump_duration_s``, ``seed``."""
        sim = cfg.get("simulator", {}) or {}
        defaults = cls()
        return cls(current_ma=float(sim.get("ring_current_ma", defaults.current_ma)),
                   lifetime_h=float(sim.get("ring_lifetime_h", defaults.lifetime_h)),
                   refill_period_s=float(sim.get("refill_period_s", defaults.refill_period_s)),
                   refill_duration_s=float(sim.get("refill_duration_s", defaults.refill_duration_s)),
                   dump_rate_per_h=float(sim.get("dump_rate_per_h", defaults.dump_rate_per_h)),
                   dump_duration_s=float(sim.get("dump_duration_s", defaults.dump_duration_s)),
                   seed=sim.get("seed", defaults.seed))


@dataclass(frozen=True)
class RingState:
    """The ring at one time: ``current_ma``, ``countdown_s`` (to the next refill, 0 during one, -1 when
    none is scheduled) and ``status`` (``"beam"``, ``"refill"`` or ``"dump"``)."""

    current_ma: float
    countdown_s: float
    status: str


@dataclass
class _Outage:
    start: float
    end: float
    kind: str  # "refill" or "dump"
    from_ma: float = 0.0  # current when a refill starts


class StorageRing:
    """The ring's current, refills and dumps over time (thread-safe).

    Parameters
    ----------
    settings : RingSettings
    start : float
        Clock time (s) at which the ring is freshly filled; the first refill is one period later.
    """

    def __init__(self, settings: RingSettings = RingSettings(), start: float = 0.0):
        self.settings = settings
        self._lock = threading.RLock()
        self._rng = np.random.default_rng(None if settings.seed is None else int(settings.seed) + 7)
        self._outages: list[_Outage] = []
        self._fills = [(float(start), settings.current_ma)]  # (time, current) whenever the ring is refilled
        self._frontier = float(start)  # outages are known up to here
        period = settings.refill_period_s
        self._next_refill = start + period if period > 0 else math.inf
        self._next_dump = start + self._dump_gap()
        self.revision = 0  # incremented by every change not foreseen by the schedule (dump, reschedule)

    # ---------------------------------------------------------------- schedule
    def _dump_gap(self) -> float:
        rate = self.settings.dump_rate_per_h / 3600.0
        return float(self._rng.exponential(1.0 / rate)) if rate > 0 else math.inf

    def _extend(self, until: float) -> None:
        """Known outages up to ``until``: the scheduled refills and the random dumps, in time order."""
        s = self.settings
        while min(self._next_refill, self._next_dump) <= until:
            if self._next_refill <= self._next_dump:
                start = self._next_refill  # the next one a period later (none without a period)
                self._next_refill = start + s.refill_period_s if s.refill_period_s > 0 else math.inf
                self._add(start, s.refill_duration_s, "refill")
            else:
                start = self._next_dump
                self._next_dump = start + self._dump_gap()
                self._add(start, s.dump_duration_s, "dump")
        self._frontier = max(self._frontier, until)

    def _forget_before(self, t: float) -> None:
        """Forget the outages and fills that ended more than :data:`HISTORY_S` before ``t``."""
        if len(self._outages) > 64:
            self._outages = [o for o in self._outages if o.end > t - HISTORY_S]

    def _add(self, start: float, duration: float, kind: str) -> None:
        """An outage from ``start``, unless one is under way then (it is skipped: the ring is off anyway)."""
        if self._outages and start < self._outages[-1].end:
            return
        outage = _Outage(start, start + duration, kind)
        if kind == "refill":
            outage.from_ma = self._current_before(start)
        self._outages.append(outage)
        self._fills.append((outage.end, self.settings.current_ma))
        self._fills = self._fills[-64:]

    def dump(self, at: float, duration: float | None = None) -> None:
        """A beam dump at ``at`` (s) for ``duration`` s (default ``dump_duration_s``): a refill under way is
        cut short, outages foreseen within the dump are dropped."""
        duration = self.settings.dump_duration_s if duration is None else float(duration)
        if not (math.isfinite(duration) and duration > 0):
            raise ValueError(f"dump duration must be > 0 s, got {duration!r}")
        with self._lock:
            self._extend(at + duration)
            kept = []
            for o in self._outages:
                if o.end <= at:
                    kept.append(o)
                elif o.start < at:  # under way: ends now
                    kept.append(_Outage(o.start, at, o.kind, o.from_ma))
            self._outages = kept + [_Outage(at, at + duration, "dump")]
            self._fills = [f for f in self._fills if f[0] <= at] + [(at + duration, self.settings.current_ma)]
            self.revision += 1

    def refill_in(self, at: float, delay_s: float) -> None:
        """Move the next refill to ``at + delay_s`` (s); the ones after follow every period."""
        if not (math.isfinite(delay_s) and delay_s >= 0):
            raise ValueError(f"refill delay must be >= 0 s, got {delay_s!r}")
        with self._lock:
            self._extend(at)
            self._outages = [o for o in self._outages if not (o.kind == "refill" and o.start >= at)]
            self._fills = [f for f in self._fills if f[0] <= at or any(o.end == f[0] for o in self._outages)]
            self._frontier = at
            self._next_refill = at + float(delay_s)
            self.revision += 1

    # ---------------------------------------------------------------- what it is at a time
    def _outage_at(self, t: float) -> _Outage | None:
        for o in reversed(self._outages):
            if o.start <= t < o.end:
                return o
            if o.end <= t:
                return None
        return None

    def _current_before(self, t: float) -> float:
        """The decaying current at ``t`` from the last fill before it."""
        fill_t, fill_ma = max((f for f in self._fills if f[0] <= t), default=self._fills[0])
        tau = self.settings.lifetime_h * 3600.0
        return fill_ma * math.exp(-(t - fill_t) / tau) if tau > 0 else fill_ma

    def state(self, t: float) -> RingState:
        """Current, refill countdown and status at ``t``."""
        with self._lock:
            self._extend(t + max(self.settings.refill_period_s, 1.0))
            self._forget_before(t)
            o = self._outage_at(t)
            countdown = self._countdown(t)
            if o is None:
                return RingState(self._current_before(t), countdown, "beam")
            if o.kind == "dump":
                return RingState(0.0, countdown, "dump")
            fraction = (t - o.start) / max(o.end - o.start, 1e-12)
            return RingState(o.from_ma + fraction * (self.settings.current_ma - o.from_ma), 0.0, "refill")

    def _countdown(self, t: float) -> float:
        for o in self._outages:
            if o.kind == "refill" and o.end > t:
                return max(o.start - t, 0.0)
        return self._next_refill - t if math.isfinite(self._next_refill) else -1.0

    def flux(self, t: float) -> float:
        """Beam delivered at ``t`` as a fraction of the flux at ``current_ma`` (0 during refills and dumps)."""
        state = self.state(t)
        return state.current_ma / self.settings.current_ma if state.status == "beam" else 0.0

    def breakpoints(self, t0: float, t1: float) -> list[float]:
        """Times in ``(t0, t1)`` where the beam goes off or comes back."""
        with self._lock:
            self._extend(t1)
            return sorted({t for o in self._outages for t in (o.start, o.end) if t0 < t < t1})

    def mean_flux(self, t0: float, t1: float) -> float:
        """Mean of :meth:`flux` over ``[t0, t1]`` (exact: the decay integrated in closed form)."""
        if not t1 > t0:
            return self.flux(t0)
        edges = [t0, *self.breakpoints(t0, t1), t1]
        tau = self.settings.lifetime_h * 3600.0
        total = 0.0
        for a, b in zip(edges[:-1], edges[1:]):
            f = self.flux(0.5 * (a + b))
            if f > 0 and tau > 0:  # f at the midpoint -> exact mean of the exponential over [a, b]
                half = 0.5 * (b - a) / tau
                f *= math.sinh(half) / half if half > 0 else 1.0
            total += f * (b - a)
        return total / (t1 - t0)

    def next_change(self, t: float) -> float:
        """The next time after ``t`` at which the beam goes off or comes back, or a refill starts (inf: none)."""
        with self._lock:
            self._extend(t + max(self.settings.refill_period_s, 1.0) + 1.0)
            times = [x for o in self._outages for x in (o.start, o.end) if x > t]
            return min(times + [self._next_refill, self._next_dump])


class IncidentBeam:
    """The ring seen through the front-end shutter: the flux on the sample (thread-safe).

    Parameters
    ----------
    ring : StorageRing
    start : float
        Clock time of the start (the shutter open).
    """

    def __init__(self, ring: StorageRing, start: float = 0.0):
        self.ring = ring
        self._changes = [(float(start), True)]  # (time, shutter open)
        self._lock = threading.Lock()
        self._shutter_revision = 0
        self._armed_dump: tuple[float, float | None] | None = None
        self.listeners: list = []  # called with no argument after a change made by exposure_started

    def arm_dump(self, delay_s: float, duration_s: float | None = None) -> None:
        """Dump the beam ``delay_s`` into the next exposure that starts (:meth:`exposure_started`), for
        ``duration_s`` (default the ring's): a test's way to hit an exposure, whatever the load."""
        if not (math.isfinite(delay_s) and delay_s >= 0):
            raise ValueError(f"dump delay must be >= 0 s, got {delay_s!r}")
        self._armed_dump = (float(delay_s), duration_s)

    def exposure_started(self, t: float) -> None:
        """A detector starts an exposure at ``t``: an armed dump is scheduled in it (listeners told)."""
        armed, self._armed_dump = self._armed_dump, None
        if armed is not None:
            self.ring.dump(t + armed[0], armed[1])
            for listener in self.listeners:
                listener()

    @property
    def revision(self) -> int:
        """Changes nobody could foresee so far (shutter moves, dumps and refills asked for)."""
        return self.ring.revision + self._shutter_revision

    def set_shutter(self, t: float, is_open: bool) -> None:
        """The operator opens or closes the front-end shutter at ``t``."""
        with self._lock:
            if self._changes[-1][1] != bool(is_open):
                self._changes.append((float(t), bool(is_open)))
                self._changes = [c for c in self._changes if c[0] > t - HISTORY_S] or self._changes[-1:]
                self._shutter_revision += 1

    def shutter_open(self, t: float) -> bool:
        """Whether the operator's shutter is open at ``t``."""
        with self._lock:
            for when, is_open in reversed(self._changes):
                if when <= t:
                    return is_open
            return self._changes[0][1]

    def flux(self, t: float) -> float:
        """Flux on the sample at ``t`` (fraction of the flux at the full current, shutter open)."""
        return self.ring.flux(t) if self.shutter_open(t) else 0.0

    def mean_flux(self, t0: float, t1: float) -> float:
        """Mean flux on the sample over ``[t0, t1]``: what an exposure over it collects, relative to
        one with the full current and the shutter open."""
        if not t1 > t0:
            return self.flux(t0)
        with self._lock:
            edges = [t0, *sorted(c[0] for c in self._changes if t0 < c[0] < t1), t1]
        total = sum(self.ring.mean_flux(a, b) * (b - a) for a, b in zip(edges[:-1], edges[1:])
                    if self.shutter_open(0.5 * (a + b)))
        return total / (t1 - t0)


class MonitorCounter:
    """An incident-flux monitor (ion chamber or diode, ``mon1``): Poisson counts proportional to the flux.

    Parameters
    ----------
    rate : float
        Counts per second at the full flux (ring at ``current_ma``, shutter open), >= 0.
    dark_rate : float
        Counts per second without beam (electronics), >= 0.
    seed : int or None
    """

    def __init__(self, rate: float = 1.0e6, dark_rate: float = 0.0, seed: int | None = 0):
        if not (math.isfinite(rate) and rate >= 0 and math.isfinite(dark_rate) and dark_rate >= 0):
            raise ValueError(f"monitor rates must be finite and >= 0, got {rate!r}, {dark_rate!r}")
        self.rate, self.dark_rate = float(rate), float(dark_rate)
        self._rng = np.random.default_rng(None if seed is None else int(seed) + 11)
        self._lock = threading.Lock()

    def expected(self, exposure_s: float, mean_flux: float) -> float:
        """Mean counts of an exposure of ``exposure_s`` s at ``mean_flux``."""
        return (self.rate * float(mean_flux) + self.dark_rate) * float(exposure_s)

    def count(self, exposure_s: float, mean_flux: float) -> int:
        """Counts of one exposure (Poisson)."""
        with self._lock:
            return int(self._rng.poisson(self.expected(exposure_s, mean_flux)))

    def counts(self, exposures_s, mean_fluxes) -> np.ndarray:
        """Counts of several exposures at once (fly-scan frames)."""
        lam = (self.rate * np.asarray(mean_fluxes, dtype=float) + self.dark_rate) * np.asarray(exposures_s, float)
        with self._lock:
            return self._rng.poisson(lam).astype(np.int64)
