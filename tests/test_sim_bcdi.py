"""BCDI forward model: accuracy against a direct sum, physical sign, fringe
spacing and oversampling (detector plane and rocking direction)."""

import numpy as np
import pytest

from braggscope.core.geometry import Geometry, bragg_angle, oversampling_detector, oversampling_rocking, wavelength
from braggscope.simulators.bcdi_forward import BCDIForwardModel
from braggscope.simulators.beamline import SimulatedBeamline
from braggscope.simulators.samples import BCDIParticle, lmno_particle

E, P = 13.0, 55e-6


def _direct(model, q):
    """Independent reference: sum over voxels of rho exp(i|G|u) exp(+i (q - G).r)."""
    x, y, z = np.meshgrid(*model.axes, indexing="ij")
    m = model.rho > 0
    r = np.stack([x[m], y[m], z[m]])
    f = model.rho[m] * np.exp(1j * np.linalg.norm(model.g) * model.u[m])
    dq = q - model.g[:, None]
    return np.exp(1j * (dq.T @ r)) @ f / model.rho.sum()


@pytest.fixture(scope="module")
def lmno_model():
    return BCDIForwardModel(lmno_particle(seed=1))


def test_amplitude_matches_direct_sum(lmno_model):
    rng = np.random.default_rng(0)
    q = lmno_model.g[:, None] + rng.normal(0, 0.004, (3, 300))
    a = lmno_model.amplitude(q)
    ref = _direct(lmno_model, q)
    assert np.abs(ref).max() > 0.05
    # complex amplitudes (phase included) agree to 1e-3 of the Bragg peak
    assert np.abs(a - ref).max() < 1e-3


def test_physical_sign_expansion_moves_peak_to_smaller_q():
    # uniform expansion eps: d grows, so the Bragg peak must move to |Q| = |G| / (1 + eps)
    eps = 1e-3
    p = BCDIParticle(shape="box", box_m=(400e-9, 400e-9, 400e-9), eps_core=eps, eps_shell=eps, voxel_m=20e-9)
    m = BCDIForwardModel(p)
    qz = m.g[2] + np.linspace(-0.006, 0.006, 1201)
    inten = m.intensity(np.stack([np.zeros_like(qz), np.zeros_like(qz), qz]))
    q_peak = qz[np.argmax(inten)]
    assert q_peak - m.g[2] == pytest.approx(m.g[2] / (1 + eps) - m.g[2], abs=2e-5)
    assert q_peak < m.g[2]


def _box_model(lx=500e-9, ly=400e-9, lz=300e-9):
    return BCDIForwardModel(BCDIParticle(shape="box", box_m=(lx, ly, lz), eps_shell=0.0, voxel_m=20e-9))


def _minima_spacing(profile):
    """Mean spacing (samples) between local minima of a 1-D profile (sub-sample by parabola)."""
    pos = []
    for i in range(1, profile.size - 1):
        if profile[i] < profile[i - 1] and profile[i] <= profile[i + 1]:
            a, b, c = np.log(profile[i - 1 : i + 2] + 1e-12)
            den = a - 2 * b + c
            pos.append(i + (0.5 * (a - c) / den if den != 0 else 0.0))
    return float(np.mean(np.diff(pos))), len(pos)


def test_fringe_spacing_in_detector_plane():
    ly = 400e-9
    m = _box_model(ly=ly)
    d = m.particle.d_spacing
    theta = bragg_angle(d, E)
    g = Geometry(E, 1.4, P, (256.0, 256.0))
    frame = m.frame(g, (512, 512), theta, 2 * theta)
    r, c = np.unravel_index(np.argmax(frame), frame.shape)
    assert (r, c) == (256, 256)
    profile = frame[r, c - 45 : c + 46]  # columns run along sample y at nu = 0
    spacing, n = _minima_spacing(profile)
    expected = wavelength(E) * 1e-10 * 1.4 / (ly * P)
    assert expected == pytest.approx(oversampling_detector(E, 1.4, P, ly))
    assert n >= 8
    assert spacing == pytest.approx(expected, rel=0.1)


def test_too_short_distance_aliases_detector_fringes():
    ly = 400e-9
    m = _box_model(ly=ly)
    theta = bragg_angle(m.particle.d_spacing, E)
    # distance giving exactly one pixel per fringe: every pixel but the centre sits on a zero
    dist = ly * P / (wavelength(E) * 1e-10)
    assert oversampling_detector(E, dist, P, ly) == pytest.approx(1.0)
    frame = m.frame(Geometry(E, dist, P, (256.0, 256.0)), (512, 512), theta, 2 * theta)
    profile = frame[256, 256 - 8 : 256 + 9]
    assert profile[8] == pytest.approx(1.0, rel=1e-3)
    assert np.delete(profile, 8).max() < 0.02  # fringes invisible: aliased
    # at 2x oversampling the neighbours carry the fringe maxima instead
    frame2 = m.frame(Geometry(E, 2 * dist, P, (256.0, 256.0)), (512, 512), theta, 2 * theta)
    p2 = frame2[256, 256 - 8 : 256 + 9]
    assert p2[[7, 9]].min() > 0.3 and p2[[6, 10]].max() < 0.02


