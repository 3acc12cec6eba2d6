"""Eccentricity calibration: registration locator, skipped angles and the mosaic check.

Checked against the simulator's true drift (``SimulatedBeamline.eccentricity``), in-process.
On the mosaic NMC622 crystal the diffracting region sweeps across the crystal with eta
(edge and domain tilts); a drift along the sweep cannot be told from it with diffraction
maps, so the calibration must flag the crystal instead of returning a drift that looks good.
"""

import numpy as np
import pytest
from bluesky import RunEngine

from braggscope.core.config import load_config
from braggscope.core.eccentricity import EccentricityModel
from braggscope.core.errors import ArgumentError
from braggscope.plans.calibrate import calibrate_eccentricity, mosaic_fraction
from braggscope.simulators.beamline import SimulatedBeamline
from braggscope.simulators.inprocess import make_inprocess_devices


def _beamline(tmp_path, sample, drift, seed=0):
    cfg = load_config()
    cfg.set("detector.shape", [128, 128])
    cfg.set("detector.cch", [64.0, 64.0])
    if drift is not None:
        cfg.set("simulator.eccentricity", drift)
    sim = SimulatedBeamline.from_config(cfg, sample=sample, seed=seed)
    devs = make_inprocess_devices(sim, tmp_path, limits=cfg["limits"])
    RE = RunEngine(call_returns_result=True)
    setup = sim.bragg_setup()

    def park():
        import bluesky.plan_stubs as bps
        yield from bps.mv(devs["delta"], setup["delta"], devs["nu"], 0.0, devs["phi"], 0.0)

    RE(park())
    return sim, devs, RE, setup


def _error_vs_truth(model, truth, etas):
    """Largest difference (um) between fitted and true drift across ``etas``, relative to the first angle."""
    fine = np.linspace(min(etas), max(etas), 41)
    rel_fit = np.stack(model.offset(fine)) - np.stack(model.offset(fine[0]))[:, None]
    rel_true = np.stack(truth.offset(fine)) - np.stack(truth.offset(fine[0]))[:, None]
    return np.abs(rel_fit - rel_true).max(axis=1)


def _calibrate(sim, devs, RE, etas, half, n, **kw):
    cx, cy = sim.apparent_center(sim.eccentricity.eta0)
    return RE(calibrate_eccentricity([devs["mpx1x4"]], devs["pix"], (cx - half, cx + half, n), devs["piy"],
                                     (cy - half, cy + half, n), devs["eta"], etas, **kw)).plan_result


def test_register_recovers_true_drift_on_compact_particle(tmp_path):
    drift = {"eta0": 21.3, "x": [10.0, 5.0], "y": [-6.0, 0.0]}
    sim, devs, RE, setup = _beamline(tmp_path, "lmno_bcdi", drift, seed=1)
    etas = list(np.linspace(setup["eta"] - 0.05, setup["eta"] + 0.05, 5))
    half, n = 2.5, 13
    pixel = 2 * half / (n - 1)
    result = _calibrate(sim, devs, RE, etas, half, n, locate="register")
    assert result.locate == "register"
    err = _error_vs_truth(result.fitted, sim.eccentricity, etas)
    assert np.all(err < pixel / 2), (err, pixel)
    # the whole particle diffracts together: not mosaic, and the fit is accepted
    assert result.mosaic_fraction < 0.25
    assert result.accepted, result.reason


@pytest.mark.slow
def test_mosaic_nmc622_is_flagged_not_trusted(tmp_path):
    """A 1.5 um/deg drift on NMC622, calibrated over its whole rocking range (as the demo does)."""
    theta = SimulatedBeamline.from_config(load_config(), sample="nmc622").bragg_setup()["eta"]
    drift = {"eta0": theta, "x": [1.5, 0.0], "y": [-1.0, 0.0]}
    sim, devs, RE, setup = _beamline(tmp_path, "nmc622", drift)
    etas = list(np.linspace(setup["eta_start"], setup["eta_stop"], 9))
    half, n = setup["extent_um"] + 1.0, 9
    map_pixel = 2 * setup["extent_um"] / 11  # the quick demo's map pixel (12 points)
    for locate in ("com", "register"):
        result = _calibrate(sim, devs, RE, etas, half, n, locate=locate, quadratic=False, map_pixel_um=map_pixel)
        # the tails of the range hold no signal: skipped, not fatal
        assert result.eta_not_found and len(result.eta) >= 4
        assert result.mosaic_fraction > 0.4, result.mosaic_fraction
        assert not result.accepted and "mosaic" in result.reason
        assert result.use == EccentricityModel()  # rejected: the fallback (no drift) is kept
        # why it must be rejected: the fitted drift is not the true drift (the sweep adds to it)
        err = _error_vs_truth(result.fitted, sim.eccentricity, result.eta)
        assert err[0] > 3 * map_pixel, (locate, err)


def test_mosaic_fraction_separates_compact_and_mosaic():
    eta = np.linspace(-0.5, 0.5, 21)
    yy, xx = np.mgrid[0:9, 0:9]
    inside = (np.abs(xx - 4) <= 2) & (np.abs(yy - 4) <= 2)
    # compact: every pixel has the same rocking curve
    compact = np.exp(-0.5 * (eta[:, None, None] / 0.1) ** 2) * inside + 10.0
    assert mosaic_fraction(compact, eta) < 0.01
    # bent: the rocking centre moves across x by 0.15 deg per pixel
    centre = 0.15 * (xx - 4)
    bent = np.exp(-0.5 * ((eta[:, None, None] - centre) / 0.05) ** 2) * inside + 10.0
    assert mosaic_fraction(bent, eta) > 0.8
    with pytest.raises(ArgumentError, match="n_eta"):
        mosaic_fraction(bent, eta[:-1])


def test_bad_locate_refused_before_motion(tmp_path):
    sim, devs, RE, setup = _beamline(tmp_path, "lmno_bcdi", None)
    before = devs["pix"].position, devs["eta"].position
    with pytest.raises(ArgumentError, match="locate must be one of"):
        RE(calibrate_eccentricity([devs["mpx1x4"]], devs["pix"], (49, 51, 3), devs["piy"], (49, 51, 3),
                                  devs["eta"], [21.3, 21.35, 21.4], locate="outline"))
    assert (devs["pix"].position, devs["eta"].position) == before
