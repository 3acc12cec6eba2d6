"""braggscope.core.geometry against xrayutilities and the paper's numbers."""

import numpy as np
import pytest

xu = pytest.importorskip("xrayutilities")

from braggscope import geometry as geo
from braggscope.core.geometry import Geometry


def _xu_qconv(energy_kev, distance_m, pixel_m, cch, shape):
    qconv = xu.experiment.QConversion(["y-", "z-"], ["z-", "y-"], [1, 0, 0])
    qconv.init_area("z-", "y+", cch1=cch[0], cch2=cch[1], Nch1=shape[0], Nch2=shape[1],
                    distance=distance_m, pwidth1=pixel_m, pwidth2=pixel_m)
    return qconv


def test_wavelength_closed_form():
    assert geo.wavelength(12.398419843320026) == pytest.approx(1.0, rel=1e-15)
    # the paper: 8.33 keV is 1.48 A
    assert geo.wavelength(8.33) == pytest.approx(1.48, abs=0.01)
    assert geo.energy_from_wavelength(geo.wavelength(13.0)) == pytest.approx(13.0)


def test_wavelength_matches_xrayutilities():
    for e in (5.0, 8.33, 13.0, 20.0):
        assert geo.wavelength(e) == pytest.approx(xu.en2lam(e * 1000.0), rel=1e-6)


def test_bragg_angle_nmc622_003_paper():
    # NMC622 003 with c = 14.22 A at 8.33 keV
    d = 14.22 / 3
    theta = geo.bragg_angle(d, 8.33)
    assert theta == pytest.approx(np.degrees(np.arcsin(geo.wavelength(8.33) / (2 * d))), rel=1e-12)
    assert 8.9 < theta < 9.1
    with pytest.raises(ValueError, match="unreachable"):
        geo.bragg_angle(0.5, 8.33)
    with pytest.raises(ValueError, match="d_spacing"):
        geo.bragg_angle(-1.0, 8.33)


@pytest.mark.parametrize("seed", range(6))
def test_q_frame_matches_xrayutilities_random(seed):
    rng = np.random.default_rng(seed)
    energy = rng.uniform(7, 20)
    distance = rng.uniform(0.3, 2.0)
    pixel = 55e-6
    shape = (64, 48)
    cch = (rng.uniform(0, 64), rng.uniform(0, 48))
    eta, phi, nu, delta = rng.uniform(-5, 60), rng.uniform(-90, 90), rng.uniform(-20, 20), rng.uniform(0, 90)
    g = Geometry(energy, distance, pixel, cch)
    q = g.q_frame(shape, eta=eta, delta=delta, nu=nu, phi=phi)
    qconv = _xu_qconv(energy, distance, pixel, cch, shape)
    qx, qy, qz = qconv.area(eta, phi, nu, delta, wl=geo.wavelength(energy))
    ref = np.stack([qx, qy, qz])
    assert q.shape == (3,) + shape
    np.testing.assert_allclose(q, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())


def test_symmetric_reflection_gives_q_along_z():
    energy, d = 8.33, 14.22 / 3
    theta = geo.bragg_angle(d, energy)
    g = Geometry(energy, 0.5, 55e-6, (256, 256))
    q = g.q_pixels(256, 256, eta=theta, delta=2 * theta)
    np.testing.assert_allclose(q, [0, 0, 2 * np.pi / d], atol=1e-12)
    row, col, mismatch = g.pixel_of_q([0, 0, 2 * np.pi / d], eta=theta, delta=2 * theta)
    assert (row, col) == pytest.approx((256, 256), abs=1e-9)
    assert mismatch == pytest.approx(0, abs=1e-12)


def test_pixel_of_q_inverts_q_pixels():
    g = Geometry(13.0, 1.4, 55e-6, (250.3, 260.7))
    q = g.q_pixels(100.25, 400.5, eta=20.0, delta=35.0, nu=3.0, phi=10.0)
    row, col, mismatch = g.pixel_of_q(q, eta=20.0, delta=35.0, nu=3.0, phi=10.0)
    assert (row, col) == pytest.approx((100.25, 400.5), abs=1e-6)
    assert mismatch < 1e-9


def test_oversampling_paper_lmno():
    # 13 keV, 1.4 m, 55 um pixels, 800 nm LMNO 004 (a = 8.17 A)
    sigma = geo.oversampling_detector(13.0, 1.4, 55e-6, 800e-9)
    assert sigma == pytest.approx(3.03, abs=0.01)
    d004 = 8.17 / 4
    step = geo.rocking_step(d004, 800e-9, oversampling=2.0)
    assert step == pytest.approx(0.0073, abs=0.00005)
    assert geo.oversampling_rocking(d004, 800e-9, step) == pytest.approx(2.0, rel=1e-12)
    # >= 55 frames over the paper's 0.4 deg rocking range
    assert 0.4 / step >= 54
    with pytest.raises(ValueError, match="step_deg"):
        geo.oversampling_rocking(d004, 800e-9, 0.0)


def test_crop_shifts_cch():
    g = Geometry(8.33, 0.5, 55e-6, (256, 256))
    full = g.q_frame((512, 512), eta=9, delta=18)
    cropped = g.crop(100, 50).q_frame((200, 300), eta=9, delta=18)
    np.testing.assert_allclose(cropped, full[:, 100:300, 50:350], rtol=1e-12)


def test_geometry_rejects_bad_input():
    with pytest.raises(ValueError, match="energy_kev"):
        Geometry(-1, 0.5, 55e-6, (0, 0))
    with pytest.raises(ValueError, match="distance_m"):
        Geometry(8, 0, 55e-6, (0, 0))


def test_eccentricity_fit_recovers_model():
    from braggscope.core.eccentricity import EccentricityModel, fit_eccentricity

    truth = EccentricityModel(eta0=5.0, x=(0.8, -0.01), y=(-0.3, 0.004))
    eta = np.linspace(0, 12, 7)
    dx, dy = truth.offset(eta)
    fit = fit_eccentricity(eta, 10 + dx - truth.offset(0.0)[0], 20 + dy - truth.offset(0.0)[1], eta0=5.0)
    assert fit.x == pytest.approx(truth.x, abs=1e-9)
    assert fit.y == pytest.approx(truth.y, abs=1e-9)
    assert EccentricityModel.from_dict(truth.to_dict()) == truth
    with pytest.raises(ValueError, match="distinct eta"):
        fit_eccentricity([1, 1, 1], [0, 0, 0], [0, 0, 0])


def test_eccentricity_slope_standard_error_matches_monte_carlo():
    from braggscope.core.eccentricity import fit_eccentricity

    rng = np.random.default_rng(3)
    eta = np.linspace(21.33, 21.41, 5)       # a narrow calibration span, as for a weak BCDI crystal
    noise = 0.05                             # um of position noise per measurement
    slopes, stderrs = [], []
    for _ in range(400):
        fit = fit_eccentricity(eta, 0.2 * (eta - eta[0]) + rng.normal(0, noise, 5),
                               rng.normal(0, noise, 5), quadratic=False)
        slopes.append(fit.x[0])
        stderrs.append(fit.extra["x_slope_stderr_um_per_deg"])
    # closed form for ordinary least squares: sigma / sqrt(sum((eta - mean)^2))
    expected = noise / np.sqrt(np.sum((eta - eta.mean()) ** 2))
    assert np.std(slopes) == pytest.approx(expected, rel=0.15)
    assert np.sqrt(np.mean(np.square(stderrs))) == pytest.approx(expected, rel=0.15)
