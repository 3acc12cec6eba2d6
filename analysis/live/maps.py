"""Pure helpers of the live SXDM reduction: raster indexing, per-angle weights and derived maps.

:func:`frame_weights` builds the ``(6, rows * cols)`` matrix a frame is
contracted with; everything else works on small ``(ny, nx)`` arrays (never on
detector frames) and follows docs/conventions.md "SXDM maps":

* mask = integrated intensity >= ``threshold`` x the map maximum;
* ``d_spacing = 2 pi / |Q_local|`` (Angstrom), strain in microstrain against
  the unweighted mean d over the mask;
* ``Q_bar`` = normalised unweighted mean of the unit vectors over the mask;
  tilt altitude = angle between ``Q_local`` and ``Q_bar`` (degrees);
  tilt azimuth = angle of the perpendicular part of ``Q_local`` measured from
  the sample +x axis projected on the plane normal to ``Q_bar``, positive
  towards ``Q_bar x x_proj``, in (-180, 180].
"""

from __future__ import annotations

import numpy as np

from braggscope.analysis.sxdm.maps import derive_strain_tilt, mean_direction

__all__ = ["point_index", "derive_maps", "frame_weights", "grid_index"]


def point_index(seq_num, shape, snake: bool = False, snake_scope: str = "map"):
    """Map an event ``seq_num`` (1-based) to ``(i_eta, iy, ix)`` map indices.

    Parameters
    ----------
    seq_num : int or array of int
        Event sequence number in the "primary" stream, starting at 1.
    shape : (int, int, int)
        ``(n_eta, ny, nx)``.
    snake : bool
        Whether the fast axis reverses on every other row.
    snake_scope : {"map", "run"}
        ``"map"`` (default, the order of ``braggscope.plans.sxdm``): every eta
        map restarts with a forward row; ``"run"``: rows are counted across the whole run, as
        ``bluesky.plans.grid_scan(..., snake_axes=...)`` does over
        ``(eta, y, x)`` (with an odd ``ny`` the second eta map starts
        reversed).

    Returns
    -------
    (i_eta, iy, ix) : ints or int arrays
    """
    n_eta, ny, nx = (int(s) for s in shape)
    if snake_scope not in ("run", "map"):
        raise ValueError(f"snake_scope must be 'run' or 'map', got {snake_scope!r}")
    idx = np.asarray(seq_num, dtype=np.int64) - 1
    if np.any(idx < 0) or np.any(idx >= n_eta * ny * nx):
        raise ValueError(f"seq_num out of range 1..{n_eta * ny * nx}: {seq_num!r}")
    i_eta, k = np.divmod(idx, ny * nx)
    iy, ix = np.divmod(k, nx)
    if snake:
        row = i_eta * ny + iy if snake_scope == "run" else iy
        ix = np.where(row % 2 == 1, nx - 1 - ix, ix)
    if np.ndim(idx) == 0:
        return int(i_eta), int(iy), int(ix)
    return i_eta, iy, ix


def grid_index(values, grid):
    """Index of the nearest point of a regular 1-D ``grid`` for each of ``values``; -1 beyond half a step
    outside it (a captured position off the map).

    >>> grid_index([0.02, 0.49, 0.51, 1.3, -0.6], [0.0, 0.5, 1.0])
    array([ 0,  1,  1, -1, -1])
    """
    grid = np.asarray(grid, dtype=float)
    values = np.asarray(values, dtype=float)
    if grid.size == 1:
        return np.zeros(values.shape, dtype=np.int64)
    step = (grid[-1] - grid[0]) / (grid.size - 1)
    k = np.rint((values - grid[0]) / step)
    inside = np.isfinite(k) & (k >= 0) & (k <= grid.size - 1)
    return np.where(inside, k, -1).astype(np.int64)


def derive_maps(intensity, qx, qy, qz, complete=None, *, threshold: float = 0.2):
    """Mask, d-spacing, strain and tilts from per-pixel Q centres of mass.

    Parameters
    ----------
    intensity : ndarray (ny, nx)
        Integrated intensity (counts, background-subtracted if requested).
    qx, qy, qz : ndarray (ny, nx)
        Q centre of mass, 1/Angstrom, sample frame (NaN where unknown).
    complete : ndarray of bool (ny, nx), optional
        Pixels whose rocking set is complete; others are left out of the mask
        and of the threshold's maximum. Default: all.
    threshold : float
        Mask threshold as a fraction of the maximum intensity (0 to 1).

    Returns
    -------
    dict of ndarray (ny, nx)
        ``mask``, ``qx``, ``qy``, ``qz``, ``d_spacing`` (Angstrom), ``strain``
        (microstrain), ``tilt_altitude``, ``tilt_azimuth`` (degrees); derived
        maps are NaN outside the mask. Also ``q_bar`` (3,) and ``d_mean``.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold!r}")
    intensity = np.asarray(intensity, float)
    if complete is None:
        complete = np.ones(intensity.shape, bool)
    complete = np.asarray(complete, bool)
    q = np.stack([np.asarray(a, float) for a in (qx, qy, qz)])
    valid = complete & np.all(np.isfinite(q), axis=0) & np.isfinite(intensity)
    mask = np.zeros(intensity.shape, bool)
    if valid.any():
        peak = intensity[valid].max()
        mask = valid & (intensity >= float(threshold) * peak) & (peak > 0)
    qm = np.where(mask, q, np.nan)
    # the docs/conventions.md definitions, shared with the offline reduction
    q_last = np.moveaxis(qm, 0, -1)
    d, strain, altitude, azimuth = derive_strain_tilt(q_last, mask)
    d_mean = float(np.mean(d[mask])) if mask.any() else np.nan
    q_bar = mean_direction(q_last, mask) if mask.any() else np.full(3, np.nan)
    return {
        "mask": mask, "qx": qm[0], "qy": qm[1], "qz": qm[2], "d_spacing": d,
        "strain": strain, "tilt_altitude": altitude, "tilt_azimuth": azimuth,
        "q_bar": q_bar, "d_mean": d_mean,
    }


def frame_weights(geometry, shape, eta, delta, nu=0.0, phi=0.0, *, row0=0.0, col0=0.0,
                  q0=(0.0, 0.0, 0.0)):
    """Weight matrix contracted with a flattened frame to get the six sums.

    Parameters
    ----------
    geometry : braggscope.core.geometry.Geometry
    shape : (int, int)
        Frame shape ``(rows, cols)``.
    eta, delta, nu, phi : float
        Angles in degrees.
    row0, col0 : float
        Reference pixel subtracted from the row / column index.
    q0 : (float, float, float)
        Reference Q (1/Angstrom) subtracted from every pixel's Q.

    Returns
    -------
    ndarray, shape (6, rows * cols), float32
        Rows ``[1, row - row0, col - col0, Qx - q0x, Qy - q0y, Qz - q0z]``.
    """
    rows, cols = (int(s) for s in shape)
    w = np.empty((6, rows, cols), dtype=np.float32)
    w[0] = 1.0
    w[1] = (np.arange(rows, dtype=np.float64) - row0)[:, None]
    w[2] = (np.arange(cols, dtype=np.float64) - col0)[None, :]
    q = geometry.q_frame((rows, cols), eta, delta, nu, phi)
    w[3:] = q - np.asarray(q0, dtype=np.float64)[:, None, None]
    return w.reshape(6, rows * cols)
