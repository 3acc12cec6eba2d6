"""SXDM forward model: peak positions against closed forms and xrayutilities,
eccentricity drift, counting statistics, saturation, determinism."""

import threading

import numpy as np
import pytest
from scipy.optimize import brentq

from braggscope.core.config import load_config
from braggscope.core.eccentricity import fit_eccentricity
from braggscope.core.geometry import bragg_angle, sample_rotation, wavelength
from braggscope.simulators.beamline import SimulatedBeamline
from braggscope.simulators.detector import expand_maxipix_gaps
from braggscope.simulators.samples import Crystallite, SXDMSample
from braggscope.simulators.sxdm_forward import SXDMForwardModel

E, D, P, CCH = 8.33, 0.5, 55e-6, (256.0, 256.0)
D_SPACING = 14.22 / 3


def _crystal(d=D_SPACING, tilt=(0.0, 0.0), orientation=(0.0, 0.0), sigma_ang=0.02, sigma_rad=None,
             semi=(0.5, 0.5), center=(50.0, 50.0)):
    """A plain ellipse: no strain, uniform tilt, isotropic peak width."""
    sigma_rad = np.radians(sigma_ang) if sigma_rad is None else sigma_rad
    c = Crystallite("test", center, d, semi_axes_um=semi, thickness_um=1.0, edge_soft_um=0.05,
                    orientation_deg=orientation, domains=np.array([[0.0, 0.0, tilt[0], tilt[1]]]),
                    sigma_radial=sigma_rad, sigma_angular_deg=sigma_ang)
    return SXDMSample("test", (c,), "003", d)


def _model(sample, **kw):
    kw.setdefault("background_rate", 0.0)
    return SXDMForwardModel(sample, shape=(512, 512), distance_m=D, pixel_m=P, cch=CCH, seed=0, **kw)


def _peak_com(frame, half=12):
    r, c = np.unravel_index(np.argmax(frame), frame.shape)
    win = frame[r - half : r + half + 1, c - half : c + half + 1]
    rr, cc = np.mgrid[r - half : r + half + 1, c - half : c + half + 1]
    return float((win * rr).sum() / win.sum()), float((win * cc).sum() / win.sum())


def _bragg_eta(q, k, guess):
    """eta (deg) with |R(eta) q + k x| = k (independent root find)."""
    def f(eta):
        kf = sample_rotation(eta, 0.0) @ q + np.array([k, 0, 0])
        return np.linalg.norm(kf) - k
    return brentq(f, guess - 5, guess + 5, xtol=1e-12)


def _xu_pixel(q_target, eta, nu, delta):
    """Sub-pixel position of the Q closest to q_target, from xrayutilities."""
    xu = pytest.importorskip("xrayutilities")
    qconv = xu.experiment.QConversion(["y-", "z-"], ["z-", "y-"], [1, 0, 0])
    qconv.init_area("z-", "y+", cch1=CCH[0], cch2=CCH[1], Nch1=512, Nch2=512,
                    distance=D, pwidth1=P, pwidth2=P)
    qx, qy, qz = qconv.area(eta, 0.0, nu, delta, wl=wavelength(E))
    d2 = (qx - q_target[0]) ** 2 + (qy - q_target[1]) ** 2 + (qz - q_target[2]) ** 2
    r, c = np.unravel_index(np.argmin(d2), d2.shape)
    # paraboloid fit of the squared distance on the 5x5 neighbourhood
    rr, cc = np.mgrid[-2:3, -2:3]
    a = np.column_stack([np.ones(25), rr.ravel(), cc.ravel(), rr.ravel() ** 2, cc.ravel() ** 2,
                         (rr * cc).ravel()])
    coef, *_ = np.linalg.lstsq(a, d2[r - 2 : r + 3, c - 2 : c + 3].ravel(), rcond=None)
    _, b1, b2, a11, a22, a12 = coef
    h = np.array([[2 * a11, a12], [a12, 2 * a22]])
    dr, dc = np.linalg.solve(h, [-b1, -b2])
    return r + dr, c + dc


