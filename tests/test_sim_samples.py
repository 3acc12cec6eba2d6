"""Sample presets: physical ranges from the paper, ground-truth maps, seeds."""

import numpy as np
import pytest

from braggscope.core.geometry import bragg_angle
from braggscope.simulators.samples import SAMPLE_NAMES, BCDIParticle, Crystallite, make_sample, tilt_rotation

GRID = np.arange(46.0, 54.0, 0.05)


def test_tilt_rotation_closed_form():
    # +tilt_y leans Q towards +x; +tilt_x leans it towards -y
    q = tilt_rotation(0.0, 30.0) @ [0, 0, 1]
    np.testing.assert_allclose(q, [0.5, 0, np.sqrt(3) / 2], atol=1e-12)
    q = tilt_rotation(30.0, 0.0) @ [0, 0, 1]
    np.testing.assert_allclose(q, [0, -0.5, np.sqrt(3) / 2], atol=1e-12)


def test_nmc622_preset_resembles_the_paper():
    s = make_sample("nmc622", seed=0)
    (c,) = s.crystallites
    assert 14.2 < 3 * c.d_spacing < 14.24
    maps = s.truth_maps(GRID, GRID)
    sup = maps["support"]
    area = sup.sum() * 0.05**2
    width = np.ptp(np.nonzero(sup.any(axis=0))[0]) * 0.05
    assert 2.0 <= width <= 3.0 and area > 2.0
    strain = (maps["d_spacing"][sup] - maps["d_spacing"][sup].mean()) / maps["d_spacing"][sup].mean()
    assert 50e-6 < strain.std() < 1000e-6
    tilt = np.hypot(maps["tilt_x"][sup], maps["tilt_y"][sup])
    assert 0.3 < tilt.max() < 0.65
    # tilt rises towards the edges
    dist = c.edge_distance(*np.meshgrid(GRID, GRID))[sup]
    assert tilt[dist < 0.15].mean() > tilt[dist > 0.6].mean() + 0.1
    assert 2 <= len(c.domains) <= 3
    # Q from the maps has |Q| = 2 pi / d
    q = np.stack([maps["qx"], maps["qy"], maps["qz"]])[:, sup]
    np.testing.assert_allclose(np.linalg.norm(q, axis=0), 2 * np.pi / maps["d_spacing"][sup], rtol=1e-12)


def test_lno_cluster_preset():
    s = make_sample("lno_cluster", seed=2)
    cs = np.array([3 * c.d_spacing for c in s.crystallites])
    assert cs.min() == pytest.approx(14.04, abs=0.01) and cs.max() == pytest.approx(14.15, abs=0.01)
    mis = [max(abs(o) for o in c.orientation_deg) for c in s.crystallites]
    assert max(mis) > 1.0 and min(mis) < 0.35
    # 2theta differences between grains are resolvable (> 0.05 deg at 8.33 keV)
    tth = [2 * bragg_angle(c.d_spacing, 8.33) for c in s.crystallites]
    assert np.ptp(tth) > 0.1


def test_lmno_particle_preset():
    p = make_sample("lmno_bcdi", seed=0)
    assert isinstance(p, BCDIParticle)
    assert p.d_spacing == pytest.approx(8.17 / 4)
    axes, rho, u = p.voxel_grid()
    assert rho.shape == tuple(a.size for a in axes)
    # {111} facets: occupancy symmetric under the cubic mirror and an octahedral cross-section
    np.testing.assert_array_equal(rho, rho[::-1])
    np.testing.assert_array_equal(rho, np.swapaxes(rho, 0, 1))
    extent = np.ptp(axes[0][rho.any(axis=(1, 2))]) + 200
    assert 500 <= extent / 10 <= 800  # nm (800 nm octahedron truncated at 0.8)
    strain = np.gradient(u, axes[2], axis=2)[rho > 0]
    assert np.abs(strain).max() < 5e-3


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_presets_are_deterministic(name):
    a, b, c = make_sample(name, 3), make_sample(name, 3), make_sample(name, 4)
    assert a.to_dict() == b.to_dict()
    assert a.to_dict() != c.to_dict()


def test_bad_inputs_named():
    with pytest.raises(ValueError, match="sample must be one of"):
        make_sample("quartz")
    with pytest.raises(ValueError, match="d_spacing"):
        Crystallite("x", (0, 0), -1.0)
    with pytest.raises(ValueError, match="shape"):
        BCDIParticle(shape="cone")
