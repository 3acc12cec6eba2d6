"""The fluorescence detector over Channel Access: IOC, ophyd device and calibration.

References are the simulator's own truth (``SimulatedBeamline`` built from the same
configuration as the IOC: true drift ``bl.eccentricity``, particle thickness) and closed-form
values (counts proportional to the counting time), not the code's own output.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ioc


@pytest.fixture(scope="module")
def xrf(sim_devices):
    det = sim_devices["xrf"]
    old = det.acquire_time.get()
    yield det
    det.acquire_time.put(old, wait=True)


@pytest.fixture(scope="module")
def truth(sim_config):
    from braggscope.simulators.beamline import SimulatedBeamline

    return SimulatedBeamline.from_config(sim_config)


def _count_at(RE, d, xrf, x, y, eta):
    import bluesky.plan_stubs as bps

    RE(bps.mv(d["eta"], eta, d["pix"], x, d["piy"], y))
    xrf.trigger().wait(timeout=10)
    return xrf.read()["xrf_counts"]["value"]


def test_xrf_counts_follow_the_particle_and_the_count_time(sim_devices, xrf, truth):
    from bluesky import RunEngine

    d, RE = sim_devices, RunEngine()
    assert xrf.hints == {"fields": ["xrf_counts"]}
    eta = truth.bragg_setup()["eta"] + 2.0  # off the Bragg condition: fluorescence does not care
    cx, cy = truth.apparent_center(eta)
    xrf.acquire_time.put(0.2, wait=True)
    t0 = time.monotonic()
    on = _count_at(RE, d, xrf, cx, cy, eta)
    xrf.acquire_time.put(0.01, wait=True)
    t1 = time.monotonic()
    xrf.trigger().wait(timeout=10)  # realtime simulator: the put completes after the count time
    short = xrf.read()["xrf_counts"]["value"]
    assert time.monotonic() - t1 >= 0.009
    assert t1 - t0 >= 0.2
    off = _count_at(RE, d, xrf, cx + 5.0, cy, eta)
    # closed form: rate x thickness x time; the crystal centre is flat (thickness t), so
    # the probe-averaged thickness is t there
    from braggscope.simulators.fluorescence import projected_thickness

    x0, y0 = truth.truth()["center_um"]
    t = float(projected_thickness(truth.sample, x0, y0))
    rate, bg = truth.xrf.rate, truth.xrf.background_rate
    assert on == pytest.approx((rate * t + bg) * 0.2, rel=0.03)  # 2e3-count Poisson: 5 sigma ~ 2.2 %
    assert short == pytest.approx((rate * t + bg) * 0.01, abs=5 * np.sqrt((rate * t + bg) * 0.01))
    assert off <= bg * 0.01 + 5 * np.sqrt(bg * 0.01)


def test_xrf_calibration_over_ca_recovers_true_drift(sim_devices, xrf, truth, tmp_path):
    from bluesky import RunEngine

    from braggscope.plans import calibrate_eccentricity

    d, RE = sim_devices, RunEngine(call_returns_result=True)
    xrf.acquire_time.put(0.002, wait=True)  # 100 counts on the particle: plenty for a centre of mass
    setup = truth.bragg_setup()
    cx, cy = truth.apparent_center(setup["eta"])
    half, n = setup["extent_um"] + 1.0, 9
    pixel = 2 * half / (n - 1)
    etas = list(np.linspace(setup["eta"] - 3.0, setup["eta"] + 3.0, 5))
    result = RE(calibrate_eccentricity([xrf], d["pix"], (cx - half, cx + half, n), d["piy"],
                                       (cy - half, cy + half, n), d["eta"], etas, intensity_field="xrf_counts",
                                       quadratic=False)).plan_result
    model = result.fitted
    assert result.signal == "fluorescence" and not result.eta_not_found
    assert result.map_total_variation < 0.2
    # measured positions against the true apparent centre at each eta (the particle's
    # thickness-weighted centre, moved by the true drift): within a quarter of a coarse pixel
    # (point sampling of a sharp-edged particle on a 0.7 um grid limits the centre of mass)
    true = np.array([truth.apparent_center(e) for e in etas])
    got = np.stack([result.x_um, result.y_um], axis=1)
    assert np.abs(got - true).max() < pixel / 4, (got - true, pixel)
    # the fitted line follows the true (slightly quadratic) drift across the 6 deg span
    fine = np.linspace(etas[0], etas[-1], 25)
    rel_fit = np.stack(model.offset(fine)) - np.stack(model.offset(fine[0]))[:, None]
    rel_true = np.stack(truth.eccentricity.offset(fine)) - np.stack(truth.eccentricity.offset(fine[0]))[:, None]
    assert np.abs(rel_fit - rel_true).max() < pixel / 2, (model, truth.eccentricity)
