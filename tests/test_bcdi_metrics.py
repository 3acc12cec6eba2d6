"""PRTF and FSC against closed forms."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from braggscope.analysis.bcdi.metrics import curves_dataset, fsc, half_bit, prtf, q_vectors

N = 48


def ball(n=N, radius=9, phase=0.4):
    z, y, x = np.indices((n, n, n)) - n // 2
    return ((z ** 2 + y ** 2 + x ** 2) <= radius ** 2) * np.exp(1j * phase * z / radius)


def shells(shape, curve):
    """Shell index of every voxel on the curve's shells (|q| grid of 1 nm voxels); -1 beyond the last shell."""
    q = np.sqrt((q_vectors(shape) ** 2).sum(axis=0)).ravel() * 10  # 1/nm
    width = 2 * curve.q[0]
    idx = np.floor(q / width).astype(int)
    return np.where(idx < len(curve.q), idx, -1)


def shell_sum(idx, values, n):
    ok = idx >= 0
    return np.bincount(idx[ok], weights=np.ravel(values)[ok], minlength=n)[:n]


def far_field(obj):
    """The far field the phasing fits: |fftshift(fftn(conj(obj)))|^2 (object with the physical sign)."""
    return np.abs(np.fft.fftshift(np.fft.fftn(np.conj(obj)))) ** 2


def test_q_vectors_default_grid_is_1nm_voxels():
    q = q_vectors((4, 6, 8))
    # axis 0 is z (component 2): one index = 2 pi / (4 * 10 Angstrom)
    assert q[2, 3, 0, 0] - q[2, 2, 0, 0] == pytest.approx(2 * np.pi / 40)
    assert q[0, 0, 0, 5] - q[0, 0, 0, 4] == pytest.approx(2 * np.pi / 80)
    assert np.all(q[:, 2, 3, 4] == 0)  # n // 2 is q = 0
    with pytest.raises(ValueError, match="b must be"):
        q_vectors((4, 4, 4), b=np.eye(2))


def test_prtf_of_a_perfect_reconstruction_is_one():
    obj = ball()
    c = prtf(obj, far_field(obj))
    filled = c.n_voxels > 0
    np.testing.assert_allclose(c.value[filled], 1.0, rtol=1e-6)
    assert not c.reached["all"]  # never below 1/e: the resolution is the data's extent
    assert c.resolution_nm == pytest.approx(np.pi / c.q[filled][-1])
    # the phase ramp removed from an object moves its far field: the PRTF realigns it
    shifted = obj * np.exp(2j * np.pi * 3 * np.indices(obj.shape)[2] / N)
    np.testing.assert_allclose(prtf(shifted, far_field(obj)).value[filled], 1.0, rtol=1e-6)


def test_prtf_with_poisson_noise_is_one_where_counts_are_high():
    obj = ball()
    inten = far_field(obj)
    inten *= 1e7 / inten.max()
    noisy = np.random.default_rng(0).poisson(inten).astype(float)
    scale = np.sqrt(1e7 / far_field(obj).max())
    c = prtf(obj * scale, noisy)
    idx = shells(inten.shape, c)
    mean_counts = shell_sum(idx, inten, len(c.q)) / np.maximum(c.n_voxels, 1)
    bright = mean_counts > 100
    assert bright.sum() >= 5
    np.testing.assert_allclose(c.value[bright], 1.0, atol=0.03)


def test_prtf_of_partially_coherent_data_compares_the_blurred_intensity():
    """Data = |F|^2 blurred by a known Gaussian (partial coherence): the blurred model gives a PRTF of 1."""
    obj = ball(radius=7, phase=1.5)
    sigma = (0.9, 0.6, 1.2)
    data = gaussian_filter(far_field(obj), sigma, mode="wrap", truncate=8.0)  # independent of coherence.blur
    c = prtf(obj, data, coherence_px=sigma)
    filled = c.n_voxels > 0
    np.testing.assert_allclose(c.value[filled], 1.0, rtol=1e-4)
    # the coherent model misses the blur: the blur lowers the central peak (PRTF > 1 there) and fills the
    # fringes' minima (sqrt is concave: the shell mean of sqrt(I) grows when I is spread, PRTF < 1 beyond)
    coherent = prtf(obj, data).value[filled]
    assert coherent[0] > 1.05 and np.all(coherent[4:] < 0.95)
    with pytest.raises(ValueError, match="coherence_px"):
        prtf(obj, data, coherence_px=(0.5, 0.5))


