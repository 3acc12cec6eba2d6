"""Simulated X-ray fluorescence: projected thickness under the probe, drift, no Bragg condition.

Independent references: the sample's ground-truth thickness map (``truth_maps``) convolved
with the Gaussian probe by ``scipy.ndimage.gaussian_filter`` on a fine grid, the true drift
``bl.eccentricity``, the particle volume of the BCDI voxel object, Poisson statistics.
"""

import numpy as np
import pytest
from scipy import ndimage

from braggscope.core.config import load_config
from braggscope.simulators.beamline import SimulatedBeamline
from braggscope.simulators.sxdm_forward import FWHM_TO_SIGMA

DRIFT = {"eta0": 9.0, "x": [0.4, 0.0], "y": [-0.25, 0.0]}


def _beamline(sample="nmc622", drift=DRIFT, **kw):
    cfg = load_config()
    cfg.set("detector.shape", [128, 128])
    cfg.set("detector.cch", [64.0, 64.0])
    cfg.set("simulator.eccentricity", drift)
    for key, value in kw.items():
        cfg.set(f"simulator.{key}", value)
    return SimulatedBeamline.from_config(cfg, sample=sample, seed=0)


def _positions(x, y, eta, **extra):
    return {"pix": x, "piy": y, "eta": eta, **extra}


def test_counts_are_the_probe_convolved_thickness_at_the_drifted_position():
    bl = _beamline(probe_fwhm_um=0.1)
    cx, cy = bl.truth()["center_um"]
    step = 0.005
    xs = cx + np.arange(-2.0, 2.0, step)
    ys = cy + np.arange(-2.0, 2.0, step)
    thick = bl.sample.truth_maps(xs, ys)["thickness_um"]
    sigma_px = 0.1 * FWHM_TO_SIGMA / step
    reference = ndimage.gaussian_filter(thick, sigma_px, mode="constant")  # (ny, nx), sample frame
    rate, bg, exposure = bl.xrf.rate, bl.xrf.background_rate, 0.01
    eta = 11.5  # away from eta0: the drift is (1.0, -0.625) um
    dx, dy = bl.eccentricity.offset(eta)
    rng = np.random.default_rng(3)
    for _ in range(60):
        j, i = rng.integers(80, len(ys) - 80), rng.integers(80, len(xs) - 80)
        got = bl.expected_fluorescence(_positions(xs[i] + dx, ys[j] + dy, eta), exposure)
        want = (rate * reference[j, i] + bg) * exposure
        assert got == pytest.approx(want, abs=0.02 * rate * exposure), (xs[i], ys[j])


def test_counts_are_poisson():
    bl = _beamline()
    cx, cy = bl.apparent_center(9.0)
    pos = _positions(cx, cy, 9.0)
    mean = bl.expected_fluorescence(pos, 0.01)
    assert 300 < mean < 1000  # a 10 ms point on the crystal: a few hundred counts (xrf_rate)
    draws = np.array([bl.fluorescence(pos, 0.01) for _ in range(4000)])
    assert draws.dtype.kind == "i"
    assert draws.mean() == pytest.approx(mean, abs=5 * np.sqrt(mean / draws.size))
    assert draws.var() == pytest.approx(mean, rel=0.1)


def test_map_centre_of_mass_moves_by_the_true_drift():
    bl = _beamline()
    cx, cy = bl.apparent_center(9.0)
    n, half = 49, 3.0
    x = np.linspace(cx - half, cx + half, n)
    y = np.linspace(cy - half, cy + half, n)
    pixel = x[1] - x[0]

    def com(eta):
        m = np.array([[bl.fluorescence(_positions(xx, yy, eta), 0.01) for xx in x] for yy in y], float)
        w = m - np.median(m)
        w[w < 0.2 * w.max()] = 0.0  # the background's noise would pull the centre to the map's
        return np.array([(w.sum(0) * x).sum() / w.sum(), (w.sum(1) * y).sum() / w.sum()])

    e1, e2 = 7.0, 11.0
    moved = com(e2) - com(e1)
    true = np.subtract(bl.eccentricity.offset(e2), bl.eccentricity.offset(e1))
    assert np.hypot(*true) > 4 * pixel  # a drift of several map pixels ...
    np.testing.assert_allclose(moved, true, atol=0.1 * pixel)  # ... followed within 1/10 pixel


def test_independent_of_the_bragg_condition():
    bl = _beamline(drift={"eta0": 9.0, "x": [0.0, 0.0], "y": [0.0, 0.0]})
    setup = bl.bragg_setup()
    cx, cy = bl.truth()["center_um"]
    for dx in (-1.0, 0.0, 0.6):
        on = bl.expected_fluorescence(_positions(cx + dx, cy, setup["eta"], delta=setup["delta"]))
        for eta, delta in ((setup["eta"] + 2.0, setup["delta"]), (setup["eta"], 0.0), (setup["eta"] - 3.0, 40.0)):
            assert bl.expected_fluorescence(_positions(cx + dx, cy, eta, delta=delta)) == on
    # while the diffraction is gone 2 deg off the Bragg angle, the fluorescence is not
    pos = _positions(cx, cy, setup["eta"] + 2.0, delta=setup["delta"])
    frame = bl.render(pos, 0.01)
    assert frame.sum() < 1.5 * bl.background_rate * 0.01 * frame.size
    assert bl.fluorescence(pos, 0.01) > 20 * bl.xrf.background_rate * 0.01


def test_bcdi_particle_volume_is_conserved():
    bl = _beamline(sample="lmno_bcdi", drift={"eta0": 21.3, "x": [0.0, 0.0], "y": [0.0, 0.0]})
    _, rho, _ = bl.sample.voxel_grid()
    volume = rho.sum() * (bl.sample.voxel_m * 1e6) ** 3  # um^3
    cx, cy = bl.sample.center_um
    step = 0.1
    grid = np.arange(-3.0, 3.0 + step / 2, step)
    probed = sum(bl.xrf.probed_thickness(cx + gx, cy + gy, 21.3) for gx in grid for gy in grid)
    assert probed * step**2 == pytest.approx(volume, rel=0.02)
