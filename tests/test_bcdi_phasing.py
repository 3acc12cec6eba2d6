"""Phase retrieval on an independent synthetic crystal (tests/test_bcdi_helpers.py).

The far field is built with the physical sign exp(+i q.r); recovered objects
are compared with the truth after registration and twin handling.
"""

import numpy as np
import pytest

from braggscope.analysis.bcdi.backend import cupy_available, get_backend
from braggscope.analysis.bcdi.phasing import (
    Recipe,
    align_to_reference,
    autocorrelation_support,
    mode_decomposition,
    phase_retrieval,
    remove_phase_ramp,
    run_metrics,
)
from braggscope.analysis.bcdi.strain import strain_analysis
from tests.test_bcdi_helpers import far_field, iou, phase_rms, synthetic_crystal


@pytest.fixture(scope="module")
def crystal():
    rho, shape, phase = synthetic_crystal()
    return rho, shape, phase, far_field(rho, seed=1)


@pytest.fixture(scope="module")
def result(crystal):
    return phase_retrieval(crystal[3], n_runs=2, seed=0, progress=False)


def _registered_iou(support, truth):
    """Best IoU over integer shifts of the support and of its point reflection (twin)."""
    best = 0.0
    for cand in (support, support[::-1, ::-1, ::-1]):
        cc = np.real(np.fft.ifftn(np.fft.fftn(truth.astype(float)) * np.conj(np.fft.fftn(cand.astype(float)))))
        peak = np.unravel_index(np.argmax(cc), cc.shape)
        best = max(best, iou(np.roll(cand, peak, (0, 1, 2)), truth))
    return best


def test_support_iou(crystal, result):
    assert result.obj.shape == crystal[3].shape and result.obj.dtype == np.complex64
    assert result.support.dtype == bool
    assert _registered_iou(result.support, crystal[1]) >= 0.8