def test_prtf_resolution_of_a_low_pass_reconstruction():
    """Reconstruction = data low-passed at |q| < q0: PRTF 1 below q0, 0 above; resolution pi / q0."""
    obj = ball()
    f = np.fft.fftshift(np.fft.fftn(np.conj(obj)))
    q = np.sqrt((q_vectors(obj.shape) ** 2).sum(axis=0)) * 10  # 1/nm
    q0 = 1.2
    rec = np.conj(np.fft.ifftn(np.fft.ifftshift(f * (q < q0))))
    c = prtf(rec, far_field(obj), n_shells=60)
    width = c.q[1] - c.q[0]
    assert c.reached["all"] and np.pi / c.resolution_nm == pytest.approx(q0, abs=width)
    for axis in ("z", "y", "x"):
        assert c.reached[axis] and np.pi / c.resolution_axes_nm[axis] == pytest.approx(q0, abs=2 * width)
    assert c.summary()["resolution_zyx_nm"] == pytest.approx([np.pi / q0] * 3, rel=0.1)


def test_fsc_of_an_object_with_itself_is_one_whatever_its_global_phase():
    obj = ball()
    c = fsc(obj, obj * np.exp(0.8j))
    filled = c.n_voxels > 0
    np.testing.assert_allclose(c.value[filled], 1.0, atol=1e-9)
    assert c.threshold_name == "half-bit"


def test_fsc_with_independent_noise_follows_signal_over_signal_plus_noise():
    """FSC per shell -> S / (S + n_shell * N * sigma^2) for white noise of variance sigma^2 per voxel."""
    rng = np.random.default_rng(3)
    obj = ball(radius=12)
    sigma = 0.15
    noise = [sigma / np.sqrt(2) * (rng.standard_normal(obj.shape) + 1j * rng.standard_normal(obj.shape))
             for _ in range(2)]
    c = fsc(obj + noise[0], obj + noise[1], n_shells=24)
    idx = shells(obj.shape, c)
    signal = shell_sum(idx, np.abs(np.fft.fftshift(np.fft.fftn(obj))) ** 2, 24)
    count = shell_sum(idx, np.ones(obj.size), 24)
    np.testing.assert_array_equal(count, c.n_voxels)
    expected = signal / (signal + count * obj.size * sigma ** 2)
    ok = count > 500
    np.testing.assert_allclose(c.value[ok], expected[ok], atol=0.05)
    assert (expected[ok] > 0.9).any() and (expected[ok] < 0.2).any()  # the test spans the fall of the curve
    # the 1/7 threshold lies below the half-bit one for small shells and crosses later
    c7 = fsc(obj + noise[0], obj + noise[1], n_shells=24, threshold="1/7")
    assert c7.resolution_nm <= c.resolution_nm + 1e-9
    with pytest.raises(ValueError, match="threshold"):
        fsc(obj, obj, threshold="0.5")


def test_half_bit_limits_and_curves_dataset():
    assert half_bit(1e12) == pytest.approx(0.2071 / 1.2071, rel=1e-5)
    assert half_bit(1) == pytest.approx(1.0, abs=0.01)
    obj = ball()
    ds = curves_dataset(prtf(obj, far_field(obj)), fsc(obj, obj))
    assert set(ds.data_vars) >= {"prtf", "prtf_threshold", "fsc", "fsc_threshold"}
    assert ds["q"].attrs["units"] == "1/nm" and "prtf_resolution_zyx_nm" in ds.attrs
