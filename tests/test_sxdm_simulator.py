"""Cross-check with the team's simulator (not the accuracy evidence: that is test_sxdm_reduce.py).

The nmc622 preset rendered by ``SimulatedBeamline.sxdm_stack`` must reduce to its own truth
maps: this catches convention drift between the simulator and the reduction.
"""

import numpy as np
import pytest

simulators = pytest.importorskip("braggscope.simulators.beamline")

from braggscope.analysis.sxdm import reduce_map
from braggscope.analysis.sxdm.maps import tilt_angles
from braggscope.core.config import load_config


@pytest.mark.slow
def test_nmc622_simulation_reduces_to_its_truth():
    bl = simulators.SimulatedBeamline.from_config(load_config(), sample="nmc622", seed=0)
    s = bl.bragg_setup()
    (cx, cy), ext = s["center_um"], s["extent_um"]
    x = np.linspace(cx - ext, cx + ext, 18)
    y = np.linspace(cy - ext, cy + ext, 18)
    etas = np.linspace(s["eta_start"], s["eta_stop"], s["eta_num"])
    row, col = (int(v) for v in bl.cch)
    maps = reduce_map(bl.sxdm_stack(x, y, etas, crop=(row - 40, row + 40, col - 40, col + 40)), progress=False)
    truth = bl.sample.truth_maps(x, y)
    mask = maps.mask.values & truth["support"]
    assert mask.sum() >= 0.9 * truth["support"].sum()
    d = truth["d_spacing"]
    strain = (d - np.nanmean(d[mask])) / np.nanmean(d[mask]) * 1e6
    assert np.sqrt(np.nanmean((maps.strain.values - strain)[mask] ** 2)) < 40
    q = np.stack([truth["qx"], truth["qy"], truth["qz"]], -1)
    alt, azi = tilt_angles(q, mask)
    assert np.sqrt(np.nanmean((maps.tilt_altitude.values - alt)[mask] ** 2)) < 0.04
    big = mask & (alt > 0.08)
    assert big.sum() > 10
    assert np.sqrt(np.mean((((maps.tilt_azimuth.values - azi) + 180) % 360 - 180)[big] ** 2)) < 5
