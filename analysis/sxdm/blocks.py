"""Per-chunk work of an SXDM reduction: read a block of map pixels, reduce it to sums.

A block is a slab of map pixels (whole rows when they fit in ``chunk_mb``).
Each is read once (:func:`read_block`), median filtered, normalised to the
monitor, background subtracted and reduced to the sums from which
:func:`braggscope.analysis.sxdm.maps.derive_maps` makes the maps: the weight
``s0``, first moments ``s1`` and second moments ``s2`` of Q - ``q_ref``, the
integrated intensity per angle and the background level. The common case runs
in one pass of the numba kernel (:mod:`braggscope.analysis.sxdm.kernels`);
SNIP background, larger medians and Gaussian fits take the numpy path.
"""

from __future__ import annotations

import math

import numpy as np

from braggscope.analysis.sxdm import kernels as sxdm_kernels
from braggscope.analysis.sxdm.filters import clipped_background, median_filter_frames, snip_background
from braggscope.analysis.sxdm.plan import Plan, frame_missing

__all__ = ["block_slices", "read_block", "reduce_block"]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # Gaussian FWHM / sigma


def block_slices(ny, nx, ppc):
    """Blocks of at most ``ppc`` map pixels, ``(row slice, column slice)``: whole rows when they fit."""
    blocks = []
    if ppc >= nx:
        by = max(1, ppc // nx)
        for y0 in range(0, ny, by):
            blocks.append((slice(y0, min(ny, y0 + by)), slice(0, nx)))
    else:
        for y0 in range(ny):
            for x0 in range(0, nx, ppc):
                blocks.append((slice(y0, y0 + 1), slice(x0, min(nx, x0 + ppc))))
    return blocks


def read_block(frames, eta_sl, ys, xs, det_roi):
    """Read ``frames[eta_sl, ys, xs, rows, cols]`` as a numpy array (numpy, dask or h5py)."""
    r0, r1, c0, c1 = det_roi
    key = (eta_sl, ys, xs, slice(r0, r1), slice(c0, c1))
    if hasattr(frames, "read_direct") and hasattr(frames, "id"):  # h5py: straight into numpy, one copy
        shape = tuple(len(range(*k.indices(n))) for k, n in zip(key, frames.shape))
        block = np.empty(shape, dtype=frames.dtype)
        if block.size:
            frames.read_direct(block, key)
        return block
    block = frames[key]
    if hasattr(block, "compute"):
        block = block.compute(scheduler="sync")
    return np.asarray(block)


def reduce_block(plan: Plan, ys, xs):
    """Sums of the map pixels ``frames[:, ys, xs]`` (dict of arrays, see the module)."""
    opt = plan.options
    n_eta = plan.shape[0]
    raw = read_block(plan.frames, slice(None), ys, xs, plan.det_roi)
    if raw.ndim != 5:
        raise ValueError(f"frames chunk read with shape {raw.shape}, expected 5 dimensions")
    if plan.fused:
        return _reduce_block_fused(plan, raw, ys, xs)
    _, by, bx, nr, nc = raw.shape
    npx = by * bx
    present = ~frame_missing(raw, plan.valid)
    if plan.monitor is not None:
        present &= plan.monitor[:, ys, xs] > 0
    raw = raw.astype(np.float32)
    raw[~present] = 0  # missing frames: no NaN into the sums, and no weight (below)
    # bad pixels (hot, dead, gaps) must not leak into their neighbours through the median
    bad = None if plan.valid.all() else ~plan.valid.reshape(nr, nc)
    f = median_filter_frames(raw, opt.median, pixel_mask=bad)  # float32 (n_eta, by, bx, nr, nc)
    del raw
    if plan.monitor is not None:
        f *= plan.monitor[:, ys, xs][..., None, None]
    f = f.reshape(n_eta, npx, nr * nc)
    present = present.reshape(n_eta, npx)
    level, cut = _subtract_background(f, plan, present)
    f *= present[..., None]
    if not plan.all_inside:
        f *= plan.inside[:, None, :]
    eta_int = np.where(present, f.sum(axis=2), np.nan).reshape(n_eta, by, bx)
    intensity = np.nansum(eta_int, axis=0)
    # weights of the centre of mass: the excess of the voxels over the noise cut (soft thresholding), a cut
    # that follows each frame's counting noise: a frame scaled by s has sqrt(s) times the noise at the reference
    thr = np.float32(opt.noise_sigma) * cut if opt.background != "none" else np.float32(0)
    if plan.monitor is not None and opt.background != "none":
        thr = thr * np.sqrt(plan.monitor[:, ys, xs].reshape(n_eta, npx, 1))
    f -= thr
    np.maximum(f, 0, out=f)
    w = f
    s0 = w.sum(axis=(0, 2))
    moments = np.matmul(w, plan.dq).sum(axis=0, dtype=np.float64)  # (npx, 9)
    out = dict(s0=s0.reshape(by, bx), s1=moments[:, :3].reshape(by, bx, 3),
               s2=moments[:, 3:].reshape(by, bx, 6),
               intensity=intensity, eta_intensity=eta_int,
               background=np.asarray(level, np.float32).reshape(by, bx))
    if plan.bins is not None:
        out["gauss"] = _fit_projections(w, plan.bins).reshape(by, bx, 6)
    return out


def _subtract_background(f, plan: Plan, present):
    """Subtract the background from ``f`` (n_eta, npx, npix) in place: its level and noise cut per map pixel.

    Only the frames ``present`` (n_eta, npx) are background samples.
    """
    bg = plan.options.background
    n_eta, npx, _ = f.shape
    r0, r1, c0, c1 = plan.det_roi
    nr, nc = r1 - r0, c1 - c0
    if bg == "constant":
        level, spread = _clipped_level(f, plan.usable, nr, present)
        f -= level[None, :, None]
        cut = spread[None, :, None]
    elif bg == "snip":
        back = snip_background(f.reshape(n_eta * npx, nr, nc)).reshape(f.shape)
        f -= back
        n_good = np.maximum(1, plan.usable.sum() * present.sum(axis=0))
        level = (np.where(plan.usable, back, 0) * present[..., None]).sum(axis=(0, 2)) / n_good
        del back
        # SNIP follows the noise minima (biased low at a few counts/pixel): remove the
        # remaining flat offset with the clipped mean of the residual
        offset, spread = _clipped_level(f, plan.usable, nr, present)
        f -= offset[None, :, None]
        level = level + offset
        cut = spread[None, :, None]
    elif bg == "none":
        level = np.zeros(npx, np.float32)
        cut = np.float32(0)
    else:
        f -= np.float32(bg)
        level = np.full(npx, bg, np.float32)
        cut = np.float32(np.sqrt(max(bg, 0)))
    return level, cut


def _reduce_block_fused(plan: Plan, raw, ys, xs):
    """:func:`reduce_block` in one pass over the raw counts (``sxdm_kernels``)."""
    opt = plan.options
    n_eta, by, bx, nr, nc = raw.shape
    npx = by * bx
    if raw.dtype.kind not in "iuf" or not raw.dtype.isnative:
        raw = raw.astype(np.float32)
    good = plan.valid.reshape(nr, nc).astype(np.float32)
    size = opt.median
    if plan.monitor is None:
        scale = np.ones((n_eta, npx), np.float32)
    else:
        scale = np.ascontiguousarray(plan.monitor[:, ys, xs].reshape(n_eta, npx))
    bg = opt.background
    fixed = np.nan if bg == "constant" else 0.0 if bg == "none" else float(bg)
    rows = sxdm_kernels.background_rows(n_eta, nr, nc)
    valid_rows = np.tile(plan.usable.reshape(nr, nc)[rows].ravel().astype(np.float32), n_eta)
    bad_ptr, bad_cols = sxdm_kernels.masked_window_lists(plan.valid.reshape(nr, nc))
    eta_int, s0, moments, level = sxdm_kernels.reduce_chunk(
        raw, good, size, scale, fixed, float(opt.noise_sigma), rows, valid_rows, plan.inside,
        plan.all_inside, plan.dq, int(np.argmax(plan.valid)), bad_ptr, bad_cols)
    eta_int = eta_int.reshape(n_eta, by, bx)
    return dict(s0=s0.reshape(by, bx), s1=moments[:, :3].reshape(by, bx, 3),
                s2=moments[:, 3:].reshape(by, bx, 6), intensity=np.nansum(eta_int, axis=0),
                eta_intensity=eta_int.astype(np.float32), background=level.reshape(by, bx))


def _clipped_level(f, valid, nr, present):
    """Clipped mean and spread per map pixel over the rows ``background_rows`` samples, of the frames
    ``present`` (n_eta, npx)."""
    n_eta, npx, npix = f.shape
    nc = npix // nr
    rows = sxdm_kernels.background_rows(n_eta, nr, nc)
    sub = f.reshape(n_eta, npx, nr, nc)[:, :, rows, :]
    sub = np.ascontiguousarray(np.transpose(sub, (1, 0, 2, 3))).reshape(npx, -1)
    good = valid.reshape(nr, nc)[rows].ravel()
    good = (present.T[:, :, None] & good[None, None, :]).reshape(npx, -1)
    return clipped_background(sub, good, max_samples=None)


def _fit_projections(w, bins):
    """Gaussian + constant fits of each map pixel's projections on Qx, Qy, Qz."""
    from scipy.optimize import curve_fit

    n_eta, npx, npix = w.shape
    res = np.full((npx, 6), np.nan)
    for ax, (idx, lo, step, nb) in enumerate(bins):
        flat = idx.ravel()
        ok = flat >= 0
        centres = lo + (np.arange(nb) + 0.5) * step
        for p in range(npx):
            wp = w[:, p, :].ravel()
            prof = np.bincount(flat[ok], weights=wp[ok], minlength=nb)
            tot = prof.sum()
            if not tot > 0:
                continue
            mu = float((prof * centres).sum() / tot)
            sig = float(np.sqrt(max((prof * (centres - mu) ** 2).sum() / tot, step ** 2 / 4)))
            try:
                popt, _ = curve_fit(_gauss, centres, prof, p0=(prof.max(), mu, sig, 0.0), maxfev=2000)
            except (RuntimeError, ValueError):
                continue
            if centres[0] <= popt[1] <= centres[-1]:
                res[p, ax] = popt[1]
                res[p, 3 + ax] = abs(popt[2]) * FWHM_PER_SIGMA
    return res


def _gauss(x, a, mu, sigma, c):
    return a * np.exp(-0.5 * ((x - mu) / sigma) ** 2) + c

