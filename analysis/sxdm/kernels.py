"""Fused per-voxel kernels of the SXDM reduction (numba, GIL released).

The numpy path of :func:`braggscope.analysis.sxdm.reduce_stack` makes about
ten float32 passes over each chunk of frames (cast, median, monitor,
background, Q mask, sums, threshold, moments). These kernels do the same
arithmetic in one pass over the raw counts, row by row: the 2x2 median of two
cached detector rows, scaling, background subtraction, the Q mask, the
per-angle integral, and the centre-of-mass moments of the voxels above the
noise cut (few: the Bragg peak), accumulated in float64.

Semantics are those of ``sxdm_filters.median_filter_frames`` (true 2x2
median, last row/column repeated, a window holding bad pixels the median of
its good ones) and
``sxdm_filters.clipped_background``; ``tests/test_sxdm_kernels.py`` checks
them against those numpy functions.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from braggscope.analysis.sxdm.filters import masked_windows

# reassociation lets LLVM vectorise the float32 row loops (sums, min/max); no
# "nnan"/"ninf": NaN or inf counts still propagate as in the numpy path
_FAST = {"reassoc", "nsz", "contract"}

__all__ = ["reduce_chunk", "filtered_rows", "clipped_levels", "background_rows", "masked_window_lists"]


def background_rows(n_eta, nr, nc, max_samples=32768):
    """Detector rows sampled by the clipped background: every ``step``-th, centred.

    About ``max_samples`` voxels per map pixel (all rows of small frames):
    enough for a mean and a spread, and whole rows keep the sampling pass
    as cheap as the filter itself.
    """
    step = max(1, int(np.ceil(n_eta * nr * nc / max_samples)))
    first = ((nr - 1) % step) // 2
    return np.arange(first, nr, step, dtype=np.int64)


@njit(nogil=True, cache=True, fastmath=_FAST, inline="always")
def _filtered_row(frame, r, good, size, hi, lo, out, sc, lv, th, inside, base, bad_ptr, bad_cols):
    """Row ``r`` of the filtered ``frame``, ``(median * sc - lv) * inside[base + c]``, into ``out``.

    Returns the row's sum and how many of its values exceed ``th``. The two
    middle values of a 2x2 window are the smaller of its two column maxima
    and the larger of its two column minima; each column pair (rows r, r + 1)
    is sorted once and shared by the two windows over it. Plain 2D indexing,
    no row views: LLVM vectorises these loops (row views made them 2x slower).
    The few windows holding bad pixels are then patched (:func:`_patch_windows`).
    """
    nr, nc = frame.shape
    s = np.float32(0.0)
    n = np.float32(0.0)
    if size == 1:
        for c in range(nc):
            v = (np.float32(frame[r, c]) * good[r, c] * sc - lv) * inside[base + c]
            out[c] = v
            s += v
            n += np.float32(1.0) if v > th else np.float32(0.0)
        return s, n
    r2 = min(r + 1, nr - 1)
    for c in range(nc):
        a = np.float32(frame[r, c]) * good[r, c]
        b = np.float32(frame[r2, c]) * good[r2, c]
        hi[c] = max(a, b)
        lo[c] = min(a, b)
    half = np.float32(0.5) * sc
    for c in range(nc - 1):
        v = ((min(hi[c], hi[c + 1]) + max(lo[c], lo[c + 1])) * half - lv) * inside[base + c]
        out[c] = v
        s += v
        n += np.float32(1.0) if v > th else np.float32(0.0)
    v = ((hi[nc - 1] + lo[nc - 1]) * half - lv) * inside[base + nc - 1]  # last column repeated
    out[nc - 1] = v
    s += v
    n += np.float32(1.0) if v > th else np.float32(0.0)
    ds, dn = _patch_windows(frame, r, good, out, sc, lv, th, inside, base, bad_ptr, bad_cols)
    return s + ds, n + dn


@njit(nogil=True, cache=True, fastmath=_FAST, inline="always")
def _patch_windows(frame, r, good, out, sc, lv, th, inside, base, bad_ptr, bad_cols):
    """Windows of row ``r`` holding bad pixels: the median of their good values (0 if none), as
    ``filters.median_filter_frames(pixel_mask=...)``. Returns the change of the row's sum and count."""
    nr, nc = frame.shape
    r2 = min(r + 1, nr - 1)
    ds = np.float32(0.0)
    dn = np.float32(0.0)
    for k in range(bad_ptr[r], bad_ptr[r + 1]):
        c = bad_cols[k]
        c2 = min(c + 1, nc - 1)
        med = _good_median(frame, good, r, c, r2, c2)
        v = (med * sc - lv) * inside[base + c]
        old = out[c]
        out[c] = v
        ds += v - old
        dn += (np.float32(1.0) if v > th else np.float32(0.0)) - (np.float32(1.0) if old > th else np.float32(0.0))
    return ds, dn