def test_rocking_oversampling():
    lx = 500e-9
    m = _box_model(lx=lx)
    d = m.particle.d_spacing
    theta = bragg_angle(d, E)
    g = Geometry(E, 1.4, P, (256.0, 256.0))

    def rocking(step_deg, n):
        etas = theta + step_deg * np.arange(-n, n + 1)
        return np.array([m.frame(g, (512, 512), e, 2 * theta)[256, 256] for e in etas])

    # fine sampling (sigma_rock = 4): fringe period along eta is d / Lx radians
    step_fine = np.degrees(d * 1e-10 / (lx * 4))
    assert oversampling_rocking(d, lx, step_fine) == pytest.approx(4.0)
    spacing, n = _minima_spacing(rocking(step_fine, 24))
    assert n >= 8
    assert spacing == pytest.approx(4.0, rel=0.1)
    # sigma_rock = 1: every frame but the Bragg one falls on a zero (aliased)
    step_coarse = np.degrees(d * 1e-10 / lx)
    assert oversampling_rocking(d, lx, step_coarse) == pytest.approx(1.0)
    coarse = rocking(step_coarse, 4)
    assert coarse[4] == pytest.approx(1.0, rel=1e-3)
    assert np.delete(coarse, 4).max() < 0.02


def test_beamline_bcdi_frames():
    bl = SimulatedBeamline("lmno_bcdi", seed=4, bcdi_peak_rate=1e7, background_rate=0.0, distance_m=1.4,
                           energy_kev=E)
    s = bl.bragg_setup()
    assert s["reflection"] == "004"
    assert s["d_spacing"] == pytest.approx(8.17 / 4)
    step = (s["eta_stop"] - s["eta_start"]) / (s["eta_num"] - 1)
    assert oversampling_rocking(s["d_spacing"], s["size_m"], step) >= 2.9
    pos = {"pix": s["center_um"][0], "piy": s["center_um"][1], "eta": s["eta"], "delta": s["delta"]}
    f = bl.render(pos, 0.01)
    assert f.dtype == np.uint32 and f.shape == (512, 512)
    assert 1e4 < f.max() < 401540  # not saturated
    expected = 1e5 * bl.forward.frame(bl.geometry(), (512, 512), s["eta"], s["delta"])
    assert f.sum() == pytest.approx(expected.sum(), rel=0.01)
    # beam moved 3 um away: the particle is no longer illuminated
    far = dict(pos, pix=pos["pix"] + 3.0)
    assert bl.render(far, 0.01).sum() < 1e-3 * f.sum()
    truth = bl.truth()["object"]
    assert truth["rho"].shape == truth["u_angstrom"].shape
    assert truth["voxel_nm"] == pytest.approx(20.0)


def test_rocking_scan_photon_budget_and_noise(lmno_model):
    d = lmno_model.particle.d_spacing
    theta = bragg_angle(d, E)
    g = Geometry(E, 1.4, P, (64.0, 64.0))
    etas = theta + np.linspace(-0.05, 0.05, 9)
    expected = np.stack([lmno_model.frame(g, (128, 128), e, 2 * theta) for e in etas])
    a = lmno_model.rocking_scan(g, (128, 128), etas, 2 * theta, peak_counts=1e4, seed=0)
    b = lmno_model.rocking_scan(g, (128, 128), etas, 2 * theta, peak_counts=1e4, seed=0)
    assert a.dtype == np.uint32 and a.shape == (9, 128, 128)
    np.testing.assert_array_equal(a, b)
    assert a.sum() == pytest.approx(1e4 * expected.sum(), rel=0.01)
    # relative noise grows when the photon budget shrinks
    low = lmno_model.rocking_scan(g, (128, 128), etas, 2 * theta, peak_counts=10, seed=1).astype(float)
    m = expected > 0.05
    rel_low = np.std(low[m] / (10 * expected[m]) - 1)
    rel_high = np.std(a[m] / (1e4 * expected[m]) - 1)
    assert rel_low > 10 * rel_high
    with pytest.raises(ValueError, match="peak_counts"):
        lmno_model.rocking_scan(g, (128, 128), etas, 2 * theta, peak_counts=-1)
