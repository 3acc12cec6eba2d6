"""BCDI reconstruction quality on a realistic simulated measurement.

The measurement (:func:`realistic_measurement`) reuses braggscope's BCDI
simulator (``simulators.samples.BCDIParticle``, ``simulators.bcdi_forward``):
a strained, faceted particle with two local defects, its far field at the
nodes of a regular reciprocal-space grid, Poisson counts (peak 1e5-1e7
photons), two detector gaps and a finite rocking range (frames beyond it are
not measured: the rocking-direction tails are cut), no beamstop.

References are independent of the phasing code: the error floor is the
Fourier-amplitude error of the simulator's noise-free amplitude on the noisy
counts, and the strain is compared with the simulator's displacement field.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, gaussian_filter

from braggscope.analysis.bcdi import align_to_reference, coherence, phase_retrieval, remove_phase_ramp
from braggscope.analysis.bcdi.backend import cupy_available, get_backend
from braggscope.analysis.bcdi.strain import strain_analysis
from braggscope.analysis.bcdi.support import shrinkwrap
from braggscope.simulators.bcdi_forward import BCDIForwardModel
from braggscope.simulators.samples import lmno_particle

#: Rocking direction (array axis); G is along array axis 2 (sample z).
ROCKING_AXIS = 0
G_AXIS = 2


def realistic_measurement(n=64, *, peak_counts=1e6, rocking_fraction=0.75, gaps=True, coherence_px=(0.4, 0.8, 0.8),
                          seed=0, size_voxels=None):
    """A noisy, gapped, rocking-truncated BCDI measurement and its truth.

    Parameters
    ----------
    n : int
        Array size per axis (voxels of the reciprocal-space grid).
    peak_counts : float
        Expected photons at the Bragg peak of the strain-free particle.
    rocking_fraction : float
        Fraction of the rocking axis (array axis 0) that was scanned; the
        frames beyond are unmeasured (masked). 1 scans the whole array.
    gaps : bool
        Two detector gaps (3 and 2 pixels wide, off the peak), masked.
    coherence_px : (float, float, float) or None
        Partial coherence of the beam: the coherent intensity is blurred by a
        Gaussian of these widths (reciprocal-space voxels) before the
        counting, as a finite coherence length does (the measured intensity
        is the coherent one convolved with the Fourier transform of the
        complex coherence function). None: fully coherent.
    seed : int
        Seed of the particle's defects and of the Poisson noise.
    size_voxels : float, optional
        Vertex-to-vertex size of the octahedron in 20 nm voxels (default
        ``n / 2.6``: an oversampling of about 3.2 after the {100} truncation).

    Returns
    -------
    dict
        ``intensity`` (float32 photons, 0 where masked), ``mask`` (True =
        not measured), ``expected`` (noise-free photons), ``truth`` (complex
        object ``rho exp(i G.u)`` on the real-space grid conjugate to the
        data, centred), ``coherent`` (noise-free photons of the fully
        coherent beam), ``support`` (bool), ``displacement_A`` (u along G,
        Angstrom), ``g_norm`` (1/Angstrom), ``voxel_nm``.
    """
    voxel_m = 20e-9
    size = (n / 2.6 if size_voxels is None else size_voxels) * voxel_m
    particle = dataclasses.replace(lmno_particle(seed=seed, voxel_m=voxel_m), size_m=size)
    fwd = BCDIForwardModel(particle)
    v = fwd.voxel  # Angstrom
    dq = 2 * np.pi / (n * v)
    axis = (np.arange(n) - n // 2) * dq
    q = np.stack(np.meshgrid(axis, axis, axis, indexing="ij")) + fwd.g.reshape(3, 1, 1, 1)
    amp = fwd.amplitude(q)
    # the simulator's voxel centres sit half a voxel off the grid nodes: move them onto the nodes
    for ax in range(3):
        shape = [1, 1, 1]
        shape[ax] = -1
        amp = amp * np.exp(-1j * axis * v / 2).reshape(shape)
    coherent = peak_counts * np.abs(amp) ** 2
    expected = coherent if coherence_px is None else gaussian_filter(coherent, coherence_px, mode="constant")
    rng = np.random.default_rng(seed + 1000)
    counts = rng.poisson(expected).astype(np.float32)
    mask = np.zeros((n, n, n), bool)
    half = int(round(rocking_fraction * n / 2))
    lo, hi = n // 2 - half, n // 2 + half
    mask[:lo] = True
    mask[hi:] = True
    c = n // 2
    if gaps:
        mask[:, :, c + n // 10: c + n // 10 + 3] = True   # vertical gap between detector chips
        mask[:, c - n // 8 - 2: c - n // 8, :] = True     # horizontal gap
    counts[mask] = 0
    # truth on the conjugate grid: voxel i of the simulator's grid at node i - s/2 about the centre
    rho, u = fwd.rho, fwd.u
    g = float(np.linalg.norm(fwd.g))
    obj = rho * np.exp(1j * g * u)
    truth = np.zeros((n, n, n), np.complex128)
    disp = np.zeros((n, n, n))
    sl = tuple(slice(c - s // 2, c - s // 2 + s) for s in obj.shape)
    truth[sl] = obj
    disp[sl] = u
    return {"intensity": counts, "mask": mask, "expected": expected, "coherent": coherent, "truth": truth,
            "support": np.abs(truth) > 0.5,
            "displacement_A": disp, "g_norm": g, "voxel_nm": v / 10.0}


# -- tests ---------------------------------------------------------------------
def fourier_error(calc_amplitude, intensity, measured):
    """``sum(|F| - sqrt(I))^2 / sum(I)`` over the measured voxels (no scale fitted)."""
    f = np.abs(calc_amplitude)[measured].astype(np.float64)
    a = np.sqrt(intensity[measured].astype(np.float64))
    return float(np.sum((f - a) ** 2) / np.sum(a * a))


@pytest.fixture(scope="module")
def measurement():
    # fully coherent, so that the simulator's true object is a perfect model of the expected counts
    return realistic_measurement(64, peak_counts=1e6, coherence_px=None, seed=3)


@pytest.fixture(scope="module")
def reconstruction(measurement):
    return phase_retrieval(measurement["intensity"], mask=measurement["mask"], seed=0, n_runs=1, progress=False)


def test_measurement_matches_the_simulator_truth(measurement):
    # the noise-free counts are |FT(truth)|^2 up to the photon scale: the truth is the object behind the data
    calc = np.abs(np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(measurement["truth"])))) ** 2
    scale = np.sum(calc * measurement["expected"]) / np.sum(calc * calc)
    assert np.max(np.abs(scale * calc - measurement["expected"])) < 1e-3 * measurement["expected"].max()
    assert measurement["mask"].any() and not measurement["intensity"][measurement["mask"]].any()


def test_default_recipe_reaches_the_poisson_floor(measurement, reconstruction):
    intensity, measured = measurement["intensity"], ~measurement["mask"]
    # the error a perfect object has on these noisy counts: the Poisson noise level of the data
    floor = fourier_error(np.sqrt(measurement["expected"]), intensity, measured)
    assert 2e-4 < floor < 2e-3  # Poisson noise: about 1/4 photon per measured voxel over the total counts
    calc = np.fft.fftshift(np.fft.fftn(np.conj(reconstruction.runs[0])))  # FFT sign of the data
    err = fourier_error(calc, intensity, measured)
    assert err == pytest.approx(reconstruction.metrics[0]["chi2"], rel=1e-3)
    assert err < 1.25 * floor


def test_strain_correlates_with_the_truth(measurement, reconstruction):
    truth, shape = measurement["truth"], measurement["support"]
    rec = align_to_reference(reconstruction.obj, remove_phase_ramp(truth, shape))
    g_unit = np.eye(3)[G_AXIS]
    kw = dict(q_bragg_norm=measurement["g_norm"], voxel_nm=measurement["voxel_nm"], g_unit=g_unit, erode=2)
    got = strain_analysis(rec, **kw)
    # independent reference: the simulator's displacement field u (Angstrom), differentiated along G
    u = measurement["displacement_A"]
    inner = binary_erosion(shape, iterations=2)
    ref = np.where(inner, np.gradient(u, measurement["voxel_nm"] * 10.0, axis=G_AXIS), np.nan)
    ok = np.isfinite(got.strain) & np.isfinite(ref)
    assert ok.sum() > 500
    r = np.corrcoef(ref[ok], got.strain[ok])[0, 1]
    slope = np.polyfit(ref[ok], got.strain[ok], 1)[0]
    print(f"strain correlation {r:.3f}, slope {slope:.2f}, truth rms {np.std(ref[ok]) * 1e6:.0f} microstrain")
    assert r > 0.7
    assert 0.6 < slope < 1.4


def test_fully_coherent_data_fit_no_blur(reconstruction):
    # the data are fully coherent: the partial-coherence model must not invent a blur
    assert max(reconstruction.metrics[0]["coherence_px"]) <= 0.15


def test_blur_is_scipy_gaussian_with_periodic_boundaries():
    rng = np.random.default_rng(0)
    a = rng.random((24, 20, 16)) ** 4
    sigma = (0.6, 1.1, 0.0)
    got = coherence.blur(a.astype(np.float32), sigma)
    ref = gaussian_filter(a, sigma, mode="wrap", truncate=8.0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6 * a.max())
    assert coherence.blur(a, (0.0, 0.0, 0.0)) is a


def test_fit_sigma_recovers_a_known_blur():
    # a speckled coherent intensity, blurred by known widths and counted: the fit finds the widths
    rng = np.random.default_rng(1)
    obj = np.zeros((32, 32, 32), complex)
    obj[10:22, 12:20, 11:21] = np.exp(1j * rng.uniform(0, 1.5, (12, 8, 10)))
    coh = np.abs(np.fft.fftshift(np.fft.fftn(obj))) ** 2
    coh *= 1e6 / coh.max()
    true = (0.6, 0.9, 0.3)
    counts = rng.poisson(gaussian_filter(coh, true, mode="wrap"))
    got = coherence.fit_sigma(coh, np.sqrt(counts), None)
    np.testing.assert_allclose(got, true, atol=0.151)


@pytest.fixture(scope="module")
def blurred_measurement():
    # partially coherent beam (the simulator's counts blurred by 0.4, 0.8, 0.8 voxels), gaps, cut rocking range
    return realistic_measurement(48, peak_counts=1e6, seed=1)


def test_partially_coherent_data_fit_far_better_than_the_true_coherent_object(blurred_measurement):
    """The default recipe (blurred intensity refreshed every 4 iterations) fits what no coherent object can."""
    m = blurred_measurement
    intensity, measured = m["intensity"], ~m["mask"]
    coherent_truth = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(m["truth"])))
    scale = np.sqrt(np.sum(m["coherent"]) / np.sum(np.abs(coherent_truth) ** 2))
    truth_err = fourier_error(scale * coherent_truth, intensity, measured)  # the true object, coherent model
    floor = fourier_error(np.sqrt(m["expected"]), intensity, measured)
    r = phase_retrieval(intensity, mask=m["mask"], seed=0, n_runs=1, progress=False)
    px = r.metrics[0]["coherence_px"]
    calc = np.clip(coherence.blur(np.abs(np.fft.fftshift(np.fft.fftn(np.conj(r.runs[0])))) ** 2, px), 0, None)
    err = fourier_error(np.sqrt(calc), intensity, measured)
    print(f"error {err:.4f}, true object (coherent) {truth_err:.4f}, Poisson floor {floor:.4f}, widths {px}")
    assert err == pytest.approx(r.metrics[0]["chi2"], rel=1e-3)
    assert max(px) >= 0.3  # a blur was found (true widths 0.4, 0.8, 0.8)
    assert floor < err < 0.25 * truth_err


def test_effective_amplitude_gives_the_partially_coherent_projection():
    """Coherent projection onto the effective amplitudes = psi amp / sqrt(G * |psi|^2) (scipy's wrap Gaussian)."""
    rng = np.random.default_rng(2)
    shape, sigma = (20, 24, 16), (0.5, 0.9, 0.0)
    psi = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    amp = rng.random(shape).astype(np.float32)
    be = get_backend("scipy")
    a = coherence.effective_amplitude(psi, amp, sigma, np.float32(1e-6), be)
    got = psi * a / np.abs(psi)
    ref = psi * amp / np.sqrt(gaussian_filter(np.abs(psi.astype(np.complex128)) ** 2, sigma, mode="wrap", truncate=8.0))
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=1e-6)
    assert coherence.effective_amplitude(psi, amp, (0.0, 0.0, 0.0), np.float32(1e-6), be) is amp


