"""Combining starts as PyNX does: registration (global phase, twin, sub-voxel shift) and orthogonal modes.

References are closed forms: starts that differ only by what the data cannot
fix are one object (one mode of weight 1); the modes are the SVD of the stack.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import fourier_shift, gaussian_filter

from braggscope.analysis.bcdi.combine import combine, register, registration, shifted
from braggscope.analysis.bcdi.runs import _twin, mode_decomposition, orthogonal_modes
from tests.test_bcdi_helpers import synthetic_crystal


def _band_limited(rho, sigma=0.5):
    """The crystal smoothed (a reconstruction is band-limited: a sub-voxel shift of it is exact)."""
    return gaussian_filter(rho.real, sigma) + 1j * gaussian_filter(rho.imag, sigma)


@pytest.fixture(scope="module")
def variants():
    rho, shape, _ = synthetic_crystal(n=48, radius=8)
    obj = _band_limited(rho).astype(np.complex64)
    moved = np.fft.ifftn(fourier_shift(np.fft.fftn(obj), (0.45, -0.5, 0.4)))
    return obj, shape, [obj, obj * np.exp(1.1j), _twin(obj) * np.exp(-0.4j), moved * np.exp(2.0j),
                        _twin(np.roll(moved, (2, -1, 3), (0, 1, 2)))]


def test_global_phase_twin_and_subvoxel_shift_give_one_mode(variants):
    obj, shape, runs = variants
    comb = combine(runs, [np.abs(r) > 0.5 for r in runs])
    print(f"first-mode weight {comb.first_mode_weight:.5f}, whole-voxel registration only "
          f"{combine(runs, [np.abs(r) > 0.5 for r in runs], upsample=1).first_mode_weight:.5f}")
    assert comb.first_mode_weight > 0.995
    assert combine(runs, [np.abs(r) > 0.5 for r in runs], upsample=1).first_mode_weight < 0.99  # the test can fail
    ref = comb.runs[0]
    for r in comb.runs[1:]:
        assert abs(np.vdot(ref, r)) / (np.linalg.norm(ref) * np.linalg.norm(r)) > 0.995
    for a in (comb.mode, comb.average):
        assert abs(np.vdot(ref, a)) / (np.linalg.norm(ref) * np.linalg.norm(a)) > 0.995


def test_registration_finds_the_shift_and_the_twin(variants):
    obj = variants[0]
    moved = np.fft.ifftn(fourier_shift(np.fft.fftn(obj), (1.3, -2.45, 0.6)))
    twin, shift = registration(moved, obj)
    assert not twin
    np.testing.assert_allclose(shift, (-1.3, 2.45, -0.6), atol=0.06)
    twin, _ = registration(_twin(moved), obj)
    assert twin
    back = register(_twin(moved) * np.exp(0.7j), obj)
    assert np.abs(back - obj).max() < 0.05 * np.abs(obj).max()
    assert np.array_equal(shifted(obj, (2, -1, 0)), np.roll(obj, (2, -1, 0), (0, 1, 2)))


def test_orthogonal_modes_are_the_svd_of_the_stack():
    rng = np.random.default_rng(0)
    objs = [rng.normal(size=(6, 5)) + 1j * rng.normal(size=(6, 5)) for _ in range(4)]
    modes, weights = orthogonal_modes(objs)
    s = np.linalg.svd(np.stack([o.ravel() for o in objs]), compute_uv=False)
    np.testing.assert_allclose(weights, s ** 2 / np.sum(s ** 2), rtol=1e-10)
    flat = modes.reshape(4, -1)
    np.testing.assert_allclose(flat.conj() @ flat.T, np.diag(s ** 2), atol=1e-9 * s[0] ** 2)


def test_mode_of_two_phases_of_one_object_is_that_object():
    # the eigenvector enters unconjugated: with its conjugate, a and a e^{0.3i} would cancel in part
    rng = np.random.default_rng(1)
    a = rng.normal(size=(8, 8)) + 1j * rng.normal(size=(8, 8))
    mode, frac = mode_decomposition([a, a * np.exp(1.3j)])
    assert frac == pytest.approx(1.0)
    np.testing.assert_allclose(mode, a, rtol=1e-9, atol=1e-9)
