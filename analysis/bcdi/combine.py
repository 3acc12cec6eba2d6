"""Combining the kept random starts of a phase retrieval, as PyNX does.

Two starts that both fit the data differ by what the data cannot fix: a
global phase, the twin ``conj(rho(-r))`` and a translation, which need not be
a whole number of voxels. :func:`register` removes the three (the twin and
the whole-voxel shift from the amplitudes' cross-correlation, the rest of the
shift from its upsampled peak, applied as a Fourier phase ramp, then the
global phase); :func:`orthogonal_modes` decomposes the registered objects
into orthogonal modes (eigenvectors of their Gram matrix, i.e. an SVD of the
stack), whose weights say how much the starts agree: the first mode's weight
is 1 when they are identical. :func:`combine` does both and the
phase-aligned average.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import fourier_shift
from skimage.registration import phase_cross_correlation

from .runs import _twin, center_object, orthogonal_modes

__all__ = ["Combination", "registration", "shifted", "register", "combine"]

#: Sub-voxel registration: 1/UPSAMPLE of a voxel.
UPSAMPLE = 20


@dataclass
class Combination:
    """Registered starts, their average and modes.

    Attributes
    ----------
    mode : ndarray
        First mode, scaled to the mean norm of the starts, phased like the reference.
    average : ndarray
        Mean of the registered starts.
    weights : ndarray
        Weight of each mode (``s_k^2 / sum s^2``, descending; 1.0 for one start).
    runs : list of ndarray
        The registered starts, the reference first.
    support : ndarray of bool
        The reference's support, centred like the runs.
    """

    mode: np.ndarray
    average: np.ndarray
    weights: np.ndarray
    runs: list = field(repr=False, default_factory=list)
    support: np.ndarray | None = field(repr=False, default=None)

    @property
    def first_mode_weight(self) -> float:
        """Weight of the first mode (the starts' agreement)."""
        return float(self.weights[0])


def registration(obj, ref, *, upsample: int = UPSAMPLE):
    """How ``obj`` moves onto ``ref``: ``(twin, shift)``.

    ``twin`` is True when the twin ``conj(obj(-r))`` matches ``ref`` better
    (the overlap ``|<ref, obj>|`` after the whole-voxel shift of the
    amplitudes' cross-correlation); ``shift`` (voxels per axis) is that
    whole-voxel shift plus, with ``upsample`` > 1, the rest to ``1/upsample``
    voxel from the upsampled cross-correlation of the amplitudes.
    """
    fr = np.fft.fftn(np.abs(ref))
    best = None
    for twin in (False, True):
        cand = _twin(obj) if twin else np.asarray(obj)
        cc = np.real(np.fft.ifftn(fr * np.conj(np.fft.fftn(np.abs(cand)))))
        peak = np.unravel_index(np.argmax(cc), cc.shape)
        shift = tuple(int(p) if p <= n // 2 else int(p - n) for p, n in zip(peak, cc.shape))
        moved = np.roll(cand, shift, tuple(range(cand.ndim)))
        score = abs(np.vdot(ref, moved))
        if best is None or score > best[0]:
            best = (score, twin, shift, moved)
    _, twin, shift, moved = best
    rest = np.zeros(len(shift))
    if upsample > 1:
        rest = phase_cross_correlation(np.abs(ref), np.abs(moved), upsample_factor=upsample, normalization=None)[0]
    return twin, np.asarray(shift, dtype=float) + rest


def shifted(obj, shift):
    """``obj`` moved by ``shift`` voxels (periodic): a roll for whole voxels, else a Fourier phase ramp."""
    shift = np.asarray(shift, dtype=float)
    whole = np.round(shift)
    if np.allclose(shift, whole, atol=1e-9):
        return np.roll(obj, tuple(int(s) for s in whole), tuple(range(np.ndim(obj))))
    return np.fft.ifftn(fourier_shift(np.fft.fftn(obj), shift)).astype(np.complex64)


def register(obj, ref, *, upsample: int = UPSAMPLE):
    """``obj`` (or its twin) moved onto ``ref`` (:func:`registration`), then its global phase matched."""
    twin, shift = registration(obj, ref, upsample=upsample)
    moved = shifted(_twin(obj) if twin else obj, shift)
    return (moved * np.exp(1j * np.angle(np.vdot(moved, ref)))).astype(np.complex64)


def combine(objs, supports, *, upsample: int = UPSAMPLE) -> Combination:
    """Register starts to the first (centred on its support), average them and decompose them into modes.

    Parameters
    ----------
    objs : list of ndarray
        Complex objects of one shape (physical sign), the reference first
        (the best by the chosen metric).
    supports : list of ndarray of bool
        Their supports (only the reference's is used: it centres the result).
    upsample : int
        Sub-voxel registration to ``1/upsample`` voxel (1: whole voxels only).
    """
    ref, sup = center_object(np.asarray(objs[0]), np.asarray(supports[0], bool))
    runs = [ref.astype(np.complex64)] + [register(o, ref, upsample=upsample) for o in objs[1:]]
    modes, weights = orthogonal_modes(runs, n_modes=len(runs))
    mode = modes[0]
    norm = np.linalg.norm(mode)
    if norm > 0:
        mode = mode / norm * np.mean([np.linalg.norm(r) for r in runs])
    mode *= np.exp(1j * np.angle(np.vdot(mode, ref)))
    average = np.mean(np.stack(runs), axis=0)
    return Combination(mode=mode.astype(np.complex64), average=average.astype(np.complex64), weights=weights,
                       runs=runs, support=sup)
