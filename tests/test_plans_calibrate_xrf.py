"""Eccentricity calibration of the mosaic NMC622 crystal from its fluorescence (in-process).

Diffraction maps of NMC622 follow the diffracting region as it sweeps across the crystal
with eta (``test_plans_calibrate_mosaic.py``); fluorescence maps show the whole particle at
any eta. The reference is the simulator's true drift ``bl.eccentricity``.
"""

import numpy as np
import pytest
from bluesky import RunEngine

from braggscope.core.config import load_config
from braggscope.core.eccentricity import EccentricityModel
from braggscope.plans import calibrate_eccentricity, crystal_position, sxdm_map
from braggscope.simulators.beamline import SimulatedBeamline
from braggscope.simulators.inprocess import make_inprocess_devices


@pytest.fixture(scope="module")
def nmc622(tmp_path_factory):
    cfg = load_config()
    cfg.set("detector.shape", [128, 128])
    cfg.set("detector.cch", [64.0, 64.0])
    theta = SimulatedBeamline.from_config(cfg, sample="nmc622").bragg_setup()["eta"]
    cfg.set("simulator.eccentricity", {"eta0": theta, "x": [0.5, 0.01], "y": [-0.3, 0.0]})
    sim = SimulatedBeamline.from_config(cfg, sample="nmc622")
    devs = make_inprocess_devices(sim, tmp_path_factory.mktemp("xrf"), limits=cfg["limits"])
    return sim, devs, RunEngine(call_returns_result=True), sim.bragg_setup()


def _centre_spread(RE, devs, model, setup, grid):
    """Spread (um, x and y) over the rocking range of the particle's fluorescence centre of mass
    in a map that follows ``model``, in map coordinates (what the reduction sees)."""
    xr, yr = grid
    etas = list(np.linspace(setup["eta_start"], setup["eta_stop"], 5))
    counts = []
    RE(sxdm_map([devs["xrf"]], devs["pix"], xr, devs["piy"], yr, devs["eta"], etas, eccentricity=model, snake=False),
       {"event": lambda name, doc: counts.append(doc["data"]["xrf_counts"])})
    maps = np.asarray(counts, float).reshape(len(etas), yr[2], xr[2])
    yy, xx = np.meshgrid(np.linspace(*yr), np.linspace(*xr), indexing="ij")
    centres = np.array([crystal_position(m, xx, yy) for m in maps])
    return np.ptp(centres, axis=0)


def test_fluorescence_calibration_recovers_the_true_drift_of_a_mosaic_crystal(nmc622):
    sim, devs, RE, setup = nmc622
    theta = setup["eta"]
    cx, cy = sim.apparent_center(theta)
    span = 2.0  # wider than the +-0.7 deg rocking range: fluorescence needs no Bragg condition
    half, n = setup["extent_um"] + 1.0 + 0.5 * span, 11
    etas = list(np.linspace(theta - span, theta + span, 9))
    # the main map's grid (the quick demo's: 12 x 10 points over the crystal)
    ext = setup["extent_um"]
    grid = ((cx - ext, cx + ext, 12), (cy - ext, cy + ext, 10))
    pixel = 2 * setup["extent_um"] / 11
    rock = np.linspace(setup["eta_start"], setup["eta_stop"], 41)
    result = RE(calibrate_eccentricity([devs["xrf"]], devs["pix"], (cx - half, cx + half, n), devs["piy"],
                                       (cy - half, cy + half, n), devs["eta"], etas, intensity_field="xrf_counts",
                                       quadratic=False, map_pixel_um=pixel, map_etas=rock)).plan_result
    model = result.fitted
    assert result.signal == "fluorescence" and result.intensity_field == "xrf_counts"
    assert not result.eta_not_found  # the particle fluoresces at every angle
    assert result.map_total_variation < 0.2
    rel_fit = np.stack(model.offset(rock)) - np.stack(model.offset(rock[0]))[:, None]
    rel_true = np.stack(sim.eccentricity.offset(rock)) - np.stack(sim.eccentricity.offset(rock[0]))[:, None]
    assert np.abs(rel_true).max() > 2 * pixel  # uncorrected, the crystal would slide by > 2 pixels
    assert np.abs(rel_fit - rel_true).max() < pixel / 4, (model, sim.eccentricity)
    assert result.accepted, result.reason
    assert result.significant == {"x": True, "y": True} and result.use.x == model.x

    # measured: a map following the fit keeps the particle within one map pixel across the
    # rocking range; one without correction does not
    assert _centre_spread(RE, devs, model, setup, grid).max() < pixel
    assert _centre_spread(RE, devs, EccentricityModel(), setup, grid).max() > 2 * pixel
