"""Regular Q-space gridding of SXDM data: one pixel's Bragg peak, and peak finding.

Gridding is for viewing and for choosing a reciprocal-space ROI, not for the
maps themselves (``reduce_stack`` takes the centre of mass over the measured
voxels directly). The grid step per axis is the natural resolution from the
detector pixel and the rocking step (:func:`braggscope.analysis.sxdm.plan.q_resolution`).
Each grid voxel holds the *mean* intensity of the measured voxels falling in
it (sum / number), so uneven sampling does not show as structure.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import ndimage

from braggscope.analysis.sxdm.blocks import block_slices, read_block
from braggscope.analysis.sxdm.filters import median_filter_frames, median_offset
from braggscope.analysis.sxdm.plan import angles_per_frame, q_resolution
from braggscope.analysis.sxdm.reduce import q_frames

__all__ = ["grid_pixel_peak", "grid_q", "find_peaks_q", "sum_frames"]


def grid_pixel_peak(frames, eta, geometry, delta, nu=0.0, phi=0.0, *, pixel, median=2,
                    step=None, oversample=1.0) -> xr.DataArray:
    """The Bragg peak of one map pixel on a regular (Qx, Qy, Qz) grid.

    Parameters
    ----------
    frames : array-like, shape (n_eta, ny, nx, rows, cols)
    eta, delta, nu, phi : as in :func:`~braggscope.analysis.sxdm.reduce_stack` (degrees)
    geometry : braggscope.core.geometry.Geometry
    pixel : (int, int)
        Map pixel ``(iy, ix)``.
    median : int
        True median filter edge applied to each frame first (1 = none).
    step : (float, float, float), optional
        Grid step in 1/Angstrom (default: :func:`q_resolution` / ``oversample``).
    oversample : float
        Grid steps per natural resolution step.

    Returns
    -------
    xarray.DataArray, dims (qx, qy, qz), mean counts per voxel (NaN where no
    measured voxel falls), coordinates in 1/Angstrom.
    """
    shape = tuple(frames.shape)
    if len(shape) != 5:
        raise ValueError(f"frames must have shape (n_eta, ny, nx, rows, cols), got {shape}")
    n_eta, ny, nx, rows, cols = shape
    iy, ix = (int(v) for v in pixel)
    if not (0 <= iy < ny and 0 <= ix < nx):
        raise ValueError(f"pixel {pixel!r} is outside the {ny} x {nx} map")
    block = read_block(frames, slice(None), slice(iy, iy + 1), slice(ix, ix + 1), (0, rows, 0, cols))
    f = median_filter_frames(block[:, 0, 0], median)
    q = q_frames(geometry, eta, delta, nu, phi, (rows, cols), offset=median_offset(median))
    if step is None:
        step = q_resolution(geometry, eta, delta, nu, phi, (rows, cols)) / float(oversample)
    return grid_q(q, f, step)


def grid_q(q, values, step) -> xr.DataArray:
    """Mean of ``values`` in regular Q bins.

    Parameters
    ----------
    q : ndarray, shape (n_eta, 3, rows, cols)
        Q of every voxel (1/Angstrom).
    values : ndarray, shape (n_eta, rows, cols)
    step : (float, float, float)
        Bin size per axis, 1/Angstrom.
    """
    q = np.asarray(q, dtype=float)
    v = np.asarray(values, dtype=float)
    if q.ndim != 4 or q.shape[1] != 3 or q.shape[:1] + q.shape[2:] != v.shape:
        raise ValueError(f"q must be (n_eta, 3, rows, cols) matching values {v.shape}, got {q.shape}")
    step = np.asarray(step, dtype=float)
    if step.shape != (3,) or not np.all(step > 0):
        raise ValueError(f"step must be three positive bin sizes, got {step!r}")
    pts = np.moveaxis(q, 1, -1).reshape(-1, 3)
    lo = pts.min(axis=0)
    hi = pts.max(axis=0)
    nb = np.maximum(1, np.ceil((hi - lo) / step).astype(int) + 1)
    edges = [lo[a] - step[a] / 2 + step[a] * np.arange(nb[a] + 1) for a in range(3)]
    total, _ = np.histogramdd(pts, bins=edges, weights=v.ravel())
    count, _ = np.histogramdd(pts, bins=edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    centres = [0.5 * (e[1:] + e[:-1]) for e in edges]
    return xr.DataArray(mean, dims=("qx", "qy", "qz"),
                        coords={f"q{a}": ("q" + a, c, {"units": "1/Angstrom"}) for a, c in zip("xyz", centres)},
                        attrs={"units": "counts per voxel (mean)", "step": [float(s) for s in step]})


def sum_frames(frames, *, pixels=None, chunk_mb=64.0, progress=False) -> np.ndarray:
    """Sum of the frames over map pixels, per angle: shape (n_eta, rows, cols).

    ``pixels``: optional boolean (ny, nx) selection of map pixels.
    """
    from tqdm.auto import tqdm

    n_eta, ny, nx, rows, cols = tuple(frames.shape)
    sel = None if pixels is None else np.asarray(pixels, dtype=bool)
    if sel is not None and sel.shape != (ny, nx):
        raise ValueError(f"pixels must have the map shape {(ny, nx)}, got {sel.shape}")
    ppc = max(1, int(chunk_mb * 1e6 // (n_eta * rows * cols * 4)))
    out = np.zeros((n_eta, rows, cols))
    for ys, xs in tqdm(block_slices(ny, nx, ppc), desc="sum frames", disable=not progress):
        b = read_block(frames, slice(None), ys, xs, (0, rows, 0, cols)).astype(np.float64)
        if sel is not None:
            b = b * sel[ys, xs][None, :, :, None, None]
        out += b.sum(axis=(1, 2))
    return out


def find_peaks_q(frames, eta, geometry, delta, nu=0.0, phi=0.0, *, threshold=0.1, step=None,
                 min_voxels=4, margin=2, pixels=None):
    """Separate Bragg peaks (crystallites) in the summed reciprocal-space intensity.

    The frames of all map pixels are summed per angle, gridded on a regular Q
    grid, their median (background) removed, thresholded at ``threshold``
    times the maximum, and the connected components labelled.

    Parameters
    ----------
    threshold : float
        Fraction of the maximum of the gridded sum (0..1).
    step : (float, float, float), optional
        Grid step (default: natural resolution).
    min_voxels : int
        Smaller components are ignored (noise).
    margin : int
        Grid steps added on each side of a component's bounding box.
    pixels : ndarray of bool (ny, nx), optional
        Map pixels to sum (default all).

    Returns
    -------
    list of dict, strongest first: ``centre`` (3,) intensity-weighted Q
    centre (1/Angstrom), ``roi`` ((qx0, qx1), (qy0, qy1), (qz0, qz1)) ready
    for ``reduce_stack(roi=...)``, ``intensity`` (summed counts above
    background), ``voxels``.
    """
    if not 0 < float(threshold) < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    n_eta, ny, nx, rows, cols = tuple(frames.shape)
    angles_per_frame(delta, n_eta, "delta")
    total = sum_frames(frames, pixels=pixels)
    q = q_frames(geometry, eta, delta, nu, phi, (rows, cols))
    if step is None:
        step = q_resolution(geometry, eta, delta, nu, phi, (rows, cols))
    grid = grid_q(q, total, step)
    g = np.nan_to_num(grid.values - np.nanmedian(grid.values), nan=0.0)
    if not g.max() > 0:
        return []
    labels, n = ndimage.label(g >= float(threshold) * g.max(), structure=np.ones((3, 3, 3)))
    axes = [grid.coords[c].values for c in ("qx", "qy", "qz")]
    st = np.asarray(grid.attrs["step"])
    peaks = []
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        comp = labels[sl] == lab
        if comp.sum() < int(min_voxels):
            continue
        w = np.where(comp, g[sl], 0)
        centre = [float((w * axes[a][sl[a]][tuple(None if b != a else slice(None) for b in range(3))]).sum() / w.sum())
                  for a in range(3)]
        roi = tuple((float(axes[a][sl[a].start] - (margin + 0.5) * st[a]),
                     float(axes[a][sl[a].stop - 1] + (margin + 0.5) * st[a])) for a in range(3))
        peaks.append({"centre": np.array(centre), "roi": roi, "intensity": float(w.sum()),
                      "voxels": int(comp.sum())})
    peaks.sort(key=lambda p: -p["intensity"])
    return peaks
