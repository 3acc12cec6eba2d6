"""Displacement and strain from a complex object: closed forms, sign, unwrapping, resolution."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from braggscope.analysis.bcdi.strain import edge_resolution, strain_analysis

G = 2 * np.pi / 2.0425  # |G| of LMNO 004 (1/A)


def _ball(n=48, radius=16):
    z, y, x = np.indices((n, n, n)) - n // 2
    return z, y, x, (z ** 2 + y ** 2 + x ** 2) <= radius ** 2


@pytest.mark.parametrize("g_unit", [(1, 0, 0), (0, 1, 1)])
def test_uniform_strain_closed_form(g_unit):
    """u = eps * (g.r): strain along G is eps, sign included, through several phase wraps."""
    z, y, x, ball = _ball()
    voxel = 5.0  # nm
    eps = 5e-3
    g = np.array(g_unit, float) / np.linalg.norm(g_unit)
    s_nm = (g[0] * z + g[1] * y + g[2] * x) * voxel
    u_A = eps * s_nm * 10.0
    obj = ball * np.exp(1j * G * u_A)  # physical sign: phase = +G.u
    assert np.ptp(G * u_A[ball]) > 4 * np.pi  # wrapped many times
    r = strain_analysis(obj, q_bragg_norm=G, voxel_nm=voxel, g_unit=g_unit, erode=2)
    inner = np.isfinite(r.strain)
    assert inner.sum() > 5000
    assert np.allclose(r.strain[inner], eps, atol=1e-6)
    assert np.nanmean(r.microstrain) == pytest.approx(5000.0, abs=1.0)
    # displacement (nm) recovered up to a constant
    d = r.displacement[ball] - np.nanmean(r.displacement[ball])
    assert np.allclose(d, eps * (s_nm[ball] - s_nm[ball].mean()), atol=1e-5)


def test_compression_is_negative():
    z, y, x, ball = _ball()
    obj = ball * np.exp(-1j * G * 2e-4 * z * 50.0)  # u = -2e-4 * z (A, voxel 5 nm = 50 A)
    r = strain_analysis(obj, q_bragg_norm=G, voxel_nm=5.0, g_unit=(1, 0, 0))
    assert np.nanmean(r.strain) == pytest.approx(-2e-4, rel=1e-3)


def test_outside_is_nan_and_surface_eroded():
    z, y, x, ball = _ball()
    r = strain_analysis(ball * (1 + 0j), q_bragg_norm=G, voxel_nm=5.0, g_unit=(1, 0, 0), erode=2)
    assert np.all(np.isnan(r.phase[~r.support]))
    assert np.isfinite(r.strain).sum() < r.support.sum()
    assert np.all(np.isfinite(r.strain[8:40, 24, 24][6:-6]))


def test_edge_resolution_of_a_blurred_ball():
    z, y, x, ball = _ball(64, 20)
    sigma = 2.0
    amp = gaussian_filter(ball.astype(float), sigma)
    res = edge_resolution(amp / amp.max(), amp > 0.5 * amp.max(), np.array([4.0, 4.0, 4.0]))
    # line-spread FWHM of a Gaussian blur: 2.355 sigma (voxels) x 4 nm
    assert res == pytest.approx([2.3548 * sigma * 4.0] * 3, rel=0.15)


def test_errors():
    obj = np.ones((8, 8, 8), complex)
    with pytest.raises(ValueError, match="complex"):
        strain_analysis(np.ones((8, 8, 8)), q_bragg_norm=G, voxel_nm=1, g_unit=(1, 0, 0))
    with pytest.raises(ValueError, match="q_bragg_norm"):
        strain_analysis(obj, q_bragg_norm=0, voxel_nm=1, g_unit=(1, 0, 0))
    with pytest.raises(ValueError, match="voxel_nm"):
        strain_analysis(obj, q_bragg_norm=G, voxel_nm=-1, g_unit=(1, 0, 0))
    with pytest.raises(ValueError, match="g_unit"):
        strain_analysis(obj, q_bragg_norm=G, voxel_nm=1, g_unit=(0, 0))