@pytest.mark.parametrize("orientation,offset", [((0.0, 0.0), (0.4, -0.3)), ((0.7, -1.2), (-0.5, 0.6))])
def test_peak_lands_where_geometry_and_xrayutilities_predict(orientation, offset):
    sample = _crystal(orientation=orientation)
    m = _model(sample)
    q = sample.crystallites[0].q_nominal()
    k = 2 * np.pi / wavelength(E)
    eta = _bragg_eta(q, k, bragg_angle(D_SPACING, E))
    delta0, nu0 = m.geometry(E).detector_angles_for(q, eta)
    delta, nu = delta0 + offset[0], nu0 + offset[1]  # peak lands well off the centre pixel
    frame = m.expected_frame(50.0, 50.0, eta, delta, nu, 0.0, E, 1.0)
    row, col = _peak_com(frame)
    prow, pcol, mismatch = m.geometry(E).pixel_of_q(q, eta, delta=delta, nu=nu)
    assert mismatch < 1e-9
    assert abs(prow - CCH[0]) > 20 and abs(pcol - CCH[1]) > 20
    assert (row, col) == pytest.approx((prow, pcol), abs=0.5)
    xr, xc = _xu_pixel(q, eta, nu, delta)
    assert (row, col) == pytest.approx((xr, xc), abs=0.5)


def test_d_spacing_change_moves_peak_by_two_delta_theta():
    theta0 = bragg_angle(D_SPACING, E)
    strain = 2e-3
    d1 = D_SPACING * (1 + strain)
    theta1 = bragg_angle(d1, E)
    f0 = _model(_crystal()).expected_frame(50, 50, theta0, 2 * theta0, 0, 0, E, 1.0)
    f1 = _model(_crystal(d=d1)).expected_frame(50, 50, theta1, 2 * theta0, 0, 0, E, 1.0)
    r0, c0 = _peak_com(f0)
    r1, c1 = _peak_com(f1)
    # closed form: 2theta grows by 2 dtheta, with dtheta = -tan(theta) dd/d (small strain);
    # a larger 2theta moves the peak up (rows run along -z)
    dtheta = -np.tan(np.radians(theta0)) * strain
    expected_rows = -D * np.tan(2 * dtheta) / P
    assert r1 - r0 == pytest.approx(expected_rows, rel=0.03)
    assert abs(expected_rows) > 4
    assert c1 == pytest.approx(c0, abs=0.05)
    # exact: from the two Bragg angles
    assert r1 - r0 == pytest.approx(-D * np.tan(np.radians(2 * (theta1 - theta0))) / P, rel=0.01)


def test_tilt_about_x_moves_peak_across_columns():
    tau = 0.3
    theta = bragg_angle(D_SPACING, E)
    q_abs, k = 2 * np.pi / D_SPACING, 2 * np.pi / wavelength(E)
    # closed form: Q = |Q| (0, -sin tau, cos tau) is on the Bragg condition at sin(eta) = sin(theta) / cos(tau)
    eta = np.degrees(np.arcsin(np.sin(np.radians(theta)) / np.cos(np.radians(tau))))
    f0 = _model(_crystal()).expected_frame(50, 50, theta, 2 * theta, 0, 0, E, 1.0)
    f1 = _model(_crystal(tilt=(tau, 0.0))).expected_frame(50, 50, eta, 2 * theta, 0, 0, E, 1.0)
    r0, c0 = _peak_com(f0)
    r1, c1 = _peak_com(f1)
    expected_cols = -(q_abs * np.sin(np.radians(tau)) / k) * D / P  # k_f,y = Q_y, columns along +y
    assert c1 - c0 == pytest.approx(expected_cols, abs=0.3)
    assert abs(expected_cols) > 10


def test_tilt_about_y_shifts_rocking_curve_by_tilt():
    tau = 0.25
    theta = bragg_angle(D_SPACING, E)
    etas = theta + np.linspace(-0.4, 0.7, 111)
    m0, m1 = _model(_crystal()), _model(_crystal(tilt=(0.0, tau)))
    i0 = np.array([m0.expected_frame(50, 50, e, 2 * theta, 0, 0, E, 1.0).sum() for e in etas])
    i1 = np.array([m1.expected_frame(50, 50, e, 2 * theta, 0, 0, E, 1.0).sum() for e in etas])
    com0 = (i0 * etas).sum() / i0.sum()
    com1 = (i1 * etas).sum() / i1.sum()
    # closed form: Q leaning towards +x by tau is on the Bragg condition at eta = theta + tau
    assert com0 == pytest.approx(theta, abs=0.003)
    assert com1 - com0 == pytest.approx(tau, abs=0.003)


