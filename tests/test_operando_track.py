"""The operando tracking's estimators against the simulator's forward model (in process, no EPICS).

* :func:`~braggscope.plans.operando_track.delta_for_row` with :func:`~.peak_row`: the detector angle that
  brings a peak seen on some row to the ROI window's centre row, checked by rendering the frames again at
  that angle (the forward model's geometry, not the formula's);
* :func:`~braggscope.plans.operando_track.profile_centre` with ``method="edges"``: the particle's centre
  from two coarse fluorescence lines, against the crystal's own centre.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from braggscope.plans import operando_track
from braggscope.plans.operando_track import delta_for_row, peak_row, profile_centre

pytest.importorskip("braggscope.simulators.beamline")


@pytest.fixture(scope="module")
def beamline(tmp_path_factory):
    from braggscope.app.beamline.simulator import scratch_config
    from braggscope.simulators.beamline import SimulatedBeamline

    cfg = scratch_config(tmp_path_factory.mktemp("track"), frame_size=128, pv_prefix="TRK:")
    return SimulatedBeamline.from_config(cfg)


def _rows(beamline, delta, etas, cx, cy):
    """The rocking peak's row with the detector at ``delta`` (expected frames over the particle, ROI columns
    48:80, rows 16:112: three times the window's height)."""
    image = sum(beamline.forward.expected_frame(*beamline.beam_on_sample(cx + dx, cy, e), e, delta)
                for e in etas for dx in (-0.4, 0.0, 0.4))
    return peak_row(image[16:112, 48:80]) + 16


@pytest.mark.parametrize("offset", [-0.15, -0.08, 0.05, 0.12])
def test_delta_for_row_brings_the_peak_to_the_window_centre(beamline, offset):
    setup = beamline.bragg_setup()
    eta0, delta0 = setup["eta"], setup["delta"]
    cx, cy = beamline.apparent_center(eta0)
    etas = np.linspace(eta0 - 0.1, eta0 + 0.25, 8)
    seen = _rows(beamline, delta0 + offset, etas, cx, cy)
    assert abs(seen - 64.0) > 0.5 * abs(offset) / np.degrees(55e-6 / 0.5)  # the peak is off the centre row
    corrected = delta_for_row(delta0 + offset, seen, 64.0, cch_row=beamline.cch[0], distance_m=beamline.distance_m,
                              pixel_m=beamline.pixel_m)
    assert abs(_rows(beamline, corrected, etas, cx, cy) - 64.0) < 0.5  # measured 0.0-0.1 px
    assert abs(corrected - delta0) < 0.005  # the Bragg condition's 2 theta (measured 0.0005-0.0016 deg)


def test_the_particle_centre_from_two_coarse_lines(beamline):
    """11-point fluorescence lines over +-2 um from a guess up to 0.8 um off: the half-height crossings' midpoint
    within 0.2 um of the crystal's centre (Poisson counts at 5 ms; measured rms 0.07 um, at most 0.17)."""
    rng = np.random.default_rng(7)
    eta = beamline.bragg_setup()["eta"]
    cx, cy = beamline.apparent_center(eta)
    errors = []
    for _ in range(30):
        gx, gy = cx + rng.uniform(-0.8, 0.8), cy + rng.uniform(-0.8, 0.8)
        xs = np.linspace(gx - 2, gx + 2, 11)
        counts = [rng.poisson(beamline.expected_fluorescence({"pix": x, "piy": gy, "eta": eta}, 0.005)) for x in xs]
        x = profile_centre(xs, counts, method="edges")
        ys = np.linspace(gy - 2, gy + 2, 11)
        counts = [rng.poisson(beamline.expected_fluorescence({"pix": x.centre, "piy": y, "eta": eta}, 0.005))
                  for y in ys]
        y = profile_centre(ys, counts, method="edges")
        assert x.found and y.found and not (x.at_edge or y.at_edge)
        errors.append((x.centre - cx, y.centre - cy))
    assert np.abs(errors).max() < 0.2, np.abs(errors).max(axis=0)


def test_doctests():
    assert doctest.testmod(operando_track).failed == 0
