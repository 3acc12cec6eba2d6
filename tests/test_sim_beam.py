"""The simulated beam (simulators/beam.py) against closed forms and independent numerical integrals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from braggscope.simulators.beam import IncidentBeam, MonitorCounter, RingSettings, StorageRing


def _integral(f, t0, t1, n=200_001):
    """Trapezoid rule on a fine grid: an integral computed without the model's closed forms."""
    t = np.linspace(t0, t1, n)
    y = np.array([f(x) for x in t])
    return float(np.sum((y[1:] + y[:-1]) * np.diff(t)) / 2)


def test_the_quiet_default_beam_is_constant_with_no_refill():
    ring = StorageRing(RingSettings(), start=0.0)
    for t in (0.0, 10.0, 1e5):
        state = ring.state(t)
        assert (state.current_ma, state.countdown_s, state.status) == (200.0, -1.0, "beam")
    beam = IncidentBeam(ring)
    assert beam.mean_flux(3.0, 3.01) == 1.0 and ring.next_change(5.0) == math.inf


def test_current_decays_with_the_lifetime_and_refills_restore_it():
    s = RingSettings(current_ma=200.0, lifetime_h=2.0, refill_period_s=3600.0, refill_duration_s=60.0)
    ring = StorageRing(s, start=0.0)
    tau = 2.0 * 3600.0
    assert ring.state(1800.0).current_ma == pytest.approx(200.0 * math.exp(-1800.0 / tau), rel=1e-12)
    assert ring.state(1800.0).countdown_s == pytest.approx(1800.0)
    during = ring.state(3630.0)
    assert during.status == "refill" and during.countdown_s == 0.0
    before = 200.0 * math.exp(-3600.0 / tau)  # climbing linearly from the decayed current to 200 mA
    assert during.current_ma == pytest.approx(before + 0.5 * (200.0 - before))
    after = ring.state(3660.0 + 100.0)
    assert after.status == "beam" and after.current_ma == pytest.approx(200.0 * math.exp(-100.0 / tau))
    assert after.countdown_s == pytest.approx(3600.0 + 3600.0 - 3760.0)
    assert ring.flux(3630.0) == 0.0  # the front end is closed during the refill


def test_mean_flux_is_the_integral_of_the_flux_through_decay_refill_and_shutter():
    s = RingSettings(lifetime_h=0.01, refill_period_s=20.0, refill_duration_s=3.0)  # tau = 36 s
    ring = StorageRing(s, start=0.0)
    beam = IncidentBeam(ring, start=0.0)
    beam.set_shutter(30.0, False)
    beam.set_shutter(31.5, True)
    t0, t1 = 5.0, 40.0
    expected = _integral(beam.flux, t0, t1) / (t1 - t0)
    assert beam.mean_flux(t0, t1) == pytest.approx(expected, rel=1e-5)
    # decay only, closed form: mean of exp(-t / tau) over [2, 12]
    tau = 36.0
    closed = tau * (math.exp(-2.0 / tau) - math.exp(-12.0 / tau)) / 10.0
    assert ring.mean_flux(2.0, 12.0) == pytest.approx(closed, rel=1e-12)


def test_a_dump_takes_the_beam_away_for_its_duration_then_the_ring_is_full():
    s = RingSettings(lifetime_h=1.0, dump_duration_s=60.0)
    ring = StorageRing(s, start=0.0)
    beam = IncidentBeam(ring)
    revision = beam.revision
    ring.dump(100.0, 5.0)
    assert beam.revision > revision  # nobody could foresee it: exposures under way are counted again
    assert ring.state(102.0).status == "dump" and ring.state(102.0).current_ma == 0.0
    assert ring.state(105.5).current_ma == pytest.approx(200.0 * math.exp(-0.5 / 3600.0))
    assert ring.breakpoints(99.0, 106.0) == [100.0, 105.0]
    assert ring.next_change(101.0) == 105.0
    # an exposure over [99, 101] got half the beam
    assert beam.mean_flux(99.0, 101.0) == pytest.approx(0.5 * ring.mean_flux(99.0, 100.0), rel=1e-9)


def test_random_dumps_follow_the_rate_and_the_seed():
    s = RingSettings(dump_rate_per_h=3600.0, dump_duration_s=0.1, seed=3)  # one a second on average
    starts = []
    for seed in (3, 3):
        ring = StorageRing(RingSettings(**{**s.__dict__, "seed": seed}), start=0.0)
        ring.breakpoints(0.0, 2000.0)
        starts.append([o.start for o in ring._outages if o.kind == "dump"])
    assert starts[0] == starts[1]  # deterministic per seed
    gaps = np.diff(starts[0])
    assert 1500 < len(starts[0]) < 2000  # the dumps of 0.1 s that start during another are skipped
    assert np.mean(gaps) == pytest.approx(1.1, rel=0.1)  # exponential gaps of 1 s after each 0.1 s outage


def test_refill_in_moves_the_next_refill_and_a_period_of_zero_means_one_refill():
    ring = StorageRing(RingSettings(refill_duration_s=2.0), start=0.0)
    assert ring.state(10.0).countdown_s == -1.0
    ring.refill_in(10.0, 0.5)
    assert ring.state(10.2).countdown_s == pytest.approx(0.3)
    assert ring.state(11.0).status == "refill"
    assert ring.state(13.0).status == "beam" and ring.state(13.0).countdown_s == -1.0


def test_monitor_counts_are_poisson_with_a_mean_proportional_to_the_flux():
    monitor = MonitorCounter(rate=2.0e5, dark_rate=10.0, seed=1)
    counts = monitor.counts(np.full(20000, 0.01), np.full(20000, 0.4))
    mean = (2.0e5 * 0.4 + 10.0) * 0.01
    assert counts.mean() == pytest.approx(mean, rel=0.01)
    assert counts.var() == pytest.approx(mean, rel=0.05)
    assert monitor.expected(0.01, 0.0) == pytest.approx(0.1)


def test_settings_refuse_negative_and_non_finite_values():
    for bad in ({"lifetime_h": -1.0}, {"current_ma": 0.0}, {"dump_rate_per_h": float("nan")}):
        with pytest.raises(ValueError):
            RingSettings(**bad)
    with pytest.raises(ValueError):
        MonitorCounter(rate=-1.0)
    with pytest.raises(ValueError):
        StorageRing().dump(1.0, 0.0)