def test_eccentricity_drift_reproduced_by_raster_center_of_mass():
    truth_drift = {"eta0": 9.0, "x": [0.6, 0.1], "y": [-0.4, 0.0]}
    sample = _crystal(sigma_ang=0.8, semi=(0.4, 0.3))  # broad rocking curve: diffracts over +-2 deg
    bl = SimulatedBeamline(sample, eccentricity=truth_drift, peak_rate=2e6, background_rate=100.0, seed=3)
    theta = bragg_angle(D_SPACING, E)
    etas = theta + np.array([-1.5, -0.75, 0.0, 0.75, 1.5])
    xs = 50.0 + np.arange(-2.0, 2.01, 0.2)
    ys = 50.0 + np.arange(-2.0, 2.01, 0.2)
    bg = 100.0 * 0.01
    coms = []
    for eta in etas:
        m = np.zeros((ys.size, xs.size))
        for j, y in enumerate(ys):
            for i, x in enumerate(xs):
                f = bl.render({"pix": x, "piy": y, "eta": eta, "delta": 2 * theta, "nu": 0.0,
                               "phi": 0.0, "energy": E}, 0.01)
                m[j, i] = f[176:337, 176:337].sum() - bg * 161 * 161  # ROI around the peak
        m = np.clip(m, 0, None)
        assert m.max() > 50 * np.sqrt(bg * 161 * 161)
        coms.append(((m.sum(0) * xs).sum() / m.sum(), (m.sum(1) * ys).sum() / m.sum()))
    coms = np.array(coms)
    dx, dy = bl.eccentricity.offset(etas)
    np.testing.assert_allclose(coms[:, 0] - 50.0, dx, atol=0.03)
    np.testing.assert_allclose(coms[:, 1] - 50.0, dy, atol=0.03)
    fit = fit_eccentricity(etas, coms[:, 0], coms[:, 1], eta0=9.0)
    assert fit.x[0] == pytest.approx(0.6, abs=0.03)
    assert fit.x[1] == pytest.approx(0.1, abs=0.03)
    assert fit.y[0] == pytest.approx(-0.4, abs=0.03)


def test_background_is_poisson():
    bl = SimulatedBeamline(_crystal(), background_rate=150.0, seed=1)
    theta = bragg_angle(D_SPACING, E)
    pos = {"pix": 10.0, "piy": 10.0, "eta": theta, "delta": 2 * theta}  # beam off the crystal
    frames = np.stack([bl.render(pos, 0.01) for _ in range(6)]).astype(float)
    lam = 1.5
    assert frames.mean() == pytest.approx(lam, rel=0.01)
    assert frames.var() == pytest.approx(lam, rel=0.02)
    # P(0) of a Poisson(1.5) distribution
    assert (frames == 0).mean() == pytest.approx(np.exp(-lam), rel=0.02)
    f2 = bl.render(pos, 0.04).astype(float)  # counts scale with exposure
    assert f2.mean() == pytest.approx(4 * lam, rel=0.01)
    assert not np.array_equal(frames[0], frames[1])


def test_peak_counts_are_poisson_around_expected():
    sample = _crystal()
    bl = SimulatedBeamline(sample, peak_rate=5e5, background_rate=100.0, seed=2)
    theta = bragg_angle(D_SPACING, E)
    expected = bl.forward.expected_frame(50.0, 50.0, theta, 2 * theta, 0, 0, E, 0.01)
    r, c = np.unravel_index(np.argmax(expected), expected.shape)
    pos = {"pix": 50.0, "piy": 50.0, "eta": theta, "delta": 2 * theta}
    dx, dy = bl.eccentricity.offset(theta)
    pos["pix"] += dx
    pos["piy"] += dy
    stack = np.stack([bl.render(pos, 0.01)[r - 3 : r + 4, c - 3 : c + 4] for _ in range(400)]).astype(float)
    lam = expected[r - 3 : r + 4, c - 3 : c + 4]
    assert lam.max() > 100
    z = (stack.mean(0) - lam) / np.sqrt(lam / 400)
    assert np.abs(z).max() < 4.5
    np.testing.assert_allclose(stack.var(0), lam, rtol=0.35)


