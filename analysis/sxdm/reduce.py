"""SXDM reduction: strain and tilt maps from a stack of rocking-angle maps.

Paper Methods ("SXDM data analysis"): the diffracted intensity of each map
pixel is placed in reciprocal space, 2x2 median filtered, and the centre of
mass (COM) of the Bragg peak gives the local scattering vector ``Q_local``;
pixels below 20 % of the maximum intensity are masked.

Instead of gridding every map pixel into a regular Q grid (XSOCS), the COM
is accumulated directly over the measured voxels: for each rocking angle the
Q of every detector pixel (``q_frame``, computed once per angle) is weighted
by the background-subtracted counts, so ``Q_local = sum(w Q) / sum(w)``.
Frames are read in chunks of map pixels (never the whole stack), chunks run
in parallel with dask (threads by default) behind a tqdm progress bar.

Conventions: docs/conventions.md (Q in 1/Angstrom, sample frame;
d-spacing in Angstrom; strain in microstrain, ``(d - d_mean) / d_mean``;
tilts in degrees with the general ``Q_bar`` frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from braggscope.analysis.sxdm.maps import derive_maps, derive_strain_tilt, tilt_angles  # noqa: F401
from braggscope.analysis.sxdm import kernels as sxdm_kernels
from braggscope.analysis.sxdm.filters import (
    clipped_background,
    median_filter_frames,
    median_offset,
    snip_background,
)

__all__ = [
    "reduce_stack",
    "derive_maps",
    "tilt_angles",
    "q_frames",
    "integrate_eta_maps",
    "read_block",
    "q_resolution",
]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # Gaussian FWHM / sigma


def reduce_stack(frames, eta, geometry, delta, nu=0.0, phi=0.0, *, threshold=0.2,
                 background="constant", noise_sigma=3.0, median=2, pixel_mask=None,
                 monitor=None, roi=None, detector_roi=None, fit="com", x=None, y=None,
                 chunk_mb=32.0, scheduler="threads", num_workers=None, progress=True):
    """Reduce an SXDM stack to intensity, d-spacing, strain and tilt maps.

    Parameters
    ----------
    frames : array-like, shape (n_eta, ny, nx, rows, cols)
        Detector counts: numpy array, dask array, h5py dataset or anything
        sliceable like one. Read one chunk of map pixels at a time.
    eta : array-like, shape (n_eta,)
        Rocking angles in degrees.
    geometry : braggscope.core.geometry.Geometry
        Energy, distance, pixel size and direct-beam pixel of ``frames``.
    delta, nu, phi : float or array-like of shape (n_eta,)
        Detector and sample angles in degrees.
    threshold : float
        Mask: integrated (background-subtracted) intensity >= ``threshold``
        times the map maximum (0.2, the paper's 20 %). Derived maps are NaN
        outside the mask.
    background : {"constant", "snip", "none"} or float
        ``"constant"``: per map pixel, the sigma-clipped mean over all
        voxels (robust to the Bragg peak); ``"snip"``: 2D SNIP of each
        filtered frame; a float: that constant in counts (after the median
        filter and monitor normalisation); ``"none"``: no subtraction (COM
        is then biased toward the centre of the measured volume).
    noise_sigma : float
        After subtraction, voxels below ``noise_sigma`` times the background
        spread do not weigh in the centre of mass (0 keeps every voxel).
    median : int
        Edge of the true median filter applied to each frame (2 = the paper's
        2x2; 1 = none).
    pixel_mask : array-like of bool, shape (rows, cols), optional
        True for bad detector pixels (hot pixels, chip gaps): excluded.
    monitor : array-like, shape (n_eta, ny, nx) or (n_eta,), optional
        Incident flux; frames are scaled by ``mean(monitor) / monitor``.
    roi : ((qx0, qx1), (qy0, qy1), (qz0, qz1)), optional
        Reciprocal-space box (1/Angstrom, sample frame): only voxels inside
        count (e.g. one crystal's peak, see :func:`find_peaks_q`). ``None``
        for an axis leaves it open.
    detector_roi : (row0, row1, col0, col1), optional
        Detector pixels read (half-open ranges).
    fit : {"com", "gaussian"}
        ``"gaussian"`` also fits a Gaussian plus constant to the projections
        of each peak on Qx, Qy and Qz (centre and FWHM per axis).
    x, y : array-like, optional
        Piezo positions (micrometres) of the map columns (nx) and rows (ny).
    chunk_mb : float
        Approximate size of one chunk of frames in memory (as float32), MB;
        each worker holds one chunk (the numpy path, used by ``"snip"``,
        ``fit="gaussian"`` and medians above 2, about four).
    scheduler : str or dask.distributed.Client
        ``"threads"`` (default), ``"sync"``, or a distributed client or
        scheduler address (``"tcp://..."``; needs a picklable ``frames``,
        e.g. a dask array).
    num_workers : int, optional
        Threads for the threaded scheduler.
    progress : bool
        Show a tqdm progress bar over chunks.

    Returns
    -------
    xarray.Dataset
        Variables ``intensity`` (counts), ``mask``, ``qx``, ``qy``, ``qz``
        (1/Angstrom), ``q_norm``, ``d_spacing`` (Angstrom), ``strain``
        (microstrain), ``tilt_altitude``, ``tilt_azimuth`` (degrees),
        ``background`` (counts per voxel), ``sigma_qx/qy/qz`` (second-moment
        widths, 1/Angstrom) and with ``fit="gaussian"`` also
        ``gauss_qx/qy/qz`` and ``fwhm_qx/qy/qz``; per-angle integrated maps
        ``eta_intensity`` (eta, y, x). Each ``(ny, nx)`` with coordinates
        ``y``, ``x`` (micrometres when given); parameters in ``attrs``.
        Variables are also attributes: ``maps.strain``.

    Examples
    --------
    >>> maps = reduce_stack(frames, eta, Geometry(8.33, 0.5, 55e-6, (256, 256)),
    ...                     delta=18.0)                      # doctest: +SKIP
    >>> float(maps.strain.std())                             # doctest: +SKIP
    """
    _check_scheduler(scheduler)
    plan = _plan(frames, eta, geometry, delta, nu, phi, threshold=threshold,
                 background=background, noise_sigma=noise_sigma, median=median,
                 pixel_mask=pixel_mask, monitor=monitor, roi=roi,
                 detector_roi=detector_roi, fit=fit, x=x, y=y, chunk_mb=chunk_mb)
    blocks = _block_slices(plan.shape[1], plan.shape[2], plan.pixels_per_chunk)
    results = _run_blocks(plan, blocks, scheduler, num_workers, progress)
    sums = _assemble(plan, blocks, results)
    return derive_maps(sums, plan)


# --------------------------------------------------------------------------
# planning: validate inputs, precompute Q per angle
# --------------------------------------------------------------------------
@dataclass
class _Plan:
    frames: object
    shape: tuple
    eta: np.ndarray
    geometry: object
    det_roi: tuple
    dq: np.ndarray          # (n_eta, npix, 9) float32: Q - q_ref, products
    q_ref: np.ndarray       # (3,) float64
    inside: np.ndarray      # (n_eta, npix): in the Q roi and not a bad pixel (bool; fused: float32 0/1)
    all_inside: bool
    valid: np.ndarray       # (npix,) bool: good detector pixels
    monitor: np.ndarray | None
    options: dict
    x: np.ndarray
    y: np.ndarray
    pixels_per_chunk: int
    bins: list | None
    fused: bool             # one-pass numba kernel (median 1 or 2, flat background, COM only)


def _angles(value, n_eta, name):
    a = np.asarray(value, dtype=float)
    if a.ndim == 0:
        return np.full(n_eta, float(a))
    if a.shape != (n_eta,):
        raise ValueError(f"{name} must be a scalar or have shape ({n_eta},) like eta, got {a.shape}")
    return a


def _plan(frames, eta, geometry, delta, nu, phi, *, threshold, background, noise_sigma,
          median, pixel_mask, monitor, roi, detector_roi, fit, x, y, chunk_mb):
    shape = tuple(int(s) for s in getattr(frames, "shape", ()))
    if len(shape) != 5:
        raise ValueError(f"frames must have shape (n_eta, ny, nx, rows, cols), got {shape}")
    n_eta, ny, nx, rows, cols = shape
    if min(shape) < 1:
        raise ValueError(f"frames has an empty axis: shape {shape}")
    eta = np.asarray(eta, dtype=float).ravel()
    if eta.shape != (n_eta,):
        raise ValueError(f"eta must have {n_eta} values (frames axis 0), got {eta.size}")
    delta_a, nu_a, phi_a = (_angles(v, n_eta, n) for v, n in ((delta, "delta"), (nu, "nu"), (phi, "phi")))
    if not (0.0 <= float(threshold) < 1.0):
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    if isinstance(background, str):
        if background not in ("constant", "snip", "none"):
            raise ValueError(f"background must be 'constant', 'snip', 'none' or a number, got {background!r}")
    else:
        background = float(background)
    if fit not in ("com", "gaussian"):
        raise ValueError(f"fit must be 'com' or 'gaussian', got {fit!r}")
    if float(noise_sigma) < 0:
        raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma!r}")
    median = int(median)
    if median < 1:
        raise ValueError(f"median must be >= 1, got {median!r}")
    if not hasattr(geometry, "q_pixels"):
        raise TypeError(f"geometry must be a braggscope.core.geometry.Geometry, got {type(geometry).__name__}")

    r0, r1, c0, c1 = 0, rows, 0, cols
    if detector_roi is not None:
        r0, r1, c0, c1 = (int(v) for v in detector_roi)
        if not (0 <= r0 < r1 <= rows and 0 <= c0 < c1 <= cols):
            raise ValueError(f"detector_roi {detector_roi!r} is outside the {rows}x{cols} detector")
    nr, nc = r1 - r0, c1 - c0
    valid = np.ones((nr, nc), dtype=bool)
    if pixel_mask is not None:
        pm = np.asarray(pixel_mask, dtype=bool)
        if pm.shape != (rows, cols):
            raise ValueError(f"pixel_mask must have the detector shape {(rows, cols)}, got {pm.shape}")
        valid = ~pm[r0:r1, c0:c1]
    valid = valid.ravel()

    if monitor is not None:
        mon = np.asarray(monitor, dtype=float)
        if mon.shape == (n_eta,):
            mon = np.broadcast_to(mon[:, None, None], (n_eta, ny, nx))
        if mon.shape != (n_eta, ny, nx):
            raise ValueError(f"monitor must have shape ({n_eta},) or {(n_eta, ny, nx)}, got {mon.shape}")
        if not np.all(mon > 0):
            raise ValueError("monitor must be > 0 everywhere")
        monitor = (mon.mean() / mon).astype(np.float32)

    # Q of every (filtered) pixel, per angle; even median windows are centred half a pixel off
    off = median_offset(median)
    rr = np.arange(r0, r1, dtype=float)[:, None] + off
    cc = np.arange(c0, c1, dtype=float)[None, :] + off
    q = np.empty((n_eta, 3, nr * nc))
    for i in range(n_eta):
        q[i] = geometry.q_pixels(rr, cc, eta[i], delta_a[i], nu_a[i], phi_a[i]).reshape(3, -1)
    q_ref = q.mean(axis=(0, 2))
    q = np.transpose(q, (0, 2, 1))  # (n_eta, npix, 3)
    inside = np.broadcast_to(valid, (n_eta, nr * nc)).copy()
    if roi is not None:
        roi = _check_roi(roi)
        for ax, lim in enumerate(roi):
            if lim is not None:
                inside &= (q[..., ax] >= lim[0]) & (q[..., ax] <= lim[1])
        if not inside.any():
            raise ValueError(f"roi {roi!r} contains no measured voxel")
    dq = q - q_ref
    pairs = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
    dq = np.concatenate([dq] + [dq[..., a:a + 1] * dq[..., b:b + 1] for a, b in pairs], axis=-1)
    dq = dq.astype(np.float32)  # (n_eta, npix, 9): Q - q_ref and its products
    # the fused kernel (median 1 or 2, flat background, COM only) reads one product at a time
    fused = median in (1, 2) and background != "snip" and fit == "com"
    if fused:
        dq = np.ascontiguousarray(np.transpose(dq, (0, 2, 1)))  # (n_eta, 9, npix)
        inside_w = inside.astype(np.float32)  # a weight: no branch in the kernel

    bins = None
    if fit == "gaussian":
        bins = _projection_bins(q, inside, q_resolution(geometry, eta, delta_a, nu_a, phi_a, (nr, nc)))

    x = np.arange(nx, dtype=float) if x is None else np.asarray(x, dtype=float)
    y = np.arange(ny, dtype=float) if y is None else np.asarray(y, dtype=float)
    if x.shape != (nx,):
        raise ValueError(f"x must have {nx} values (frames axis 2), got shape {x.shape}")
    if y.shape != (ny,):
        raise ValueError(f"y must have {ny} values (frames axis 1), got shape {y.shape}")

    # the fused kernel holds only the raw chunk; the numpy path a few float32 copies of it
    per_pixel = n_eta * nr * nc * 4 * (1 if fused else 4)
    ppc = max(1, int(float(chunk_mb) * 1e6 // per_pixel))
    options = dict(threshold=float(threshold), background=background, noise_sigma=float(noise_sigma),
                   median=median, fit=fit, roi=roi, detector_roi=(r0, r1, c0, c1))
    all_inside = bool(inside.all())
    if fused:
        inside = inside_w
    return _Plan(frames, shape, eta, geometry, (r0, r1, c0, c1), dq, q_ref, inside, all_inside,
                 valid, monitor, options, x, y, ppc, bins, fused)


def _check_roi(roi):
    try:
        roi = [None if lim is None else (float(lim[0]), float(lim[1])) for lim in roi]
    except (TypeError, IndexError, ValueError):
        raise ValueError(f"roi must be ((qx0, qx1), (qy0, qy1), (qz0, qz1)), got {roi!r}") from None
    if len(roi) != 3 or any(lim is not None and not lim[0] < lim[1] for lim in roi):
        raise ValueError(f"roi must be three increasing (min, max) pairs or None, got {roi!r}")
    return tuple(roi)


def _projection_bins(q, inside, step):
    """Per-axis bin index of every voxel for the Gaussian projections."""
    out = []
    for ax in range(3):
        lo = q[..., ax][inside].min()
        idx = np.floor((q[..., ax] - lo) / step[ax]).astype(np.int32)
        idx = np.where(inside, idx, -1)
        out.append((idx, float(lo), float(step[ax]), int(idx.max()) + 1))
    return out


def q_resolution(geometry, eta, delta, nu=0.0, phi=0.0, detector_shape=(2, 2)):
    """Natural Q bin size per axis (1/Angstrom) from the detector pixel and rocking step.

    Q steps between neighbouring detector pixels (row, column) and between
    consecutive rocking angles, taken at the detector centre and the middle
    angle; each axis gets the largest of their components along it.

    Returns
    -------
    ndarray, shape (3,)
    """
    eta = np.asarray(eta, dtype=float).ravel()
    n = eta.size
    d, v, p = (_angles(a, n, name) for a, name in ((delta, "delta"), (nu, "nu"), (phi, "phi")))
    m = n // 2
    r, c = detector_shape[0] / 2.0, detector_shape[1] / 2.0

    def qat(i, rr, cc):
        return geometry.q_pixels(np.array(rr), np.array(cc), eta[i], d[i], v[i], p[i]).ravel()

    q0 = qat(m, r, c)
    steps = [qat(m, r + 1, c) - q0, qat(m, r, c + 1) - q0]
    if n > 1:
        j = m - 1 if m == n - 1 else m + 1
        steps.append(qat(j, r, c) - q0)
    return np.max(np.abs(np.array(steps)), axis=0)


def _block_slices(ny, nx, ppc):
    """Chunks of map pixels: whole rows when they fit, else pieces of rows."""
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


# --------------------------------------------------------------------------
# per-chunk work
# --------------------------------------------------------------------------
def _reduce_block(plan: _Plan, ys, xs):
    opt = plan.options
    n_eta = plan.shape[0]
    raw = read_block(plan.frames, slice(None), ys, xs, plan.det_roi)
    if raw.ndim != 5:
        raise ValueError(f"frames chunk read with shape {raw.shape}, expected 5 dimensions")
    if plan.fused:
        return _reduce_block_fused(plan, raw, ys, xs)
    _, by, bx, nr, nc = raw.shape
    npx = by * bx
    if not plan.valid.all():
        # bad pixels (hot, dead, gaps) must not leak into their neighbours through the median
        raw = raw.astype(np.float32)
        raw[..., ~plan.valid.reshape(nr, nc)] = 0
    f = median_filter_frames(raw, opt["median"])  # float32 (n_eta, by, bx, nr, nc)
    del raw
    if plan.monitor is not None:
        f *= plan.monitor[:, ys, xs][..., None, None]
    f = f.reshape(n_eta, npx, nr * nc)
    bg = opt["background"]
    if bg == "constant":
        level, spread = _clipped_level(f, plan.valid, nr)
        f -= level[None, :, None]
        cut = spread[None, :, None]
    elif bg == "snip":
        back = snip_background(f.reshape(n_eta * npx, nr, nc)).reshape(f.shape)
        f -= back
        level = np.where(plan.valid, back, 0).sum(axis=(0, 2)) / max(1, plan.valid.sum() * n_eta)
        del back
        # SNIP follows the noise minima (biased low at a few counts/pixel): remove the
        # remaining flat offset with the clipped mean of the residual
        offset, spread = _clipped_level(f, plan.valid, nr)
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
    if not plan.all_inside:
        f *= plan.inside[:, None, :]
    eta_int = f.sum(axis=2).reshape(n_eta, by, bx)
    intensity = eta_int.sum(axis=0)
    # weights of the centre of mass: voxels above the noise cut (and > 0)
    thr = np.float32(opt["noise_sigma"]) * cut if bg != "none" else np.float32(0)
    f *= f > thr
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


def _reduce_block_fused(plan: _Plan, raw, ys, xs):
    """``_reduce_block`` in one pass over the raw counts (``sxdm_kernels``)."""
    opt = plan.options
    n_eta, by, bx, nr, nc = raw.shape
    npx = by * bx
    if raw.dtype.kind not in "iuf" or not raw.dtype.isnative:
        raw = raw.astype(np.float32)
    good = plan.valid.reshape(nr, nc).astype(np.float32)
    size = opt["median"]
    if plan.monitor is None:
        scale = np.ones((n_eta, npx), np.float32)
    else:
        scale = np.ascontiguousarray(plan.monitor[:, ys, xs].reshape(n_eta, npx))
    bg = opt["background"]
    fixed = np.nan if bg == "constant" else 0.0 if bg == "none" else float(bg)
    rows = sxdm_kernels.background_rows(n_eta, nr, nc)
    valid_rows = np.tile(good[rows].ravel(), n_eta)
    eta_int, s0, moments, level = sxdm_kernels.reduce_chunk(
        raw, good, size, scale, fixed, float(opt["noise_sigma"]), rows, valid_rows, plan.inside,
        plan.all_inside, plan.dq)
    eta_int = eta_int.reshape(n_eta, by, bx)
    return dict(s0=s0.reshape(by, bx), s1=moments[:, :3].reshape(by, bx, 3),
                s2=moments[:, 3:].reshape(by, bx, 6), intensity=eta_int.sum(axis=0),
                eta_intensity=eta_int.astype(np.float32), background=level.reshape(by, bx))


def _clipped_level(f, valid, nr):
    """Clipped mean and spread per map pixel over the rows ``background_rows`` samples."""
    n_eta, npx, npix = f.shape
    nc = npix // nr
    rows = sxdm_kernels.background_rows(n_eta, nr, nc)
    sub = f.reshape(n_eta, npx, nr, nc)[:, :, rows, :]
    sub = np.ascontiguousarray(np.transpose(sub, (1, 0, 2, 3))).reshape(npx, -1)
    good = np.broadcast_to(valid.reshape(nr, nc)[rows], (n_eta, rows.size, nc)).ravel()
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


# --------------------------------------------------------------------------
# scheduling
# --------------------------------------------------------------------------
_LOCAL_SCHEDULERS = ("threads", "sync", "synchronous", "single-threaded")


def _check_scheduler(scheduler):
    if isinstance(scheduler, str):
        if scheduler in _LOCAL_SCHEDULERS:
            return
        if "://" not in scheduler:
            raise ValueError(f"scheduler must be one of {_LOCAL_SCHEDULERS}, a distributed address "
                             f"('tcp://host:port') or a dask.distributed Client, got {scheduler!r}")
    elif not hasattr(scheduler, "compute"):
        raise ValueError(f"scheduler must be a name, an address or a dask.distributed Client, got {scheduler!r}")
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ValueError("scheduler: a distributed scheduler needs the 'distributed' package "
                         "(pip install distributed)") from None


def _run_blocks(plan, blocks, scheduler, num_workers, progress):
    import dask
    from tqdm.auto import tqdm

    # one graph node holding the plan as it is: traversed, its dask ``frames`` would become a
    # dependency of every task and the whole stack would be computed into memory first
    plan_node = dask.delayed(plan, traverse=False)
    tasks = [dask.delayed(_reduce_block, pure=False)(plan_node, ys, xs) for ys, xs in blocks]
    bar = tqdm(total=len(tasks), desc="sxdm reduce", unit="chunk", disable=not progress)
    try:
        if isinstance(scheduler, str) and scheduler in _LOCAL_SCHEDULERS:
            from dask.callbacks import Callback

            names = {t.key for t in tasks}

            class _Bar(Callback):
                def _posttask(self, key, result, dsk, state, worker_id):
                    if key in names:
                        bar.update(1)

            kwargs = {"num_workers": num_workers} if num_workers and scheduler == "threads" else {}
            with _Bar():
                return list(dask.compute(*tasks, scheduler=scheduler, **kwargs))
        from dask.distributed import Client, as_completed

        # an address: connect for this reduction only (and disconnect after); a Client: borrow it
        client = Client(scheduler) if isinstance(scheduler, str) else scheduler
        try:
            futures = client.compute(tasks)
            order = {f.key: i for i, f in enumerate(futures)}
            results = [None] * len(futures)
            for fut in as_completed(futures):
                results[order[fut.key]] = fut.result()
                bar.update(1)
            return results
        finally:
            if client is not scheduler:
                client.close()
    finally:
        bar.close()


def _assemble(plan, blocks, results):
    n_eta, ny, nx = plan.shape[:3]
    full = {
        "s0": np.zeros((ny, nx)), "s1": np.zeros((ny, nx, 3)), "s2": np.zeros((ny, nx, 6)),
        "intensity": np.zeros((ny, nx)), "eta_intensity": np.zeros((n_eta, ny, nx), np.float32),
        "background": np.zeros((ny, nx), np.float32),
    }
    if plan.bins is not None:
        full["gauss"] = np.full((ny, nx, 6), np.nan)
    for (ys, xs), r in zip(blocks, results):
        for k, v in r.items():
            if k == "eta_intensity":
                full[k][:, ys, xs] = v
            else:
                full[k][ys, xs] = v
    return full


# --------------------------------------------------------------------------
# helpers used by drift registration, gridding and readers
# --------------------------------------------------------------------------
def q_frames(geometry, eta, delta, nu=0.0, phi=0.0, shape=None, *, offset=0.0):
    """Q of every detector pixel for every rocking angle, float32 (n_eta, 3, rows, cols)."""
    eta = np.asarray(eta, dtype=float).ravel()
    n = eta.size
    d, v, p = (_angles(a, n, name) for a, name in ((delta, "delta"), (nu, "nu"), (phi, "phi")))
    rows, cols = shape
    rr = np.arange(rows, dtype=float)[:, None] + offset
    cc = np.arange(cols, dtype=float)[None, :] + offset
    return np.stack([geometry.q_pixels(rr, cc, eta[i], d[i], v[i], p[i]) for i in range(n)]).astype(np.float32)


def integrate_eta_maps(frames, *, pixel_mask=None, chunk_mb=64.0, progress=True):
    """Integrated intensity of every map pixel at every angle, shape (n_eta, ny, nx).

    Reads ``frames`` (n_eta, ny, nx, rows, cols) one chunk at a time; the input
    of :func:`braggscope.analysis.sxdm.drift.register_drift`.
    """
    from tqdm.auto import tqdm

    shape = tuple(frames.shape)
    if len(shape) != 5:
        raise ValueError(f"frames must have shape (n_eta, ny, nx, rows, cols), got {shape}")
    n_eta, ny, nx, rows, cols = shape
    good = None if pixel_mask is None else ~np.asarray(pixel_mask, dtype=bool)
    ppc = max(1, int(chunk_mb * 1e6 // (rows * cols * 4)))
    out = np.zeros((n_eta, ny, nx))
    blocks = _block_slices(ny, nx, ppc)
    for i in tqdm(range(n_eta), desc="eta maps", disable=not progress):
        for ys, xs in blocks:
            b = read_block(frames, slice(i, i + 1), ys, xs, (0, rows, 0, cols))[0].astype(np.float64)
            out[i, ys, xs] = b.sum(axis=(-2, -1)) if good is None else (b * good).sum(axis=(-2, -1))
    return out