def test_object_centred(result):
    idx = np.nonzero(result.support)
    centre = [np.mean(i) for i in idx]
    assert np.allclose(centre, [s // 2 for s in result.obj.shape], atol=1.0)


def test_phase_rms_and_physical_sign(crystal, result):
    rho, shape, _, _ = crystal
    truth = remove_phase_ramp(rho, shape)
    aligned = align_to_reference(result.obj, truth)
    assert phase_rms(aligned, truth, shape) <= 0.3
    # the conjugate (what FFT-based iterations give before the sign flip) does not match,
    # even allowing its twin: the sign test can fail
    wrong = align_to_reference(np.conj(result.obj), truth)
    assert phase_rms(wrong, truth, shape) > 0.3


def test_strain_sign_vs_known_displacement(crystal, result):
    rho, shape, _, _ = crystal
    truth = remove_phase_ramp(rho, shape)
    aligned = align_to_reference(result.obj, truth)
    g = 2 * np.pi / 2.0425  # |G| (1/A), G along array axis 0
    rec = strain_analysis(aligned, q_bragg_norm=g, voxel_nm=10.0, g_unit=(1, 0, 0), erode=2)
    ref = strain_analysis(truth, q_bragg_norm=g, voxel_nm=10.0, g_unit=(1, 0, 0), support=shape, erode=2)
    ok = np.isfinite(rec.strain) & np.isfinite(ref.strain)
    assert ok.sum() > 1000
    slope = np.polyfit(ref.strain[ok], rec.strain[ok], 1)[0]
    assert np.corrcoef(ref.strain[ok], rec.strain[ok])[0, 1] > 0.7
    assert 0.6 < slope < 1.4  # positive: same sign as the known displacement field


def test_converged_runs_give_one_mode(result):
    assert len(result.metrics) == 2 and result.kept
    assert result.mode_fraction > 0.95


def test_reproducible_with_seed(crystal):
    small = crystal[3][16:48, 16:48, 16:48]
    a = phase_retrieval(small, recipe="HIO:20,ER:10", seed=5, progress=False)
    b = phase_retrieval(small, recipe="HIO:20,ER:10", seed=5, progress=False)
    c = phase_retrieval(small, recipe="HIO:20,ER:10", seed=6, progress=False)
    assert np.array_equal(a.obj, b.obj)
    assert not np.array_equal(a.obj, c.obj)


def test_sharpness_metric_closed_forms():
    rng = np.random.default_rng(0)
    sup = np.zeros((32, 32, 32), bool)
    sup[8:24, 8:24, 8:24] = True
    flat = sup * np.exp(1j * rng.uniform(0, 1, sup.shape))
    speckle = sup * (rng.normal(size=sup.shape) + 1j * rng.normal(size=sup.shape))
    i = np.ones(sup.shape)
    # mean|a|^4 / mean|a|^2^2 = 1 for a flat amplitude, 2 for circular Gaussian speckle
    assert run_metrics(flat, sup, i)["sharpness"] == pytest.approx(1.0, abs=1e-6)
    assert run_metrics(speckle, sup, i)["sharpness"] == pytest.approx(2.0, rel=0.05)


def test_autocorrelation_support_is_twice_the_object():
    c = np.zeros((64, 64, 64))
    c[24:40, 26:38, 28:36] = 1
    sup = autocorrelation_support(np.fft.fftshift(np.abs(np.fft.fftn(c)) ** 2), threshold=0.1)
    ext = [np.ptp(i) + 1 for i in np.nonzero(sup)]
    for e, a in zip(ext, (16, 12, 8)):
        assert 1.5 * a <= e <= 2 * a + 2


def test_mode_decomposition_fraction():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(8, 8)) + 1j * rng.normal(size=(8, 8))
    b = rng.normal(size=(8, 8)) + 1j * rng.normal(size=(8, 8))
    mode, frac = mode_decomposition([a, a * np.exp(0.3j)])
    assert frac == pytest.approx(1.0)
    assert abs(np.vdot(mode, a)) / (np.linalg.norm(mode) * np.linalg.norm(a)) == pytest.approx(1.0)
    _, frac2 = mode_decomposition([a, b])
    assert 0.5 <= frac2 < 0.8


def test_recipe_parse_and_errors():
    r = Recipe.parse("HIO:300, raar:500,ER:200")
    assert r.steps == (("HIO", 300), ("RAAR", 500), ("ER", 200)) and r.n_iterations == 1000
    assert str(r) == "HIO:300,RAAR:500,ER:200"
    with pytest.raises(ValueError, match="HIO:300"):
        Recipe.parse("HIO300")
    with pytest.raises(ValueError, match="algorithm"):
        Recipe.parse("XX:10")
    with pytest.raises(ValueError, match="beta"):
        Recipe(beta=1.5)
    with pytest.raises(ValueError, match="coherence_start"):
        Recipe(coherence_start=1.5)
    with pytest.raises(ValueError, match="coherence_every"):
        Recipe(coherence_every=0)
    with pytest.raises(ValueError, match="coherence_refresh"):
        Recipe(coherence_refresh=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_runs": 0}, "n_runs"),
    ({"n_runs": 2, "n_keep": 3}, "n_keep"),
    ({"select": "best"}, "select"),
    ({"support": np.zeros((8, 8, 8), bool)}, "support"),
    ({"recipe": 5}, "recipe"),
    ({"mask": np.zeros((4, 4, 4), bool)}, "mask"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        phase_retrieval(np.ones((8, 8, 8)), progress=False, **kwargs)


def test_bad_intensity():
    with pytest.raises(ValueError, match="intensity"):
        phase_retrieval(np.ones(10), progress=False)
    with pytest.raises(ValueError, match="finite"):
        phase_retrieval(np.full((8, 8, 8), np.nan), progress=False)


def test_masked_pixels_are_left_free(crystal):
    rho, shape, _, intensity = crystal
    mask = np.zeros(intensity.shape, bool)
    mask[:, 30:33, :] = True  # a detector gap through the peak
    damaged = np.where(mask, 0.0, intensity)
    r = phase_retrieval(damaged, mask=mask, n_runs=1, seed=2, recipe="HIO:200,RAAR:300,ER:100", progress=False)
    truth = remove_phase_ramp(rho, shape)
    assert phase_rms(align_to_reference(r.obj, truth), truth, shape) <= 0.3


def test_cpu_backend_uses_scipy():
    be = get_backend("scipy")
    assert be.name == "scipy"
    with pytest.raises(ValueError, match="backend"):
        get_backend("fftw3")


def test_numba_fused_kernels_equal_numpy_steps():
    """The CPU back-end's fused steps (analysis.bcdi.fused) against the numpy ufunc chains, on random input."""
    from braggscope.analysis.bcdi import fused, projections

    assert get_backend("scipy").kernels["modulus_free"] is fused.modulus_free
    rng = np.random.default_rng(8)
    shape = (12, 10, 8)
    psi = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    psi[0, 0, :4] = 0  # |psi| below eps
    amp, free = rng.random(shape).astype(np.float32), rng.random(shape) < 0.2
    w_new, w_prev = rng.random(shape).astype(np.float32), rng.random(shape).astype(np.float32)
    prev = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    eps = np.float32(1e-3)
    for name, args in (("modulus", (amp,)), ("modulus_free", (amp, free))):
        ref, got = psi.copy(), psi.copy()
        getattr(projections, name)(ref, *args, eps)
        getattr(fused, name)(got, *args, eps)
        np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6, err_msg=name)
        strided = psi.copy()  # a non-contiguous view goes to the numpy step
        getattr(fused, name)(strided[:, :, ::2], *(a[:, :, ::2] for a in args), eps)
        np.testing.assert_allclose(strided[:, :, ::2], ref[:, :, ::2], rtol=2e-6, atol=1e-6)
        assert np.array_equal(strided[:, :, 1::2], psi[:, :, 1::2])
    ref_psi, ref_prev, got_psi, got_prev = psi.copy(), prev.copy(), psi.copy(), prev.copy()
    projections.update(ref_psi, w_new, ref_prev, w_prev)
    fused.update(got_psi, w_new, got_prev, w_prev)
    np.testing.assert_allclose(got_psi, ref_psi, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(got_prev, ref_prev, rtol=2e-6, atol=1e-6)
    sup = rng.random(shape) < 0.3
    for algo in ("ER", "HIO", "RAAR"):  # the one-pass weights are the numpy ones, bit for bit
        ref, got = projections.weights(algo, sup, 0.87, np), fused.weights(algo, sup, 0.87, np)
        for r, g in zip(ref, got):
            assert (r is None and g is None) or (g.dtype == np.float32 and np.array_equal(g, r)), algo


@pytest.mark.gpu
def test_cupy_fused_kernels_equal_numpy_steps():
    # one application of each fused GPU kernel against the numpy step on the same random input
    pytest.importorskip("cupy")
    if not cupy_available():
        pytest.skip("no CUDA device")
    import cupy

    from braggscope.analysis.bcdi import projections

    be = get_backend("cupy")
    rng = np.random.default_rng(7)
    shape = (24, 20, 16)
    psi = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    psi[0, 0, :4] = 0  # |psi| below eps
    amp = rng.random(shape).astype(np.float32)
    free = rng.random(shape) < 0.2
    w_new, w_prev = rng.random(shape).astype(np.float32), rng.random(shape).astype(np.float32)
    prev = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    eps = np.float32(1e-3)
    cases = [("modulus", projections.modulus, (amp,), (eps,)),
             ("modulus_free", projections.modulus_free, (amp, free), (eps,))]
    for name, ref_fn, args, extra in cases:
        ref = psi.copy()
        ref_fn(ref, *args, *extra)
        got = cupy.asarray(psi)
        be.kernels[name](got, *(cupy.asarray(a) for a in args), *extra)
        np.testing.assert_allclose(cupy.asnumpy(got), ref, rtol=2e-6, atol=1e-6)
    ref_psi, ref_prev = psi.copy(), prev.copy()
    projections.update(ref_psi, w_new, ref_prev, w_prev)
    got_psi, got_prev = cupy.asarray(psi), cupy.asarray(prev)
    be.kernels["update"](got_psi, cupy.asarray(w_new), got_prev, cupy.asarray(w_prev))
    np.testing.assert_allclose(cupy.asnumpy(got_psi), ref_psi, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(cupy.asnumpy(got_prev), ref_prev, rtol=2e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("masked", [False, True])
def test_cupy_backend_matches_cpu(crystal, masked):
    # the GPU runs fused kernels (modulus, masked modulus, HIO/RAAR update): same result as numpy's
    pytest.importorskip("cupy")
    if not cupy_available():
        pytest.skip("no CUDA device")
    small = crystal[3][16:48, 16:48, 16:48]
    mask = None
    if masked:
        mask = np.zeros(small.shape, bool)
        mask[:, 14:16, :] = True
    kw = dict(recipe="HIO:50,RAAR:30,ER:30", seed=3, mask=mask, progress=False)
    gpu = phase_retrieval(small, backend="cupy", **kw)
    cpu = phase_retrieval(small, backend="scipy", **kw)
    a = align_to_reference(gpu.obj, cpu.obj)
    assert np.abs(np.vdot(a, cpu.obj)) / (np.linalg.norm(a) * np.linalg.norm(cpu.obj)) > 0.99