def test_saturation_and_dtype():
    bl = SimulatedBeamline(_crystal(), peak_rate=1e12, seed=0)
    theta = bragg_angle(D_SPACING, E)
    dx, dy = bl.eccentricity.offset(theta)
    f = bl.render({"pix": 50 + dx, "piy": 50 + dy, "eta": theta, "delta": 2 * theta}, 0.01)
    assert f.dtype == np.uint32 and f.shape == (512, 512)
    assert f.max() == 401540


def test_render_rejects_bad_input():
    bl = SimulatedBeamline(_crystal(), seed=0)
    with pytest.raises(ValueError, match="delta"):
        bl.render({"pix": 1.0, "piy": 1.0, "eta": 9.0}, 0.01)
    with pytest.raises(ValueError, match="exposure_s"):
        bl.render({"pix": 1.0, "piy": 1.0, "eta": 9.0, "delta": 18.0}, 0.0)
    with pytest.raises(ValueError, match="energy"):
        bl.render({"pix": 1.0, "piy": 1.0, "eta": 9.0, "delta": 18.0, "energy": -1.0}, 0.01)
    with pytest.raises(ValueError, match="sample"):
        SimulatedBeamline("no_such_sample")


def test_from_config_and_determinism():
    cfg = load_config()
    a = SimulatedBeamline.from_config(cfg, seed=5)
    b = SimulatedBeamline.from_config(cfg, seed=5)
    c = SimulatedBeamline.from_config(cfg, seed=6)
    assert a.shape == tuple(cfg["detector.shape"])
    assert a.eccentricity.to_dict()["x"] == list(cfg["simulator.eccentricity.x"])
    assert not a.eccentricity.is_zero
    s = a.bragg_setup()
    pos = {"pix": s["center_um"][0], "piy": s["center_um"][1], "eta": s["eta"], "delta": s["delta"],
           "nu": 0.0, "phi": 0.0, "energy": s["energy_kev"], "piz": 0.0}
    fa, fb, fc = a.render(pos), b.render(pos), c.render(pos)
    np.testing.assert_array_equal(fa, fb)
    assert not np.array_equal(fa, fc)
    assert a.truth()["sample"] == b.truth()["sample"] != c.truth()["sample"]


def test_render_is_thread_safe():
    bl = SimulatedBeamline("nmc622", seed=0)
    s = bl.bragg_setup()
    errors, sums = [], []

    def work(i):
        try:
            for k in range(30):
                f = bl.render({"pix": s["center_um"][0] + 0.05 * k - 0.7, "piy": s["center_um"][1],
                               "eta": s["eta"] + 0.01 * i, "delta": s["delta"]}, 0.01)
                assert f.shape == (512, 512) and f.dtype == np.uint32
                sums.append(int(f.sum()))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(sums) == 120


def test_maxipix_gap_expansion_conserves_counts():
    rng = np.random.default_rng(0)
    f = rng.poisson(7.0, (512, 512)).astype(np.uint32)
    g = expand_maxipix_gaps(f)
    assert g.shape == (516, 516) and g.dtype == np.uint32
    assert int(g.sum()) == int(f.sum())
    np.testing.assert_array_equal(g[:255, :255], f[:255, :255])
    np.testing.assert_array_equal(g[261:, 261:], f[257:, 257:])
    # raw column 255 shared over 255..257 (rows away from the gaps)
    np.testing.assert_array_equal(g[10, 255:258].sum(), f[10, 255])
    assert g[10, 255:258].max() - g[10, 255:258].min() <= 1
    with pytest.raises(ValueError, match="512x512"):
        expand_maxipix_gaps(np.zeros((10, 10)))


