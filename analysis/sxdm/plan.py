"""The plan of one SXDM reduction: checked inputs and the Q of every measured voxel.

:func:`make_plan` validates the arguments of
:func:`~braggscope.analysis.sxdm.reduce_stack` (one line naming the argument
before any frame is read) and computes, once per rocking angle, the Q of every
detector pixel relative to the mean Q and its products: the centre of mass and
second moments of each map pixel are then sums over the measured voxels
(:mod:`braggscope.analysis.sxdm.blocks`). Conventions: docs/conventions.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from braggscope.analysis.sxdm.filters import median_offset
from braggscope.analysis.sxdm.options import MapOptions

__all__ = ["Plan", "make_plan", "angles_per_frame", "q_resolution"]

#: (a, b) axis pairs of the second-moment products, in the order of ``Plan.dq[..., 3:]``.
PRODUCT_PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


@dataclass
class Plan:
    """What every chunk worker needs: the frames, the voxels' Q and the options.

    ``dq`` holds Q - ``q_ref`` and its six products per voxel, float32:
    ``(n_eta, npix, 9)``, or ``(n_eta, 9, npix)`` when ``fused`` (the one-pass
    numba kernel, median 1 or 2, flat background, COM only, reads one product
    at a time). ``inside`` marks voxels in the Q roi on good pixels: bool, or
    float32 0/1 when fused (a weight: no branch in the kernel).
    """

    frames: object
    shape: tuple
    eta: np.ndarray
    geometry: object
    det_roi: tuple
    dq: np.ndarray
    q_ref: np.ndarray       # (3,) float64
    inside: np.ndarray
    all_inside: bool
    valid: np.ndarray       # (npix,) bool: good detector pixels
    monitor: np.ndarray | None
    options: MapOptions
    x: np.ndarray
    y: np.ndarray
    pixels_per_chunk: int
    bins: list | None
    fused: bool


def angles_per_frame(value, n_eta, name):
    """``value`` (degrees) as one float per rocking angle: a scalar is repeated."""
    a = np.asarray(value, dtype=float)
    if a.ndim == 0:
        return np.full(n_eta, float(a))
    if a.shape != (n_eta,):
        raise ValueError(f"{name} must be a scalar or have shape ({n_eta},) like eta, got {a.shape}")
    return a


def make_plan(frames, eta, geometry, delta, nu, phi, *, options: MapOptions, pixel_mask, monitor, x, y,
              chunk_mb) -> Plan:
    """Check the arguments of ``reduce_stack`` and precompute the Q of every voxel."""
    shape = tuple(int(s) for s in getattr(frames, "shape", ()))
    if len(shape) != 5:
        raise ValueError(f"frames must have shape (n_eta, ny, nx, rows, cols), got {shape}")
    n_eta, ny, nx, rows, cols = shape
    if min(shape) < 1:
        raise ValueError(f"frames has an empty axis: shape {shape}")
    eta = np.asarray(eta, dtype=float).ravel()
    if eta.shape != (n_eta,):
        raise ValueError(f"eta must have {n_eta} values (frames axis 0), got {eta.size}")
    angles = [angles_per_frame(v, n_eta, n) for v, n in ((delta, "delta"), (nu, "nu"), (phi, "phi"))]
    if not hasattr(geometry, "q_pixels"):
        raise TypeError(f"geometry must be a braggscope.core.geometry.Geometry, got {type(geometry).__name__}")
    det_roi = options.window(rows, cols)
    valid = _good_pixels(det_roi, pixel_mask, rows, cols)
    median, background, fit, roi = options.median, options.background, options.fit, options.roi
    monitor = _monitor_scale(monitor, n_eta, ny, nx)
    x, y = _map_axis(x, nx, "x", 2), _map_axis(y, ny, "y", 1)

    q = _voxel_q(geometry, eta, angles, det_roi, median_offset(median))  # (n_eta, npix, 3)
    inside = np.broadcast_to(valid, q.shape[:2]).copy()
    if roi is not None:
        for ax, lim in enumerate(roi):
            if lim is not None:
                inside &= (q[..., ax] >= lim[0]) & (q[..., ax] <= lim[1])
        if not inside.any():
            raise ValueError(f"roi {roi!r} contains no measured voxel")
    q_ref = q.mean(axis=(0, 1))
    dq = q - q_ref
    dq = np.concatenate([dq] + [dq[..., a:a + 1] * dq[..., b:b + 1] for a, b in PRODUCT_PAIRS], axis=-1)
    dq = dq.astype(np.float32)
    fused = median in (1, 2) and background != "snip" and fit == "com"
    if fused:
        dq = np.ascontiguousarray(np.transpose(dq, (0, 2, 1)))
    bins = None
    if fit == "gaussian":
        r0, r1, c0, c1 = det_roi
        bins = _projection_bins(q, inside, q_resolution(geometry, eta, *angles, (r1 - r0, c1 - c0)))
    # the fused kernel holds only the raw chunk; the numpy path a few float32 copies of it
    per_pixel = n_eta * valid.size * 4 * (1 if fused else 4)
    ppc = max(1, int(float(chunk_mb) * 1e6 // per_pixel))
    all_inside = bool(inside.all())
    if fused:
        inside = inside.astype(np.float32)
    return Plan(frames, shape, eta, geometry, det_roi, dq, q_ref, inside, all_inside,
                valid, monitor, options, x, y, ppc, bins, fused)


def _good_pixels(det_roi, pixel_mask, rows, cols):
    """Which pixels of the detector window are good, flat (npix,)."""
    r0, r1, c0, c1 = det_roi
    valid = np.ones((r1 - r0, c1 - c0), dtype=bool)
    if pixel_mask is not None:
        pm = np.asarray(pixel_mask, dtype=bool)
        if pm.shape != (rows, cols):
            raise ValueError(f"pixel_mask must have the detector shape {(rows, cols)}, got {pm.shape}")
        valid = ~pm[r0:r1, c0:c1]
    return valid.ravel()


def _monitor_scale(monitor, n_eta, ny, nx):
    """Per-frame factor ``mean(monitor) / monitor``, float32 (n_eta, ny, nx), or None."""
    if monitor is None:
        return None
    mon = np.asarray(monitor, dtype=float)
    if mon.shape == (n_eta,):
        mon = np.broadcast_to(mon[:, None, None], (n_eta, ny, nx))
    if mon.shape != (n_eta, ny, nx):
        raise ValueError(f"monitor must have shape ({n_eta},) or {(n_eta, ny, nx)}, got {mon.shape}")
    if not np.all(mon > 0):
        raise ValueError("monitor must be > 0 everywhere")
    return (mon.mean() / mon).astype(np.float32)


def _map_axis(values, n, name, axis):
    out = np.arange(n, dtype=float) if values is None else np.asarray(values, dtype=float)
    if out.shape != (n,):
        raise ValueError(f"{name} must have {n} values (frames axis {axis}), got shape {out.shape}")
    return out


def _voxel_q(geometry, eta, angles, det_roi, offset):
    """Q of every (filtered) detector pixel per angle, (n_eta, npix, 3) float64.

    Even median windows are centred half a pixel off (``offset``).
    """
    r0, r1, c0, c1 = det_roi
    rr = np.arange(r0, r1, dtype=float)[:, None] + offset
    cc = np.arange(c0, c1, dtype=float)[None, :] + offset
    delta, nu, phi = angles
    q = np.empty((eta.size, 3, (r1 - r0) * (c1 - c0)))
    for i in range(eta.size):
        q[i] = geometry.q_pixels(rr, cc, eta[i], delta[i], nu[i], phi[i]).reshape(3, -1)
    return np.transpose(q, (0, 2, 1))


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
    d, v, p = (angles_per_frame(a, n, name) for a, name in ((delta, "delta"), (nu, "nu"), (phi, "phi")))
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