@njit(nogil=True, cache=True, inline="always")
def _good_median(frame, good, r, c, r2, c2):
    """Median of the good pixels of the window (r, c), (r2, c), (r, c2), (r2, c2); 0 if none. No allocation:
    called for every frame and detector row that holds a bad pixel."""
    a0 = a1 = a2 = a3 = np.float32(0.0)
    m = 0
    for rr, cc in ((r, c), (r2, c), (r, c2), (r2, c2)):
        if good[rr, cc] > 0:
            v = np.float32(frame[rr, cc])
            if m == 0:
                a0 = v
            elif m == 1:
                a1 = v
            elif m == 2:
                a2 = v
            else:
                a3 = v
            m += 1
    if m == 0:
        return np.float32(0.0)
    if m == 1:
        return a0
    if m == 2:
        return np.float32(0.5) * (a0 + a1)
    if m == 3:
        return max(min(a0, a1), min(max(a0, a1), a2))
    return np.float32(0.5) * (min(max(a0, a1), max(a2, a3)) + max(min(a0, a1), min(a2, a3)))


def masked_window_lists(valid):
    """The 2x2 windows holding bad pixels, per row: ``(ptr (rows + 1,), cols)`` int64 (CSR), from the good
    pixels ``valid`` (rows, cols) bool."""
    windows = masked_windows(~np.asarray(valid, dtype=bool))
    counts = windows.sum(axis=1)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return ptr, np.nonzero(windows)[1].astype(np.int64)


@njit(nogil=True, cache=True, fastmath=_FAST, inline="always")
def _clipped(v, valid, n_sigma, iterations):
    """Sigma-clipped mean and spread of ``v`` (see :func:`clipped_levels`)."""
    cut = np.inf
    count = -1.0
    m = 0.0
    s = 0.0
    for _ in range(iterations):
        n = 0.0
        s1 = 0.0
        s2 = 0.0
        for j in range(v.size):  # branch-free: vectorised
            x = np.float64(v[j])
            k = np.float64(valid[j]) if x <= cut else 0.0
            n += k
            s1 += k * x
            s2 += k * x * x
        if n == count:  # the kept set only shrinks: same size, same set
            break
        count = n
        nn = max(n, 1.0)
        m = s1 / nn
        s = np.sqrt(max(s2 / nn - m * m, 0.0))
        cut = m + n_sigma * s + 1e-6
    return np.float32(m), np.float32(s)


@njit(nogil=True, cache=True, fastmath=_FAST)
def clipped_levels(values, valid, n_sigma, iterations):
    """Iteratively sigma-clipped mean and spread of each row of ``values``.

    Same rule as ``sxdm_filters.clipped_background``: start from the valid
    voxels, drop those above ``mean + n_sigma * std`` (the Bragg peak) and
    repeat until nothing changes or ``iterations`` are done.

    Parameters
    ----------
    values : ndarray of float32, shape (npx, nvox)
    valid : ndarray of float32, shape (nvox,)
        1 for voxels to use, 0 for bad pixels.

    Returns
    -------
    level, spread : ndarray of float32, shape (npx,)
    """
    npx = values.shape[0]
    level = np.zeros(npx, np.float32)
    spread = np.zeros(npx, np.float32)
    for i in range(npx):
        level[i], spread[i] = _clipped(values[i], valid, n_sigma, iterations)
    return level, spread


