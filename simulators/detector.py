"""Maxipix 2x2 detector helpers (512x512 raw, 516x516 gap-expanded ID01 image).

The ID01 Maxipix 2x2 (``mpx1x4``) is four 256x256 chips. The pixels at the
inner chip edges are three pixels wide (they cover the gap between chips), so
ID01 images are 516x516: raw pixel 255 is spread over image pixels 255-257 and
raw pixel 256 over 258-260 along each axis, counts divided by three.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAXIPIX_CHIP", "expand_maxipix_gaps", "maxipix_raw_index"]

MAXIPIX_CHIP = 256


def maxipix_raw_index(n_raw: int = 512) -> np.ndarray:
    """For each pixel of the gap-expanded axis, the raw pixel it comes from.

    >>> idx = maxipix_raw_index()
    >>> idx.size, list(idx[254:262])
    (516, [254, 255, 255, 255, 256, 256, 256, 257])
    """
    if n_raw != 2 * MAXIPIX_CHIP:
        raise ValueError(f"n_raw must be {2 * MAXIPIX_CHIP} (2 chips), got {n_raw!r}")
    c = MAXIPIX_CHIP
    return np.concatenate([np.arange(c - 1), [c - 1] * 3, [c] * 3, np.arange(c + 1, 2 * c)])


def expand_maxipix_gaps(frame: np.ndarray) -> np.ndarray:
    """512x512 raw frame -> 516x516 ID01 image, edge counts shared between 3 pixels.

    Integer counts are split exactly (``n // 3`` each, the remainder given to
    the first pixels), so the total is conserved.

    Parameters
    ----------
    frame : ndarray (512, 512), integer
    """
    frame = np.asarray(frame)
    if frame.shape != (2 * MAXIPIX_CHIP, 2 * MAXIPIX_CHIP):
        raise ValueError(f"frame must be 512x512, got shape {frame.shape}")
    out = frame
    for axis in (0, 1):
        out = _expand_axis(out, axis)
    return out


def _expand_axis(a: np.ndarray, axis: int) -> np.ndarray:
    idx = maxipix_raw_index(a.shape[axis])
    out = np.take(a, idx, axis=axis)
    c = MAXIPIX_CHIP
    for raw, first in ((c - 1, c - 1), (c, c + 2)):
        src = np.take(a, raw, axis=axis)
        if np.issubdtype(a.dtype, np.integer):
            base, rem = src // 3, src % 3
            parts = [base + (rem > k) for k in range(3)]
        else:
            parts = [src / 3.0] * 3
        for k in range(3):
            sl = [slice(None)] * a.ndim
            sl[axis] = first + k
            out[tuple(sl)] = parts[k]
    return out
