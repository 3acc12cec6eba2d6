"""``demo sxdm``'s eccentricity step: accepted from fluorescence, still rejected from diffraction.

Runs the demo's calibration alone on in-process devices (the fluorescence maps need no
detector frames, so it is fast); the reference is the simulator's true drift.
"""

import numpy as np
import pytest

from braggscope.app.demo.beamline import Beamline
from braggscope.app.demo.sxdm import calibrate_sxdm
from braggscope.core.eccentricity import EccentricityModel
from tests.test_demo_quick import small_demo_config


@pytest.fixture()
def bl(tmp_path):
    cfg = small_demo_config(tmp_path)
    with Beamline(cfg, inprocess=True, sample="nmc622", out=tmp_path) as beamline:
        import bluesky.plan_stubs as bps

        d, setup = beamline.devices, beamline.sim.bragg_setup()
        beamline.RE(bps.mv(d["delta"], setup["delta"], d["eta"], setup["eta"]))  # parked as the demo does
        yield beamline


def _quick_main_map(setup):
    etas = list(np.linspace(setup["eta_start"], setup["eta_stop"], 6))
    return etas, 2 * float(setup["extent_um"]) / 11  # the quick demo's map pixel (12 points)


def test_demo_calibration_from_fluorescence_is_accepted_and_right(bl, tmp_path):
    setup = bl.sim.bragg_setup()
    etas, pixel = _quick_main_map(setup)
    result = calibrate_sxdm(bl, tmp_path, setup, etas, pixel, EccentricityModel(), quick=True)
    model = result.fitted
    assert result.accepted, result.reason
    assert result.signal == "fluorescence"
    assert max(result.eta) - min(result.eta) > 2 * (setup["eta_stop"] - setup["eta_start"])
    rock = np.linspace(etas[0], etas[-1], 21)
    rel_fit = np.stack(model.offset(rock)) - np.stack(model.offset(rock[0]))[:, None]
    rel_true = np.stack(bl.sim.eccentricity.offset(rock)) - np.stack(bl.sim.eccentricity.offset(rock[0]))[:, None]
    assert np.abs(rel_fit - rel_true).max() < pixel / 4
    assert (tmp_path / "eccentricity_fit.png").exists()


def test_demo_calibration_without_fluorescence_rejects_the_mosaic_crystal(bl, tmp_path):
    bl.xrf = None  # pv.fluorescence = "": the diffraction maps are all there is
    setup = bl.sim.bragg_setup()
    etas, pixel = _quick_main_map(setup)
    result = calibrate_sxdm(bl, tmp_path, setup, etas, pixel, EccentricityModel(), quick=True)
    assert result.signal == "diffraction"
    assert not result.accepted and "mosaic" in result.reason