def test_shrinkwrap_thresholds_a_periodic_gaussian_blur_of_the_amplitude():
    rng = np.random.default_rng(4)
    psi = np.zeros((32, 28, 24), np.complex64)
    psi[10:22, 8:20, 6:18] = rng.normal(size=(12, 12, 12)) + 1j * rng.normal(size=(12, 12, 12))
    got = shrinkwrap(psi, 1.3, 0.2, get_backend("scipy"))
    blurred = gaussian_filter(np.abs(psi).astype(np.float64), 1.3, mode="wrap", truncate=8.0)
    ref = blurred >= 0.2 * blurred.max()
    clear = np.abs(blurred - 0.2 * blurred.max()) > 1e-4 * blurred.max()  # ties at the threshold left out
    assert ref.sum() > 1000 and np.array_equal(got[clear], ref[clear])


@pytest.mark.gpu
def test_cupy_effective_amplitude_equals_numpy():
    """The partial-coherence step on the GPU runs the CPU's code (numpy ufuncs on CuPy arrays, cupy.fft)."""
    try:
        import cupy
    except ImportError:
        pytest.skip("CuPy is not installed: the GPU path of the partial-coherence model is not tested here")
    if not cupy_available():
        pytest.skip("no CUDA device: the GPU path of the partial-coherence model is not tested here")
    rng = np.random.default_rng(5)
    shape, sigma = (24, 20, 16), (0.6, 0.3, 1.1)
    psi = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    amp = rng.random(shape).astype(np.float32)
    eps = np.float32(1e-6)
    ref = coherence.effective_amplitude(psi, amp, sigma, eps, get_backend("scipy"))
    got = coherence.effective_amplitude(cupy.asarray(psi), cupy.asarray(amp), sigma, eps, get_backend("cupy"))
    np.testing.assert_allclose(cupy.asnumpy(got), ref, rtol=1e-4, atol=1e-6)
