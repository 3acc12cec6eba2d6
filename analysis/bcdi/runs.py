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

from . import coherence

__all__ = ["run_metrics", "center_object", "embed_centred", "align_to_reference", "mode_decomposition",
           "remove_phase_ramp"]


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
    calc = np.abs(np.fft.fftshift(sfft.fftn(np.conj(obj), workers=-1))) ** 2  # back to the FFT frame
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
    """First SVD mode of aligned objects and its weight.

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
    x = np.stack([o.ravel() for o in objs]).astype(np.complex128)
    gram = x.conj() @ x.T  # (n, n) Hermitian
    w, v = np.linalg.eigh(gram)
    w = np.clip(w, 0, None)
    fraction = float(w[-1] / w.sum()) if w.sum() > 0 else 0.0
    mode = v[:, -1].conj() @ x  # combination weighted by the first eigenvector
    mode /= np.linalg.norm(mode)
    mode *= np.mean(np.linalg.norm(x, axis=1))
    g = np.vdot(mode, x[0])
    mode *= np.exp(1j * np.angle(g))
    return mode.reshape(objs[0].shape), fraction


def remove_phase_ramp(obj, support):
    """Remove the linear phase ramp and the mean phase inside ``support``.

    The ramp per axis is the mean phase difference between neighbours inside
    the support (insensitive to wrapping); the offset is the phase of the
    support sum. Returns a new complex array.
    """
    obj = np.asarray(obj)
    support = np.asarray(support, bool)
    grids = np.indices(obj.shape, dtype=np.float64)
    ramp = np.zeros(obj.shape)
    for ax in range(obj.ndim):
        a = np.take(obj, range(obj.shape[ax] - 1), axis=ax)
        b = np.take(obj, range(1, obj.shape[ax]), axis=ax)
        both = np.take(support, range(obj.shape[ax] - 1), axis=ax) & np.take(support, range(1, obj.shape[ax]), axis=ax)
        if both.any():
            slope = np.angle(np.sum((b * np.conj(a))[both]))
            ramp += slope * (grids[ax] - obj.shape[ax] // 2)
    out = obj * np.exp(-1j * ramp)
    out *= np.exp(-1j * np.angle(np.sum(out[support])))
    return out