@njit(nogil=True, cache=True, fastmath=_FAST)
def filtered_rows(raw, good, size, rows, bad_ptr, bad_cols):
    """Median-filtered detector ``rows`` of every frame of a chunk.

    Parameters
    ----------
    raw : ndarray, shape (n_eta, by, bx, nr, nc)
        Counts of one chunk (any numeric dtype).
    good : ndarray of float32, shape (nr, nc)
        1 for good detector pixels, 0 for bad ones (zeroed before the median).
    size : int
        Median window edge: 1 or 2.
    rows : ndarray of int64
        Detector rows to return.
    bad_ptr, bad_cols : ndarray of int64
        The windows holding bad pixels (:func:`masked_window_lists`), whose median is that of
        their good pixels.

    Returns
    -------
    ndarray of float32, shape (n_eta, by * bx, len(rows) * nc)
    """
    n_eta, by, bx, nr, nc = raw.shape
    out = np.empty((n_eta, by * bx, rows.size * nc), np.float32)
    hi = np.empty(nc, np.float32)
    lo = np.empty(nc, np.float32)
    ones = np.ones(nc, np.float32)
    for e in range(n_eta):
        for y in range(by):
            for x in range(bx):
                for j in range(rows.size):
                    _filtered_row(raw[e, y, x], rows[j], good, size, hi, lo, out[e, y * bx + x, j * nc:(j + 1) * nc],
                                  np.float32(1.0), np.float32(0.0), np.float32(np.inf), ones, 0, bad_ptr, bad_cols)
    return out


