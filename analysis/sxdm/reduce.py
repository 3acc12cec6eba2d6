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

The steps live in their own modules: ``plan`` (checked inputs, Q of every
voxel), ``blocks`` (one chunk read and reduced to sums), ``scheduling``
(chunks in parallel, put together) and ``maps`` (maps from the sums).

Conventions: docs/conventions.md (Q in 1/Angstrom, sample frame;
d-spacing in Angstrom; strain in microstrain, ``(d - d_mean) / d_mean``;
tilts in degrees with the general ``Q_bar`` frame).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from braggscope.analysis.sxdm.blocks import block_slices, read_block
from braggscope.analysis.sxdm.maps import derive_maps, tilt_angles
from braggscope.analysis.sxdm.options import MapOptions
from braggscope.analysis.sxdm.plan import angles_per_frame, make_plan, q_resolution
from braggscope.analysis.sxdm.scheduling import assemble, check_scheduler, run_blocks

__all__ = [
    "reduce_stack",
    "derive_maps",
    "tilt_angles",
    "q_frames",
    "integrate_eta_maps",
    "read_block",
    "q_resolution",
]


def reduce_stack(frames, eta, geometry, delta, nu=0.0, phi=0.0, *, threshold=0.2,
                 background="constant", noise_sigma=3.0, median=2, pixel_mask=None,
                 monitor=None, monitor_reference=None, monitor_name=None, shifts=None, min_coverage=0.5,
                 roi=None, detector_roi=None, fit="com", x=None, y=None,
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
        spread do not weigh in the centre of mass; those above weigh by their
        excess over that cut (soft thresholding: at a few counts per pixel a
        hard cut jumps with the discrete counts). 0 keeps every positive voxel.
    median : int
        Edge of the true median filter applied to each frame (2 = the paper's
        2x2; 1 = none).
    pixel_mask : array-like of bool, shape (rows, cols), optional
        True for bad detector pixels (hot pixels, chip gaps): excluded.
    monitor : array-like, shape (n_eta, ny, nx) or (n_eta,), optional
        Incident flux (counts of a monitor such as ``mon1``, one per frame or per angle);
        frames are scaled by ``monitor_reference / monitor``. A reading of 0 means no beam:
        that frame is left out (missing data), never divided by.
    monitor_reference : float, optional
        The flux the normalised counts refer to (default: the median of the readings with beam).
    monitor_name : str, optional
        The monitor's name, recorded in the maps' attributes.
    shifts : array-like, shape (n_eta, 2), optional
        Drift ``(dy, dx)`` in map pixels to undo (:func:`~braggscope.analysis.sxdm.drift.register_drift`):
        each frame is normalised, then resampled (:func:`~braggscope.analysis.sxdm.drift.apply_drift`);
        map pixels shifted in from outside the scanned area have no data at that angle.
    min_coverage : float
        Mask: fraction of the angles at which a map pixel must have data (0.5).
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
        ``eta_intensity`` (eta, y, x; NaN where a frame is missing), ``coverage``
        (fraction of angles with data) and with ``shifts`` ``drift_shift`` (eta, axis).
        Each ``(ny, nx)`` with coordinates ``y``, ``x`` (micrometres when given);
        parameters in ``attrs``, the normalisation included (``normalisation``,
        ``monitor``, ``monitor_reference``, ``frames_without_beam``).
        Variables are also attributes: ``maps.strain``.

    Examples
    --------
    >>> maps = reduce_stack(frames, eta, Geometry(8.33, 0.5, 55e-6, (256, 256)),
    ...                     delta=18.0)                      # doctest: +SKIP
    >>> float(maps.strain.std())                             # doctest: +SKIP
    """
    check_scheduler(scheduler)
    options = MapOptions(threshold=threshold, background=background, noise_sigma=noise_sigma, median=median,
                         fit=fit, roi=roi, detector_roi=detector_roi, min_coverage=min_coverage)
    plan = make_plan(frames, eta, geometry, delta, nu, phi, options=options, pixel_mask=pixel_mask,
                     monitor=monitor, x=x, y=y, chunk_mb=chunk_mb, monitor_reference=monitor_reference,
                     monitor_name=monitor_name, shifts=shifts)
    blocks = block_slices(plan.shape[1], plan.shape[2], plan.pixels_per_chunk)
    results = run_blocks(plan, blocks, scheduler, num_workers, progress)
    sums = assemble(plan, blocks, results)
    maps = derive_maps(sums, plan)
    if shifts is not None:
        maps["drift_shift"] = (("eta", "axis"), np.asarray(shifts, float),
                               {"units": "map pixels", "long_name": "(dy, dx) drift undone"})
    return maps


def q_frames(geometry, eta, delta, nu=0.0, phi=0.0, shape=None, *, offset=0.0):
    """Q of every detector pixel for every rocking angle, float32 (n_eta, 3, rows, cols)."""
    eta = np.asarray(eta, dtype=float).ravel()
    n = eta.size
    d, v, p = (angles_per_frame(a, n, name) for a, name in ((delta, "delta"), (nu, "nu"), (phi, "phi")))
    rows, cols = shape
    rr = np.arange(rows, dtype=float)[:, None] + offset
    cc = np.arange(cols, dtype=float)[None, :] + offset
    return np.stack([geometry.q_pixels(rr, cc, eta[i], d[i], v[i], p[i]) for i in range(n)]).astype(np.float32)


def integrate_eta_maps(frames, *, pixel_mask=None, chunk_mb=64.0, progress=True):
    """Integrated intensity of every map pixel at every angle, shape (n_eta, ny, nx).

    Reads ``frames`` (n_eta, ny, nx, rows, cols) one chunk at a time; the input
    of :func:`braggscope.analysis.sxdm.drift.register_drift`.
    """
    shape = tuple(frames.shape)
    if len(shape) != 5:
        raise ValueError(f"frames must have shape (n_eta, ny, nx, rows, cols), got {shape}")
    n_eta, ny, nx, rows, cols = shape
    good = None if pixel_mask is None else ~np.asarray(pixel_mask, dtype=bool)
    ppc = max(1, int(chunk_mb * 1e6 // (rows * cols * 4)))
    out = np.zeros((n_eta, ny, nx))
    blocks = block_slices(ny, nx, ppc)
    for i in tqdm(range(n_eta), desc="eta maps", disable=not progress):
        for ys, xs in blocks:
            b = read_block(frames, slice(i, i + 1), ys, xs, (0, rows, 0, cols))[0].astype(np.float64)
            out[i, ys, xs] = b.sum(axis=(-2, -1)) if good is None else (b * good).sum(axis=(-2, -1))
    return out