@pytest.mark.slow
def test_rocking_scan_center_of_mass_recovers_local_d_and_tilt():
    """End to end: 3D COM in Q of a simulated rocking scan gives the probe-averaged truth."""
    bl = SimulatedBeamline("nmc622", seed=1, background_rate=0.0)
    s = bl.bragg_setup()
    etas = np.arange(s["eta_start"] - 0.2, s["eta_stop"] + 0.2, 0.03)
    geo = bl.geometry()
    crystal = bl.sample.crystallites[0]
    cx, cy = crystal.center_um
    fine = np.arange(-0.3, 0.301, 0.005)
    sigma = bl.forward.sigma_probe
    for px, py in [(cx, cy), (cx + 0.5, cy - 0.3), (cx - 0.4, cy + 0.45)]:
        num, den = np.zeros(3), 0.0
        for eta in etas:
            f = bl.forward.expected_frame(px, py, eta, s["delta"], 0, 0, s["energy_kev"], 1.0)
            q = geo.q_frame(f.shape, eta, s["delta"])
            num += (q * f).reshape(3, -1).sum(1)
            den += f.sum()
        q_com = num / den
        # truth: probe- and thickness-weighted mean of the local Q vectors
        xx, yy = np.meshgrid(px + fine, py + fine)
        w = np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * sigma**2)) * crystal.fields(xx, yy)["thickness_um"]
        q_true = (crystal.q_local(xx, yy) * w).reshape(3, -1).sum(1) / w.sum()
        d_com, d_true = 2 * np.pi / np.linalg.norm(q_com), 2 * np.pi / np.linalg.norm(q_true)
        assert (d_com - d_true) / d_true == pytest.approx(0.0, abs=5e-6)
        angle = np.degrees(np.arccos(np.clip(q_com @ q_true / np.linalg.norm(q_com) / np.linalg.norm(q_true), -1, 1)))
        assert angle < 0.002


def test_sxdm_stack_layout_crop_and_correction():
    truth_drift = {"eta0": 9.0, "x": [1.0, 0.0], "y": [0.0, 0.0]}
    bl = SimulatedBeamline(_crystal(sigma_ang=0.5, semi=(0.3, 0.3)), eccentricity=truth_drift,
                           peak_rate=5e6, background_rate=0.0, seed=0)
    theta = bragg_angle(D_SPACING, E)
    xs = 50 + np.arange(-1.0, 1.01, 0.25)
    ys = 50 + np.arange(-0.5, 0.51, 0.25)
    etas = theta + np.array([-0.6, 0.6])
    crop = (200, 312, 190, 330)
    stack = bl.sxdm_stack(xs, ys, etas, crop=crop)
    frames = stack.frames
    assert frames.shape == (2, ys.size, xs.size, 112, 140) and frames.dtype == np.uint32
    assert stack.setup.cch == (56.0, 66.0) and stack.shape == (2, ys.size, xs.size)
    inten = frames.sum(axis=(3, 4)).astype(float)
    com_x = (inten.sum(1) * xs).sum(1) / inten.sum((1, 2))
    # uncorrected: the crystal slides by 1 um/deg * 1.2 deg between the two maps
    assert com_x[1] - com_x[0] == pytest.approx(1.2, abs=0.1)
    from braggscope.core.eccentricity import EccentricityModel
    corrected = bl.sxdm_stack(xs, ys, etas, crop=crop, eccentricity=EccentricityModel.from_dict(truth_drift))
    inten = corrected.frames.sum(axis=(3, 4)).astype(float)
    com_c = (inten.sum(1) * xs).sum(1) / inten.sum((1, 2))
    assert abs(com_c[1] - com_c[0]) < 0.05
    assert corrected.eccentricity["x"] == [1.0, 0.0]
    with pytest.raises(ValueError, match="crop"):
        bl.sxdm_stack(xs, ys, etas, crop=(0, 600, 0, 10))
    with pytest.raises(ValueError, match="max_bytes"):
        bl.sxdm_stack(xs, ys, etas, max_bytes=1000)


def test_buried_crystallite_appears_shifted_by_depth_over_tan_eta():
    theta = bragg_angle(D_SPACING, E)
    xs = 50 + np.arange(-4.0, 2.01, 0.05)

    def com(depth):
        c = Crystallite("buried", (50.0, 50.0), D_SPACING, semi_axes_um=(0.3, 0.3), thickness_um=0.2,
                        edge_soft_um=0.05, depth_um=depth, sigma_radial=0.005, sigma_angular_deg=0.3)
        m = _model(SXDMSample("b", (c,), "003", D_SPACING))
        inten = np.array([m.expected_frame(x, 50.0, theta, 2 * theta, 0, 0, E, 1.0).sum() for x in xs])
        return (inten * xs).sum() / inten.sum()

    # the grazing beam reaches depth z at x + z / tan(eta): the grain shows up upstream
    shift = com(0.4) - com(0.0)
    assert shift == pytest.approx(-0.4 / np.tan(np.radians(theta)), abs=0.03)
