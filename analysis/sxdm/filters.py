"""Detector-frame filters and background estimates for SXDM reduction.

Pure numpy/scipy functions acting on the last two axes (detector rows, cols)
of arrays of frames; counts in, float32 out.

The 2x2 median of the paper's Methods is a *true* median: the mean of the two
middle values of each 2x2 window (silx silently returns the input for even
sizes). An even-sized window is anchored on its
top-left pixel, so its output is centred half a pixel down and right: callers
evaluating Q of filtered pixels use :func:`median_offset`.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

__all__ = ["median_filter_frames", "median_offset", "masked_windows", "snip_background", "clipped_background",
           "hot_pixel_mask", "maxipix_gap_mask"]


def median_offset(size: int) -> float:
    """Pixel offset ``(size - 1) / 2`` of the centre of a ``size`` x ``size`` median window."""
    return (int(size) - 1) / 2.0


def median_filter_frames(frames, size: int = 2, pixel_mask=None) -> np.ndarray:
    """True ``size`` x ``size`` median filter of each detector frame.

    Parameters
    ----------
    frames : ndarray, shape (..., rows, cols)
        Counts.
    size : int
        Window edge in pixels (>= 1; 1 returns a float32 copy). For even
        sizes the median of the ``size**2`` values is the mean of the two
        middle values, and the window covers pixels ``r .. r + size - 1``
        (its centre is at ``r + median_offset(size)``). Edges repeat the
        last row/column.
    pixel_mask : ndarray of bool, shape (rows, cols), optional
        Bad pixels. With ``size`` 2 a window holding bad pixels takes the median of
        its good ones (0 when it has none), so a dead pixel does not pull its
        neighbours down; other sizes read bad pixels as 0.

    Returns
    -------
    ndarray, float32, same shape as ``frames``.

    Examples
    --------
    >>> f = np.array([[0, 4], [4, 0]], dtype=np.uint32)
    >>> median_filter_frames(f, 2)[0, 0]
    2.0
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"median size must be >= 1, got {size!r}")
    f = np.asarray(frames, dtype=np.float32)
    if f.ndim < 2:
        raise ValueError(f"frames must have at least 2 dimensions (rows, cols), got shape {f.shape}")
    bad = None if pixel_mask is None else np.asarray(pixel_mask, dtype=bool)
    if bad is not None and bad.any():
        f = np.where(bad, np.float32(0), f)
    elif size == 1:
        return f.copy()
    if size == 1:
        return f
    if size % 2 == 1:
        return ndimage.median_filter(f, size=(1,) * (f.ndim - 2) + (size, size), mode="nearest")
    if size == 2:
        out = _median2x2(f)
        if bad is not None and bad.any():
            _patch_masked_windows(out, f, bad)
        return out
    pad = [(0, 0)] * (f.ndim - 2) + [(0, size - 1), (0, size - 1)]
    p = np.pad(f, pad, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(p, (size, size), axis=(-2, -1))
    win = win.reshape(win.shape[:-2] + (size * size,))
    return np.median(win, axis=-1).astype(np.float32)


def _median2x2(f):
    """Mean of the two middle values of each 2x2 window (last row/column repeated).

    With ``hi_k = max`` and ``lo_k = min`` of the two pairs (a, b) and (c, d),
    the two middle values of the four are ``min(hi_1, hi_2)`` and
    ``max(lo_1, lo_2)``; computed in place, a few passes over the data.
    """
    # neighbours with the last row/column repeated (edge padding) without a padded copy
    right = np.empty_like(f)
    right[..., :-1] = f[..., 1:]
    right[..., -1] = f[..., -1]
    hi1 = np.maximum(f, right)
    lo1 = np.minimum(f, right, out=right)
    hi2 = np.empty_like(f)
    hi2[..., :-1, :] = hi1[..., 1:, :]
    hi2[..., -1, :] = hi1[..., -1, :]
    lo2 = np.empty_like(f)
    lo2[..., :-1, :] = lo1[..., 1:, :]
    lo2[..., -1, :] = lo1[..., -1, :]
    # rows below: the pair (c, d) of window (r, c) is the pair (a, b) of window (r + 1, c)
    np.minimum(hi1, hi2, out=hi1)
    np.maximum(lo1, lo2, out=lo1)
    hi1 += lo1
    hi1 *= np.float32(0.5)
    return hi1


def masked_windows(pixel_mask) -> np.ndarray:
    """2 x 2 median windows (anchored top-left, last row/column repeated) holding a bad pixel: bool (rows, cols)."""
    bad = np.asarray(pixel_mask, dtype=bool)
    out = bad.copy()
    out[:-1] |= bad[1:]
    out[:, :-1] |= out[:, 1:].copy()
    return out


def _patch_masked_windows(out, f, bad):
    """Replace, in place, the windows of ``out`` that hold bad pixels by the median of their good values."""
    rows, cols = bad.shape
    r, c = np.nonzero(masked_windows(bad))
    r2, c2 = np.minimum(r + 1, rows - 1), np.minimum(c + 1, cols - 1)
    values = np.stack([f[..., r, c], f[..., r2, c], f[..., r, c2], f[..., r2, c2]], axis=-1)
    good = ~np.stack([bad[r, c], bad[r2, c], bad[r, c2], bad[r2, c2]], axis=-1)
    values = np.where(good, values, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-bad windows: nanmedian of nothing, read as 0
        out[..., r, c] = np.nan_to_num(np.nanmedian(values, axis=-1), nan=0.0)


def snip_background(frames, width: int = 8, smooth: int = 1) -> np.ndarray:
    """SNIP background of each detector frame (Ryan et al., NIM B 34, 1988).

    Statistics-sensitive non-linear iterative peak clipping in 2D: for window
    half-widths ``k = width .. 1`` each pixel is replaced by the smaller of
    itself and the mean of its neighbours ``k`` pixels away (the four corner
    and four edge neighbours), applied to ``log(log(sqrt(I + 1) + 1) + 1)``.

    Parameters
    ----------
    frames : ndarray, shape (..., rows, cols)
    width : int
        Largest half-width in pixels; should exceed the Bragg peak's half
        width on the detector.
    smooth : int
        Edge of a box average applied first (1 = none): at ~1 count/pixel
        plain SNIP clips the noise and underestimates the background.

    Returns
    -------
    ndarray, float32, same shape: the background estimate in counts.
    """
    width = int(width)
    if width < 1:
        raise ValueError(f"snip width must be >= 1, got {width!r}")
    f = np.asarray(frames, dtype=np.float32)
    if smooth and smooth > 1:
        # low counts: clipping follows the noise minima and biases the background low;
        # a box average first keeps the estimate near the local mean
        f = ndimage.uniform_filter(f, size=(1,) * (f.ndim - 2) + (int(smooth), int(smooth)), mode="nearest")
    v = np.log(np.log(np.sqrt(np.maximum(f, 0) + 1.0) + 1.0) + 1.0)
    pad = [(0, 0)] * (f.ndim - 2) + [(width, width), (width, width)]
    rows, cols = f.shape[-2:]
    for k in range(width, 0, -1):
        p = np.pad(v, pad, mode="edge")

        def sh(dr, dc, p=p):
            return p[..., width + dr:width + dr + rows, width + dc:width + dc + cols]

        edges = (sh(-k, 0) + sh(k, 0) + sh(0, -k) + sh(0, k)) / 4.0
        corners = (sh(-k, -k) + sh(-k, k) + sh(k, -k) + sh(k, k)) / 4.0
        v = np.minimum(v, np.maximum(edges, corners))
    back = (np.exp(np.exp(v) - 1.0) - 1.0) ** 2 - 1.0
    return np.maximum(back, 0).astype(np.float32)


def clipped_background(values, valid=None, *, n_sigma: float = 3.0, iterations: int = 5,
                       max_samples: int | None = 32768):
    """Per-map-pixel constant background by iterative sigma clipping.

    Parameters
    ----------
    values : ndarray, shape (npix, nvox)
        All voxels (every rocking angle and detector pixel) of each map pixel.
    valid : ndarray of bool, shape (nvox,) or (npix, nvox), optional
        Voxels to use (detector pixel mask; per map pixel, also its frames with data).
    n_sigma : float
        Voxels above ``mean + n_sigma * std`` are clipped (the Bragg peak).
    iterations : int
    max_samples : int or None
        Use a regular subsample of at most this many voxels per map pixel
        (``None``: all).

    Returns
    -------
    level, spread : ndarray, shape (npix,)
        Clipped mean and standard deviation in counts.
    """
    v = np.asarray(values, dtype=np.float32)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
    if max_samples and v.shape[1] > max_samples:
        # a regular subsample of the voxels is enough for a mean and a spread
        step = int(np.ceil(v.shape[1] / max_samples))
        v = v[:, ::step]
        valid = None if valid is None else valid[..., ::step]
    keep = np.ones(v.shape, dtype=bool) if valid is None else np.broadcast_to(valid, v.shape).copy()
    level = spread = None
    for _ in range(int(iterations)):
        n = np.maximum(keep.sum(axis=1), 1)
        s1 = np.where(keep, v, 0).sum(axis=1, dtype=np.float64)
        s2 = np.where(keep, v * v, 0).sum(axis=1, dtype=np.float64)
        level = s1 / n
        spread = np.sqrt(np.maximum(s2 / n - level ** 2, 0))
        new = keep & (v <= (level + n_sigma * spread + 1e-6)[:, None])
        if valid is not None:
            new &= valid
        if np.array_equal(new, keep):
            break
        keep = new
    return level.astype(np.float32), spread.astype(np.float32)


def hot_pixel_mask(summed, *, n_sigma: float = 10.0, dead: bool = True) -> np.ndarray:
    """Bad detector pixels from a frame summed over many exposures.

    A pixel is hot when it exceeds the 3x3 median of its neighbourhood by
    ``n_sigma`` Poisson standard deviations; with ``dead`` a pixel reading 0
    where its neighbourhood median is above 5 counts is flagged too.

    Parameters
    ----------
    summed : ndarray, shape (rows, cols)
        Counts summed over frames (e.g. ``sxdm_grid.sum_frames(...).sum(0)``).

    Returns
    -------
    ndarray of bool, shape (rows, cols): True for bad pixels (``pixel_mask=``).
    """
    s = np.asarray(summed, dtype=float)
    if s.ndim != 2:
        raise ValueError(f"summed must be a 2-D frame (rows, cols), got shape {s.shape}")
    local = ndimage.median_filter(s, size=3, mode="nearest")
    bad = s > local + float(n_sigma) * np.sqrt(local + 1.0)
    if dead:
        bad |= (s == 0) & (local > 5)
    return bad


def maxipix_gap_mask(shape=(516, 516)) -> np.ndarray:
    """Chip-gap pixels of the ID01 Maxipix 2x2 (516 x 516) as a bad-pixel mask.

    The 516-pixel image holds two 256-pixel chips per axis with the two
    triple-width edge pixels spread over pixels 255..260 (counts divided):
    those rows and columns are masked.
    """
    rows, cols = (int(v) for v in shape)
    mask = np.zeros((rows, cols), dtype=bool)
    for axis, n in ((0, rows), (1, cols)):
        if n == 516:
            idx = [slice(None), slice(None)]
            idx[axis] = slice(255, 261)
            mask[tuple(idx)] = True
        elif n not in (256, 512):
            raise ValueError(f"shape {shape!r} is not a Maxipix layout (256, 512 or 516 per axis)")
    return mask