@njit(nogil=True, cache=True, fastmath=_FAST)
def reduce_chunk(raw, good, size, scale, fixed_level, noise_sigma, rows, valid_rows, inside, all_inside, dq,
                 first_good, bad_ptr, bad_cols):
    """Background, per-angle integrals and centre-of-mass moments of one chunk.

    The background level of each map pixel is the sigma-clipped mean of the filtered voxels of detector ``rows`` at
    every angle (``fixed_level`` NaN), or ``fixed_level``; then, for each
    voxel, ``v = median(raw) * scale - level`` (times the Q mask) adds to the
    angle's integral and, where it exceeds the noise cut ``th``, ``noise_sigma``
    times the spread (for a fixed level, its square root) times ``sqrt(scale)``
    (the frame's own counting noise), weighs the moments by its excess ``v - th``
    (soft thresholding: no jump as a voxel crosses the cut): ``sum (v - th)`` and
    ``sum (v - th) * dq[e, k, pixel]``. A missing frame (``scale`` 0: no beam;
    NaN on its first good pixel: shifted in from outside the map) is left out of
    both: its integral is NaN.

    Parameters
    ----------
    raw : ndarray, shape (n_eta, by, bx, nr, nc)
        Counts (any numeric dtype).
    good : ndarray of float32, shape (nr, nc)
        1 for good detector pixels, 0 for bad ones (zeroed before the median).
    size : int
        Median window edge: 1 or 2.
    scale : ndarray of float32, shape (n_eta, by * bx)
        Monitor normalisation (ones without a monitor), 0 for a frame taken without beam.
    fixed_level : float
        Constant background in counts, or NaN for the clipped estimate.
    noise_sigma : float
        Noise cut in units of the background spread.
    rows : ndarray of int64
        Detector rows sampled by the clipped estimate.
    valid_rows : ndarray of float32, shape (n_eta * len(rows) * nc,)
        ``good`` on those rows, angle after angle.
    inside : ndarray of float32, shape (n_eta, nr * nc)
        1 for voxels inside the Q region and not on bad pixels, else 0.
    all_inside : bool
        ``inside`` is all ones: skip it.
    dq : ndarray of float32, shape (n_eta, 9, nr * nc)
        Q - q_ref and its products (one contiguous row per product).
    first_good : int
        Flat index of the first good detector pixel (where a missing frame is NaN).
    bad_ptr, bad_cols : ndarray of int64
        The 2x2 windows holding bad pixels (:func:`masked_window_lists`): their median is that of
        their good pixels.

    Returns
    -------
    eta_int : ndarray of float64, shape (n_eta, by * bx)
        NaN for missing frames.
    s0 : ndarray of float64, shape (by * bx,)
    moments : ndarray of float64, shape (by * bx, 9)
    level : ndarray of float32, shape (by * bx,)
    """
    n_eta, by, bx, nr, nc = raw.shape
    npx = by * bx
    eta_int = np.zeros((n_eta, npx))
    s0 = np.zeros(npx)
    mom = np.zeros((npx, 9))
    row = np.empty(nc, np.float32)
    hi = np.empty(nc + 1, np.float32)
    lo = np.empty(nc + 1, np.float32)
    m9 = np.empty(9, np.float32)
    present = _present_frames(raw, scale, first_good // nc, first_good % nc)
    # background of every map pixel first, so that the main pass can run angle by
    # angle: the Q products of one angle (dq[e]) then stay in cache for all pixels
    levels, thr = _levels(raw, good, size, scale, fixed_level, noise_sigma, rows, valid_rows, present,
                          bad_ptr, bad_cols)
    for e in range(n_eta):
        dq_e, inside_e = dq[e], inside[e]
        for i in range(npx):
            if not present[e, i]:
                eta_int[e, i] = np.nan
                continue
            frame = raw[e, i // bx, i % bx]
            # the noise cut follows this frame's counting noise: scaled by sc, Poisson noise grows as sqrt(sc)
            sc, lv, th = scale[e, i], levels[i], thr[i] * np.sqrt(scale[e, i])
            acc = 0.0
            half = np.float32(0.5) * sc
            for r in range(nr):
                base = r * nc
                # written out here, not via _filtered_row: inlined, that is ~1.5x slower
                total = np.float32(0.0)
                above = np.float32(0.0)
                if size == 1:
                    for c in range(nc):
                        v = (np.float32(frame[r, c]) * good[r, c] * sc - lv) * inside_e[base + c]
                        row[c] = v
                        total += v
                        above += np.float32(1.0) if v > th else np.float32(0.0)
                else:
                    r2 = min(r + 1, nr - 1)
                    for c in range(nc):  # column pairs (rows r, r2) sorted once, shared by two windows
                        a = np.float32(frame[r, c]) * good[r, c]
                        b = np.float32(frame[r2, c]) * good[r2, c]
                        hi[c] = max(a, b)
                        lo[c] = min(a, b)
                    hi[nc] = hi[nc - 1]  # last column repeated
                    lo[nc] = lo[nc - 1]
                    if all_inside:  # no mask to apply: the common case, ~1.5x faster
                        for c in range(nc):
                            v = (min(hi[c], hi[c + 1]) + max(lo[c], lo[c + 1])) * half - lv
                            row[c] = v
                            total += v
                            above += np.float32(1.0) if v > th else np.float32(0.0)
                    else:
                        for c in range(nc):
                            v = ((min(hi[c], hi[c + 1]) + max(lo[c], lo[c + 1])) * half - lv) * inside_e[base + c]
                            row[c] = v
                            total += v
                            above += np.float32(1.0) if v > th else np.float32(0.0)
                    if bad_ptr[r + 1] > bad_ptr[r]:
                        d_total, d_above = _patch_windows(frame, r, good, row, sc, lv, th, inside_e, base,
                                                          bad_ptr, bad_cols)
                        total += d_total
                        above += d_above
                acc += total
                if above == 0:  # most rows: background only
                    continue
                s0[i] += _weigh_row(row, th, dq_e, base, above, m9)
                for k in range(9):
                    mom[i, k] += m9[k]
            eta_int[e, i] = acc
    return eta_int, s0, mom, levels


@njit(nogil=True, cache=True, fastmath=_FAST)
def _levels(raw, good, size, scale, fixed_level, noise_sigma, rows, valid_rows, present, bad_ptr, bad_cols):
    """Background level and noise cut of every map pixel of a chunk (see :func:`reduce_chunk`)."""
    n_eta, by, bx, _, nc = raw.shape
    npx = by * bx
    nsub = rows.size * nc
    levels = np.zeros(npx, np.float32)
    thr = np.zeros(npx, np.float32)
    if not np.isnan(fixed_level):
        levels[:] = np.float32(fixed_level)
        thr[:] = np.float32(noise_sigma) * np.float32(np.sqrt(max(fixed_level, 0.0)))
        return levels, thr
    sub = np.empty(n_eta * nsub, np.float32)
    valid_sub = np.empty(n_eta * nsub, np.float32)
    hi = np.empty(nc + 1, np.float32)
    lo = np.empty(nc + 1, np.float32)
    ones = np.ones(nc, np.float32)
    for i in range(npx):
        for e in range(n_eta):  # a missing frame's voxels are no background samples
            keep = np.float32(1.0) if present[e, i] else np.float32(0.0)
            valid_sub[e * nsub:(e + 1) * nsub] = valid_rows[e * nsub:(e + 1) * nsub] * keep
        levels[i], spread = _pixel_background(raw, i // bx, i % bx, good, size, scale[:, i], rows,
                                               valid_sub, sub, hi, lo, ones, present[:, i], bad_ptr, bad_cols)
        thr[i] = np.float32(noise_sigma) * spread
    return levels, thr


@njit(nogil=True, cache=True, fastmath=_FAST)
def _pixel_background(raw, y, x, good, size, scale, rows, valid_rows, sub, hi, lo, ones, present, bad_ptr,
                      bad_cols):
    """Clipped level and spread of map pixel (y, x) over the sampled rows of the angles it was measured at."""
    nc = raw.shape[4]
    k = 0
    for e in range(raw.shape[0]):
        sc = scale[e]
        for j in range(rows.size):
            if present[e]:
                _filtered_row(raw[e, y, x], rows[j], good, size, hi, lo, sub[k:k + nc], sc, np.float32(0.0),
                              np.float32(np.inf), ones, 0, bad_ptr, bad_cols)
            else:  # NaN frames: zeros with no weight, so the clipped sums stay finite
                sub[k:k + nc] = 0.0
            k += nc
    return _clipped(sub, valid_rows, 3.0, 5)


@njit(nogil=True, cache=True)
def _present_frames(raw, scale, r, c):
    """(n_eta, by * bx) bool: frames measured with beam (``scale`` > 0) and not NaN at pixel (r, c)."""
    n_eta, by, bx = raw.shape[:3]
    out = np.empty((n_eta, by * bx), np.bool_)
    for e in range(n_eta):
        for i in range(by * bx):
            out[e, i] = scale[e, i] > 0 and not np.isnan(np.float32(raw[e, i // bx, i % bx, r, c]))
    return out


@njit(nogil=True, cache=True, fastmath=_FAST, inline="always")
def _weigh_row(row, th, dq_e, base, above, m9):
    """Moments of the voxels of ``row`` above ``th``, weighed by their excess: returns ``sum (v - th)``,
    ``m9[k] = sum (v - th) dq``.

    ``above`` of them: a few (noise) are picked by a scan; more (the peak)
    are weighed branch-free, a select then nine contiguous dot products.
    """
    nc = row.size
    s = np.float32(0.0)
    if above <= 8:
        for k in range(9):
            m9[k] = 0.0
        for c in range(nc):
            v = row[c]
            if v > th:
                v = v - th
                s += v
                for k in range(9):
                    m9[k] += v * dq_e[k, base + c]
        return s
    for c in range(nc):
        v = row[c]
        w = v - th if v > th else np.float32(0.0)
        row[c] = w
        s += w
    for k in range(9):
        q = dq_e[k, base:base + nc]
        a = np.float32(0.0)
        for c in range(nc):
            a += row[c] * q[c]
        m9[k] = a
    return s
