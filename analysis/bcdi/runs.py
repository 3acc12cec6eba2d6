"""Metrics, alignment and mode decomposition of BCDI phase-retrieval runs.

Used by :func:`braggscope.analysis.bcdi.phasing.phase_retrieval` (and
re-exported there): per-run quality metrics, centring, registration of a run
(or its twin) to a reference, the SVD mode of aligned runs and the removal
of a linear phase ramp.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from scipy.ndimage import center_of_mass, gaussian_filter1d

from . import backend, coherence

__all__ = ["run_metrics", "center_object", "embed_centred", "align_to_reference", "mode_decomposition",
           "orthogonal_modes", "remove_phase_ramp", "phase_ramp", "apply_phase_ramp", "to_physical_sign"]


def to_physical_sign(obj: np.ndarray) -> np.ndarray:
    """Convert an FFT-retrieved object to the physical sign convention.

    The single place where braggscope flips the sign (see
    :mod:`.phasing`): returns ``conj(obj)``.
    """
    return np.conj(obj)


def run_metrics(obj, support, intensity, mask=None, coherence_px=None) -> dict:
    """Quality metrics of one run (lower is better for each).

    Returns
    -------
    dict
        ``llk``: Poisson log-likelihood per measured voxel of the intensity
        computed from ``obj`` (0 = perfect); ``chi2``: sum (|F|-sqrt(I))^2 /
        sum I; ``sharpness``: ``mean(|rho|^4) / mean(|rho|^2)^2`` inside the
        support (1 for a flat amplitude, larger for speckled, failed runs);
        ``mean_to_max``: 1 - (mean amplitude / histogram mode) inside the
        support, in absolute value; ``support_size`` in voxels;
        ``coherence_px`` as given: the calculated intensity is blurred by
        these Gaussian widths (partial coherence) before the comparison.
    """
    calc = np.abs(np.fft.fftshift(sfft.fftn(np.conj(obj), workers=backend.threads()))) ** 2  # back to the FFT frame
    if coherence_px is not None:
        calc = coherence.blur(calc, coherence_px)
    meas = np.ones(intensity.shape, bool) if mask is None else ~mask
    i = intensity[meas].astype(np.float64)
    c = np.maximum(calc[meas].astype(np.float64), 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(i > 0, i * np.log(i / c), 0.0)
    llk = float(np.mean(c - i + term))
    chi2 = float(np.sum((np.sqrt(c) - np.sqrt(i)) ** 2) / max(np.sum(i), 1e-30))
    a = np.abs(obj[support]).astype(np.float64)
    pc = None if coherence_px is None else [float(s) for s in coherence_px]
    if a.size == 0 or not a.max() > 0:
        return {"llk": llk, "chi2": chi2, "sharpness": np.inf, "mean_to_max": np.inf, "support_size": 0,
                "coherence_px": pc}
    sharp = float(np.mean(a**4) / np.mean(a**2) ** 2)
    an = a / a.max()
    hist, edges = np.histogram(an, bins=50, range=(0, 1))
    hist = gaussian_filter1d(hist.astype(float), 2.0)
    mode_val = 0.5 * (edges[np.argmax(hist)] + edges[np.argmax(hist) + 1])
    m2m = float(abs(1 - an.mean() / mode_val))
    return {"llk": llk, "chi2": chi2, "sharpness": sharp, "mean_to_max": m2m, "support_size": int(support.sum()),
            "coherence_px": pc}


def center_object(obj, support):
    """Roll ``obj`` and ``support`` so that the support's centre of mass is at the array centre."""
    com = np.array(center_of_mass(support.astype(float)))
    shift = tuple(int(round(s // 2 - c)) for s, c in zip(obj.shape, com))
    axes = tuple(range(obj.ndim))
    return np.roll(obj, shift, axes), np.roll(support, shift, axes)


def _twin(obj):
    """Twin image ``conj(obj(-r))`` about the array centre (index N//2)."""
    flipped = np.conj(obj[(slice(None, None, -1),) * obj.ndim])
    # reversal maps i -> N-1-i; centre N//2 -> N-1-N//2: roll back for even N
    shift = tuple(1 if s % 2 == 0 else 0 for s in obj.shape)
    return np.roll(flipped, shift, tuple(range(obj.ndim)))


def embed_centred(a, shape):
    """``a`` centred in a zero array of ``shape`` (cropped centrally where larger).

    Puts two objects of different sizes on one grid before
    :func:`align_to_reference`.
    """
    out = np.zeros(shape, a.dtype)
    src = tuple(slice(max(0, (s - t) // 2), max(0, (s - t) // 2) + min(s, t)) for s, t in zip(a.shape, shape))
    dst = tuple(slice(max(0, (t - s) // 2), max(0, (t - s) // 2) + min(s, t)) for s, t in zip(a.shape, shape))
    out[dst] = a[src]
    return out


def align_to_reference(obj, ref):
    """Register ``obj`` (or its twin) to ``ref``: integer shift, then global phase.

    The shift comes from the cross-correlation of the amplitudes; the twin is
    chosen when it correlates better. Returns the aligned complex object.
    """
    best, best_cc = None, -np.inf
    fr = np.fft.fftn(np.abs(ref))
    for cand in (obj, _twin(obj)):
        cc = np.real(np.fft.ifftn(fr * np.conj(np.fft.fftn(np.abs(cand)))))
        peak = np.unravel_index(np.argmax(cc), cc.shape)
        shift = tuple(int(p) if p <= s // 2 else int(p - s) for p, s in zip(peak, cc.shape))
        moved = np.roll(cand, shift, tuple(range(obj.ndim)))
        score = abs(np.vdot(ref, moved))
        if score > best_cc:
            best, best_cc = moved, score
    g = np.vdot(best, ref)  # sum conj(best) * ref
    return best * np.exp(1j * np.angle(g)).astype(np.complex64)


def mode_decomposition(objs):
    """First orthogonal mode of aligned objects and its weight (:func:`orthogonal_modes`).

    Parameters
    ----------
    objs : list of ndarray
        Aligned complex objects of one shape.

    Returns
    -------
    mode : ndarray
        First mode, scaled to the mean norm of the inputs and phased like
        the first input.
    fraction : float
        ``s_1^2 / sum s_k^2`` (1.0 for a single object).
    """
    modes, weights = orthogonal_modes(objs, n_modes=1)
    mode = modes[0].ravel()
    norm = np.linalg.norm(mode)
    if norm > 0:
        mode = mode / norm * np.mean([np.linalg.norm(o) for o in objs])
    mode *= np.exp(1j * np.angle(np.vdot(mode, np.asarray(objs[0]).ravel())))
    return mode.reshape(np.shape(objs[0])), float(weights[0])


def orthogonal_modes(objs, n_modes: int | None = None):
    """Orthogonal modes of objects of one shape, and their weights.

    The eigen-decomposition of the Gram matrix ``<o_i, o_j>`` gives the SVD
    of the stack (the modes are its right singular vectors scaled by the
    singular values), as PyNX's ``ortho_modes``.

    Returns
    -------
    modes : ndarray (n_modes, *shape), complex
        Modes in decreasing weight; mode ``k`` has norm ``s_k``.
    weights : ndarray (n_modes,)
        ``s_k^2 / sum s^2``.
    """
    x = np.stack([np.asarray(o).ravel() for o in objs]).astype(np.complex128)
    gram = x.conj() @ x.T  # (n, n) Hermitian: <o_i, o_j>
    w, v = np.linalg.eigh(gram)
    order = np.argsort(w)[::-1]
    w, v = np.clip(w[order], 0, None), v[:, order]
    n = len(w) if n_modes is None else min(int(n_modes), len(w))
    modes = (v[:, :n].T @ x) if n else np.zeros((0, x.shape[1]), x.dtype)  # norms sqrt(w_k)
    total = w.sum()
    weights = w[:n] / total if total > 0 else np.zeros(n)
    return modes.reshape((n, *np.shape(objs[0]))), weights


def phase_ramp(obj, support) -> tuple:
    """Linear phase ramp of ``obj`` inside ``support``: radians per voxel along each axis.

    The slope per axis is the phase of the sum of ``obj[i+1] conj(obj[i])``
    over neighbours both inside the support (insensitive to wrapping).
    """
    obj = np.asarray(obj)
    support = np.asarray(support, bool)
    slopes = []
    for ax in range(obj.ndim):
        a = np.take(obj, range(obj.shape[ax] - 1), axis=ax)
        b = np.take(obj, range(1, obj.shape[ax]), axis=ax)
        both = np.take(support, range(obj.shape[ax] - 1), axis=ax) & np.take(support, range(1, obj.shape[ax]), axis=ax)
        slopes.append(float(np.angle(np.sum((b * np.conj(a))[both]))) if both.any() else 0.0)
    return tuple(slopes)


def apply_phase_ramp(obj, slopes):
    """``obj`` times ``exp(i sum_ax slope_ax (n_ax - N_ax // 2))``: adds the ramp (negative slopes remove it)."""
    obj = np.asarray(obj)
    ramp = np.zeros(obj.shape)
    for ax, slope in enumerate(slopes):
        if slope:
            shape = [1] * obj.ndim
            shape[ax] = -1
            ramp = ramp + slope * (np.arange(obj.shape[ax], dtype=np.float64) - obj.shape[ax] // 2).reshape(shape)
    return obj * np.exp(1j * ramp)


def remove_phase_ramp(obj, support):
    """Remove the linear phase ramp (:func:`phase_ramp`) and the mean phase inside ``support``.

    The offset is the phase of the support sum. Returns a new complex array.
    """
    support = np.asarray(support, bool)
    out = apply_phase_ramp(obj, [-s for s in phase_ramp(obj, support)])
    out *= np.exp(-1j * np.angle(np.sum(out[support])))
    return out
