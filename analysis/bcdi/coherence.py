"""Partial coherence in BCDI phase retrieval (a Gaussian coherence model).

With a partially coherent beam the measured intensity is the coherent one,
``|F|^2``, convolved with the Fourier transform of the complex coherence
function (Clark et al., Nat. Commun. 3, 993 (2012); Vartanyants & Robinson,
J. Phys.: Condens. Matter 13, 10593 (2001)). A coherent object cannot fit
such data: its support grows a halo and its phase distorts. Here the
coherence function is modelled as a Gaussian, so the blur is a separable
Gaussian of widths ``sigma`` (reciprocal-space voxels per axis), refined
during the iterations by a least-squares fit of ``sqrt(G_sigma * |F|^2)``
to the measured amplitudes around the Bragg peak; the modulus projection then
scales ``F`` by ``sqrt(I) / sqrt(G_sigma * |F|^2)``, through the effective
amplitudes of :func:`effective_amplitude` (refreshed every few iterations).

Layout: all arrays are origin-centred (``ifftshift``-ed, as inside
:func:`braggscope.analysis.bcdi.phasing.phase_retrieval`), hence the
periodic (``wrap``) blur.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from . import backend
from .backend import _cpu_map_blocks

__all__ = ["SIGMA_GRID", "SETTLE", "blur", "centre_weight", "fit_sigma", "peak_window", "fit_in_fourier_space",
           "effective_amplitude", "PartialCoherence"]

#: Blur widths tried per axis (reciprocal-space voxels).
SIGMA_GRID = np.round(np.arange(0.0, 2.45, 0.15), 2)
#: ER iterations after an HIO/RAAR phase before the partial-coherence widths are fitted.
SETTLE = 15


def blur(intensity, sigma, xp=np):
    """``G_sigma * intensity`` with periodic boundaries, as a product in Fourier space.

    The transform of the sampled periodic Gaussian multiplies the real FFT of
    the intensity: one ``rfftn`` / ``irfftn`` pair on all cores, cheaper than
    a direct 3D convolution.

    Parameters
    ----------
    intensity : ndarray, float32 or float64
        Origin-centred or centred intensity (the blur is shift-invariant).
    sigma : sequence of float
        Widths per axis (voxels); 0 on every axis returns ``intensity``.
    xp : module
        ``numpy`` (``scipy.fft``, all cores) or ``cupy``.
    """
    if not np.any(np.asarray(sigma) > 0):
        return intensity
    if xp is np:
        import scipy.fft as fft

        spec = fft.rfftn(intensity, workers=backend.threads())
        _cpu_map_blocks(_multiply, spec, _kernel(intensity.shape, tuple(float(s) for s in sigma), xp))  # all cores
        return fft.irfftn(spec, s=intensity.shape, workers=backend.threads(), overwrite_x=True)
    spec = xp.fft.rfftn(intensity)
    spec *= _kernel(intensity.shape, tuple(float(s) for s in sigma), xp)
    return xp.fft.irfftn(spec, s=intensity.shape)


_KERNEL: dict = {}
_KERNEL_CACHE = 4


def _kernel(shape, sigma, xp):
    """Real FFT of the sampled, periodic, unit-sum Gaussian of ``shape`` (cached: the last few).

    The transform of the sampled kernel (not the continuous Gaussian's
    transform cut at Nyquist, whose real-space kernel rings negative for
    widths below a voxel), so the blur is a positive, sum-preserving average.
    """
    key = (shape, sigma, xp.__name__)
    if key not in _KERNEL:
        k = None
        for ax, (n, s) in enumerate(zip(shape, sigma)):
            g = _gauss1d(n, s)
            g = (np.fft.rfft(g) if ax == len(shape) - 1 else np.fft.fft(g)).real.astype(np.float32)
            g = g.reshape([-1 if i == ax else 1 for i in range(len(shape))])
            k = g if k is None else k * g
        while len(_KERNEL) >= _KERNEL_CACHE:  # the shrink-wrap's widths change at every call
            _KERNEL.pop(next(iter(_KERNEL)))
        _KERNEL[key] = xp.asarray(k)
    return _KERNEL[key]


def _gauss1d(n, sigma):
    """Periodic unit-sum Gaussian of width ``sigma`` on ``n`` samples, centred on index 0."""
    d = np.minimum(np.arange(n), n - np.arange(n)).astype(np.float64)
    g = np.exp(-0.5 * (d / sigma) ** 2) if sigma > 0 else (d == 0).astype(np.float64)
    return g / g.sum()


def centre_weight(shape, sigma):
    """Weight of a voxel in its own blurred value (> 0): bounds the modulus ratio."""
    return float(np.prod([_gauss1d(n, s)[0] for n, s in zip(shape, sigma)]))


def peak_window(shape, half=16):
    """Index arrays of the ``2 half`` voxels per axis around the origin (the Bragg peak).

    Returns a tuple usable as ``a[np.ix_(*window)]`` on an origin-centred array.
    """
    return tuple(np.arange(-min(half, s // 4), min(half, s // 4)) % s for s in shape)


def fit_sigma(coherent, amplitude, measured, start=None, border=3, step=0.15, max_rounds=10):
    """Gaussian coherence widths that best map the coherent intensity onto the data.

    Minimises ``sum (sqrt(G_sigma * |F|^2) - sqrt(I))^2`` over the measured
    voxels of a window around the peak (its outer ``border`` voxels excluded:
    the blur there sees the window's edge). Without ``start``, one sweep over
    :data:`SIGMA_GRID` per axis first; then a local search in steps of
    ``step`` voxels per axis until no step improves the fit.

    Parameters
    ----------
    coherent : ndarray, float
        ``|F|^2`` of the current object on the window (centred on the peak).
    amplitude : ndarray, float
        Measured amplitudes ``sqrt(I)`` on the window.
    measured : ndarray of bool or None
        Measured voxels of the window (None: all).
    start : sequence of float, optional
        Widths to start from (voxels), e.g. the previous fit.

    Returns
    -------
    tuple of float
        Widths per axis (voxels).
    """
    coherent = np.asarray(coherent, np.float64)
    amplitude = np.asarray(amplitude, np.float64)
    inner = np.zeros(coherent.shape, bool)
    inner[tuple(slice(border, s - border) for s in coherent.shape)] = True
    if measured is not None:
        inner &= measured
    a = amplitude[inner]

    def cost(sig):
        calc = gaussian_filter(coherent, sig, mode="nearest") if any(s > 0 for s in sig) else coherent
        return float(np.sum((np.sqrt(calc[inner]) - a) ** 2))

    best = [0.0] * coherent.ndim if start is None else [float(s) for s in start]
    best_cost = cost(best)
    candidates = [[v] for v in SIGMA_GRID] if start is None else []
    for ax in range(coherent.ndim):
        for (value,) in candidates:
            trial = best[:ax] + [float(value)] + best[ax + 1:]
            c = cost(trial)
            if c < best_cost:
                best, best_cost = trial, c
    for _ in range(max_rounds):
        improved = False
        for ax in range(coherent.ndim):
            for d in (-step, step):
                value = round(best[ax] + d, 4)
                if not 0 <= value <= SIGMA_GRID[-1]:
                    continue
                trial = best[:ax] + [value] + best[ax + 1:]
                c = cost(trial)
                if c < best_cost:
                    best, best_cost, improved = trial, c, True
        if not improved:
            break
    return tuple(best)


# -- steps of the iterations (arrays of a phasing back-end, origin-centred) -----
def fit_in_fourier_space(psi, amp, free, window, start, be):
    """Blur widths of the partial-coherence model fitted around the peak (``psi`` in Fourier space)."""
    ix = be.xp.ix_(*(be.xp.asarray(w) for w in window))
    shifts = tuple(len(w) // 2 for w in window)  # the window starts at -half: roll the peak to its centre
    coh = np.roll(be.asnumpy(be.xp.abs(psi[ix]) ** 2), shifts, tuple(range(psi.ndim)))
    a = np.roll(be.asnumpy(amp[ix]), shifts, tuple(range(psi.ndim)))
    measured = None if free is None else ~np.roll(be.asnumpy(free[ix]), shifts, tuple(range(psi.ndim)))
    return fit_sigma(coh, a, measured, start=start if start is not None else (0.0,) * psi.ndim)


def effective_amplitude(psi, amp, sigma, eps, be):
    """Measured amplitudes rescaled so that the coherent modulus projection models partial coherence.

    Returns ``a = amp sqrt(|psi|^2 / max(G_sigma * |psi|^2, w0 |psi|^2, eps^2))``
    (``psi`` in Fourier space, origin-centred). The coherent projection onto
    ``a``, ``psi a / |psi|``, is then the partially coherent one,
    ``psi amp / sqrt(G_sigma * |psi|^2)`` (Clark et al. 2012), for this
    ``psi``; reused for the next iterations, it keeps their cost that of a
    coherent iteration, and a fixed point of the one is a fixed point of the
    other. The blurred intensity is floored at ``w0 |psi|^2`` (``w0`` the
    voxel's own weight in the blur, its exact lower bound), which FFT round-off
    near zero could otherwise undercut: the ratio stays below ``1 / w0``.
    Widths all 0 return ``amp`` itself.
    """
    if not np.any(np.asarray(sigma) > 0):
        return amp
    abs2 = be.xp.empty(psi.shape, dtype=np.float32)
    be.map_blocks(_abs2, psi, abs2)
    calc = blur(abs2, sigma, be.xp)
    w0_inv = np.float32(1.0 / centre_weight(psi.shape, sigma))
    eps2 = np.float32(eps) ** 2
    be.map_blocks(lambda c, s, a: _effective(c, s, a, w0_inv, eps2), calc, abs2, amp)
    return calc


class PartialCoherence:
    """Partial-coherence state of one phase-retrieval run: fitted widths, effective amplitudes.

    :meth:`amplitudes` returns, per iteration, the amplitudes the modulus
    projection imposes: the measured ones until the first fit, then those of
    :func:`effective_amplitude`, recomputed every ``recipe.coherence_refresh``
    iterations and after each new fit of the widths.
    """

    def __init__(self, recipe, amp, free, eps, be):
        n_total = recipe.n_iterations
        self.start = int(recipe.coherence_start * n_total) if recipe.partial_coherence else n_total + 1
        self.every, self.refresh = recipe.coherence_every, recipe.coherence_refresh
        self.amp, self.free, self.eps, self.be = amp, free, eps, be
        self.window = peak_window(amp.shape)
        self.sigma, self.fitted, self.refreshed = None, 0, None
        self.target = amp

    def amplitudes(self, psi, it, algo, j, n):
        """Amplitudes for iteration ``it`` (step ``j`` of ``n`` of ``algo``), ``psi`` in Fourier space."""
        if (it >= self.start and algo == "ER" and j >= min(n - 1, SETTLE)
                and (self.sigma is None or it - self.fitted >= self.every)):
            # fitted on settled ER iterates only: an HIO/RAAR iterate is no object consistent with its support
            self.sigma = fit_in_fourier_space(psi, self.amp, self.free, self.window, self.sigma, self.be)
            self.fitted, self.refreshed = it, None
        if self.sigma is not None and (self.refreshed is None or it - self.refreshed >= self.refresh):
            self.target = effective_amplitude(psi, self.amp, self.sigma, self.eps, self.be)
            self.refreshed = it
        return self.target


def _multiply(a, b):
    """``a *= b`` (in place, on blocks)."""
    np.multiply(a, b, out=a)


def _abs2(psi, out):
    """``out = |psi|^2``."""
    np.abs(psi, out=out)
    np.multiply(out, out, out=out)


def _effective(calc, abs2, amp, w0_inv, eps2):
    """In place: ``calc = amp sqrt(min(abs2 / max(calc, eps2), 1 / w0))``.

    Equal to ``amp sqrt(abs2 / max(calc, w0 abs2, eps2))`` (both 0 where ``abs2`` is).
    """
    np.maximum(calc, eps2, out=calc)
    np.divide(abs2, calc, out=calc)
    np.minimum(calc, w0_inv, out=calc)
    np.sqrt(calc, out=calc)
    np.multiply(calc, amp, out=calc)
