"""Independent SXDM forward model for the reduction tests (xrayutilities Q).

Uses neither ``braggscope.core.geometry`` nor ``braggscope.simulators``: the Q of
every detector pixel comes from xrayutilities' ``QConversion`` in the ID01
convention, and the truth fields (strain, tilt, shape, drift) are analytic.
The tests in this file check the model itself (Bragg condition met at the
peak, drift and fields as designed); other ``test_sxdm_*`` files import
:func:`forward_stack`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

xu = pytest.importorskip("xrayutilities")

HC = 12.398419843320026  # keV * Angstrom


@dataclass
class Truth:
    frames: np.ndarray      # (n_eta, ny, nx, rows, cols) uint32
    eta: np.ndarray
    delta: float
    nu: float
    energy_kev: float
    distance_m: float
    pixel_m: float
    cch: tuple
    x_um: np.ndarray
    y_um: np.ndarray
    amplitude: np.ndarray   # (ny, nx) crystal shape, 0..1
    q: np.ndarray           # (ny, nx, 3) true Q_local, 1/Angstrom
    strain: np.ndarray      # (ny, nx) true microstrain relative to d0 (not mean-subtracted)
    d0: float
    shifts: np.ndarray      # (n_eta, 2) true (dy, dx) drift in map pixels (0 at the middle angle)
    background: float
    flux: np.ndarray | None = None          # (n_eta, ny, nx) relative incident flux of every point
    fluorescence: np.ndarray | None = None  # (n_eta, ny, nx) fluorescence counts of every point


def qconv(energy_kev, distance_m, pixel_m, cch, shape):
    q = xu.experiment.QConversion(["y-", "z-"], ["z-", "y-"], [1, 0, 0])
    q.init_area("z-", "y+", cch1=cch[0], cch2=cch[1], Nch1=shape[0], Nch2=shape[1],
                distance=distance_m, pwidth1=pixel_m, pwidth2=pixel_m)
    return q


def rotate(v, axis, angle):
    """Rodrigues rotation of vectors v (..., 3) about unit axis (..., 3) by angle (rad)."""
    c, s = np.cos(angle)[..., None], np.sin(angle)[..., None]
    return v * c + np.cross(axis, v) * s + axis * (axis * v).sum(-1, keepdims=True) * (1 - c)


def forward_stack(*, ny=12, nx=12, n_eta=15, shape=(64, 64), eta_step=0.06, d0=2.0,
                  energy_kev=8.33, distance_m=0.25, pixel_m=55e-6, nu=3.0,
                  counts=3.0e4, background=1.0, sigma_q=4.0e-3, strain_amp=400.0,
                  tilt_max=0.12, drift_px=0.35, compression=False, strain_offset=0.0,
                  centre_x=None, radius=1.0, seed=0, shifts=None, flux=None, rock_tilt=0.0,
                  fluorescence=0.0, fluorescence_background=0.0, poisson=True) -> Truth:
    """Simulate an SXDM stack of one crystal with strain, tilts, noise and drift.

    Intensity of map pixel p at voxel q: ``counts * A(p) * G(q - Q(p))`` with
    an isotropic Gaussian of width ``sigma_q``, Poisson noise on top of a flat
    ``background`` (counts/pixel). Between rocking angles the sample drifts
    (random walk, ``drift_px`` map pixels rms per step, or the given ``shifts``
    (n_eta, 2)); the fields are evaluated at the drifted positions. ``flux``
    (n_eta, ny, nx) scales signal and background point by point (0: no beam);
    ``rock_tilt`` (deg) tilts the left and right halves the opposite ways along
    the rocking direction (two domains lit at different angles); with
    ``fluorescence`` (counts of a point on the whole crystal at flux 1) each
    point also records a fluorescence count ``flux * (fluorescence * A + fluorescence_background)``.
    ``poisson=False`` gives the expected counts (float32 frames) instead of a draw.
    """
    rng = np.random.default_rng(seed)
    lam = HC / energy_kev
    k = 2 * np.pi / lam
    two_theta = 2 * np.degrees(np.arcsin(lam / (2 * d0)))
    delta = np.degrees(np.arccos(np.cos(np.radians(two_theta)) / np.cos(np.radians(nu))))
    cch = (shape[0] / 2.0, shape[1] / 2.0)
    qc = qconv(energy_kev, distance_m, pixel_m, cch, shape)
    # Bragg condition: find eta0 where the cch pixel's Q has length 2pi/d0 and lies along the
    # nominal direction; Q at the cch pixel in the lab frame is fixed, its sample-frame
    # direction rotates with eta: take eta0 = theta-like angle making Q_sample's x component 0.
    # Bragg condition at the direct-beam pixel: the eta where its sample-frame Q has no x part
    eta_grid = np.linspace(0.0, 60.0, 60001)
    conv = xu.experiment.QConversion(["y-", "z-"], ["z-", "y-"], [1, 0, 0])
    qx_e = np.asarray(conv.point(eta_grid, np.zeros_like(eta_grid), np.full_like(eta_grid, nu),
                                 np.full_like(eta_grid, delta), wl=lam)[0])
    eta0 = float(eta_grid[np.argmin(np.abs(qx_e))])
    eta = eta0 + eta_step * (np.arange(n_eta) - (n_eta - 1) / 2)
    qx, qy, qz = qc.area(eta0, 0.0, nu, delta, wl=lam)
    g0 = np.array([qx[int(cch[0]), int(cch[1])], qy[int(cch[0]), int(cch[1])], qz[int(cch[0]), int(cch[1])]])
    g0 = g0 / np.linalg.norm(g0) * (2 * np.pi / d0)

    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    cy, cx = (ny - 1) / 2, (nx - 1) / 2 if centre_x is None else centre_x
    ry, rx = 0.36 * ny * radius, 0.40 * nx * radius

    def fields(py, px):
        r = np.sqrt(((py - cy) / ry) ** 2 + ((px - cx) / rx) ** 2)
        amp = 1 / (1 + np.exp((r - 1) / 0.08))
        u, v = (px - cx) / rx, (py - cy) / ry
        eps = strain_amp * (0.8 * u - 0.5 * v + 0.4 * np.sin(2.5 * u) * v)
        if compression:
            eps = -np.abs(eps) - 200.0
        eps = eps + strain_offset
        # two tilt domains, left and right (like the paper's Particle 2): the tilt is mostly
        # across the rocking direction so each angle lights the whole crystal
        t_rock = np.radians(0.02) * v + np.radians(rock_tilt) * np.tanh(u / 0.2)
        t_side = np.radians(tilt_max) * np.tanh(u / 0.35)
        alt = np.hypot(t_rock, t_side)
        azi = np.arctan2(t_side, t_rock)
        return amp, eps, alt, azi

    ghat = g0 / np.linalg.norm(g0)
    e1 = np.array([1.0, 0, 0]) - ghat[0] * ghat
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(ghat, e1)

    def qlocal(eps, alt, azi):
        axis_dir = np.cos(azi)[..., None] * e1 + np.sin(azi)[..., None] * e2
        u = np.cos(alt)[..., None] * ghat + np.sin(alt)[..., None] * axis_dir
        return u * (np.linalg.norm(g0) / (1 + eps[..., None] * 1e-6))

    if shifts is None:
        steps = rng.normal(0, drift_px, size=(n_eta, 2))
        steps[0] = 0
        shifts = np.cumsum(steps, axis=0)
        shifts -= shifts[n_eta // 2]  # the middle angle is the drift reference
    shifts = np.asarray(shifts, dtype=float)
    flux = None if flux is None else np.asarray(flux, dtype=float)
    frames = np.empty((n_eta, ny, nx) + tuple(shape), dtype=np.uint32 if poisson else np.float32)
    draw = rng.poisson if poisson else (lambda lam: lam)
    fluo = np.empty((n_eta, ny, nx)) if fluorescence else None
    for i, e in enumerate(eta):
        qx, qy, qz = qc.area(e, 0.0, nu, delta, wl=lam)
        qpix = np.stack([qx.ravel(), qy.ravel(), qz.ravel()], axis=1)
        amp, eps, alt, azi = fields(yy + shifts[i, 0], xx + shifts[i, 1])
        ql = qlocal(eps, alt, azi).reshape(-1, 3)
        d2 = ((ql[:, None, :] - qpix[None, :, :]) ** 2).sum(-1)
        peak = np.exp(-0.5 * d2 / sigma_q ** 2)
        # normalise per map pixel to `counts` over the full peak (voxel-density independent)
        vox = (pixel_m / distance_m * k) ** 2 * np.radians(eta_step) * np.linalg.norm(g0)
        norm = counts * vox / ((2 * np.pi) ** 1.5 * sigma_q ** 3)
        lam_i = amp.reshape(-1, 1) * norm * peak + background
        if flux is not None:
            lam_i *= flux[i].reshape(-1, 1)
        frames[i] = draw(lam_i).reshape((ny, nx) + tuple(shape))
        if fluo is not None:
            f_i = 1.0 if flux is None else flux[i]
            fluo[i] = draw(f_i * (fluorescence * amp + fluorescence_background))
    amp, eps, alt, azi = fields(yy, xx)
    return Truth(frames, eta, float(delta), float(nu), energy_kev, distance_m, pixel_m, cch,
                 np.arange(nx) * 0.4, np.arange(ny) * 0.4, amp, qlocal(eps, alt, azi), eps, d0,
                 shifts, background, flux, fluo)


def truth_tilts(q, mask):
    """Altitude/azimuth (deg) from the docs/conventions.md definition, written out here."""
    u = q / np.linalg.norm(q, axis=-1, keepdims=True)
    qbar = u[mask].mean(0)
    qbar /= np.linalg.norm(qbar)
    xp = np.array([1.0, 0, 0]) - qbar[0] * qbar
    xp /= np.linalg.norm(xp)
    alt = np.degrees(np.arccos(np.clip(u @ qbar, -1, 1)))
    perp = u - (u @ qbar)[..., None] * qbar
    azi = np.degrees(np.arctan2(perp @ np.cross(qbar, xp), perp @ xp))
    return alt, azi


def test_model_bragg_condition_and_drift():
    t = forward_stack(ny=6, nx=6, n_eta=9, shape=(48, 48), drift_px=0.0, background=0.0, seed=1)
    # with no strain/tilt at the crystal centre, the brightest voxel is at the middle angle near cch
    s = t.frames[:, 2:4, 2:4].sum(axis=(1, 2))
    i, r, c = np.unravel_index(np.argmax(s), s.shape)
    assert abs(i - 4) <= 1
    assert abs(r - t.cch[0]) <= 4 and abs(c - t.cch[1]) <= 4
    assert np.all(t.shifts == 0)
    t2 = forward_stack(ny=4, nx=4, n_eta=5, shape=(16, 16), seed=2)
    assert np.all(t2.shifts[2] == 0) and np.abs(t2.shifts).max() > 0
    # |Q| truth consistent with d0 and strain
    d = 2 * np.pi / np.linalg.norm(t.q, axis=-1)
    np.testing.assert_allclose((d / t.d0 - 1) * 1e6, t.strain, atol=1e-3)
