"""The plan of one SXDM reduction: checked inputs and the Q of every measured voxel.

:func:`make_plan` validates the arguments of
:func:`~braggscope.analysis.sxdm.reduce_stack` (one line naming the argument
before any frame is read) and computes, once per rocking angle, the Q of every
detector pixel relative to the mean Q and its products: the centre of mass and
second moments of each map pixel are then sums over the measured voxels
(:mod:`braggscope.analysis.sxdm.blocks`). Conventions: docs/conventions.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from braggscope.analysis.sxdm.drift import apply_drift
from braggscope.analysis.sxdm.filters import median_offset
from braggscope.analysis.sxdm.options import MapOptions

__all__ = ["Plan", "make_plan", "monitor_scale", "frame_missing", "angles_per_frame", "q_resolution"]

#: (a, b) axis pairs of the second-moment products, in the order of ``Plan.dq[..., 3:]``.
PRODUCT_PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


@dataclass
class Plan:
    """What every chunk worker needs: the frames, the voxels' Q and the options.

    ``dq`` holds Q - ``q_ref`` and its six products per voxel, float32:
    ``(n_eta, npix, 9)``, or ``(n_eta, 9, npix)`` when ``fused`` (the one-pass
    numba kernel, median 1 or 2, flat background, COM only, reads one product
    at a time). ``inside`` marks voxels in the Q roi on good pixels: bool, or
    float32 0/1 when fused (a weight: no branch in the kernel), from ``usable``. A frame is left
    out (missing data: no beam, or a drift shift from outside the scanned area)
    where ``monitor`` is 0 or the frame is NaN (:func:`frame_missing`).
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
    usable: np.ndarray      # (npix,) bool: filtered voxels with data (a 2x2 window with >= 2 good pixels)
    monitor: np.ndarray | None  # (n_eta, ny, nx) float32 frame scale, 0 = no beam (frame left out), or None
    options: MapOptions
    x: np.ndarray
    y: np.ndarray
    pixels_per_chunk: int
    bins: list | None
    fused: bool
    normalisation: dict = field(default_factory=dict)  # what the monitor normalisation did, for the attrs


def angles_per_frame(value, n_eta, name):
    """``value`` (degrees) as one float per rocking angle: a scalar is repeated."""
    a = np.asarray(value, dtype=float)
    if a.ndim == 0:
        return np.full(n_eta, float(a))
    if a.shape != (n_eta,):
        raise ValueError(f"{name} must be a scalar or have shape ({n_eta},) like eta, got {a.shape}")
    return a


def make_plan(frames, eta, geometry, delta, nu, phi, *, options: MapOptions, pixel_mask, monitor, x, y,
              chunk_mb, monitor_reference=None, monitor_name=None, shifts=None) -> Plan:
    """Check the arguments of ``reduce_stack`` and precompute the Q of every voxel.

    With ``shifts`` the frames and the monitor are resampled to undo the drift
    (:func:`~braggscope.analysis.sxdm.drift.apply_drift`, lazily); so are frames with
    holes left by a beam loss (monitor 0), with no shift.
    """
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
    scale, normalisation = monitor_scale(monitor, (n_eta, ny, nx), monitor_reference)
    if normalisation:
        normalisation["monitor_name"] = str(monitor_name or "monitor")
    if shifts is None and normalisation.get("frames_without_beam"):
        shifts = np.zeros((n_eta, 2))  # no drift, but holes to fill from their neighbours
    if shifts is not None:
        frames, scale = _undo_drift(frames, shifts, monitor, scale, normalisation)
    x, y = _map_axis(x, nx, "x", 2), _map_axis(y, ny, "y", 1)

    q = _voxel_q(geometry, eta, angles, det_roi, median_offset(median))  # (n_eta, npix, 3)
    usable = _usable_windows(valid, median, det_roi)
    inside = np.broadcast_to(usable, q.shape[:2]).copy()
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
                valid, usable, scale, options, x, y, ppc, bins, fused, normalisation)


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


def _usable_windows(valid, median, det_roi):
    """Which filtered voxels have data, flat (npix,): with the 2x2 median, a window holding at least two
    good pixels (it takes their median, so a dead pixel or column leaves no hole in a peak); else the
    good pixels."""
    if median != 2 or valid.all():
        return valid
    r0, r1, c0, c1 = det_roi
    good = valid.reshape(r1 - r0, c1 - c0).astype(np.int8)
    down = np.concatenate([good[1:], good[-1:]], axis=0)  # last row/column repeated, as the filter does
    count = good + down
    count = count + np.concatenate([count[:, 1:], count[:, -1:]], axis=1)
    return (count >= 2).ravel()


def monitor_scale(monitor, shape, reference=None):
    """Per-frame factor ``reference / monitor`` (float32, ``shape``) and what it did, or ``(None, {})``.

    A monitor reading of 0 means no beam: that frame's factor is 0 and the reduction leaves the
    frame out (never a division by zero). ``reference`` defaults to the median of the readings
    with beam, so normalised counts stay near the raw counts.

    Raises
    ------
    ValueError
        A monitor of the wrong shape, negative, NaN or infinite, zero everywhere, or a reference
        that is not a positive number (one line naming it).
    """
    if monitor is None:
        return None, {}
    mon = _readings(monitor, shape)
    if not np.all(np.isfinite(mon)):
        raise ValueError(f"monitor holds {int(np.sum(~np.isfinite(mon)))} NaN or infinite readings")
    if np.any(mon < 0):
        raise ValueError(f"monitor must be >= 0 (0 = no beam), got a minimum of {mon.min():g}")
    beam = mon > 0
    if not beam.any():
        raise ValueError("monitor is 0 at every point: no beam was recorded")
    if reference is None:
        reference = float(np.median(mon[beam]))
    elif not (np.isfinite(float(reference)) and float(reference) > 0):
        raise ValueError(f"monitor_reference must be a positive number, got {reference!r}")
    scale = np.zeros(shape, np.float32)
    scale[beam] = float(reference) / mon[beam]
    info = {"monitor_reference": float(reference), "monitor_min": float(mon[beam].min()),
            "monitor_max": float(mon.max()), "frames_without_beam": int((~beam).sum())}
    return scale, info


def _readings(monitor, shape):
    """The monitor as one reading per frame, float (n_eta, ny, nx)."""
    n_eta = shape[0]
    mon = np.asarray(monitor, dtype=float)
    if mon.shape == (n_eta,):
        mon = np.broadcast_to(mon[:, None, None], shape)
    if mon.shape != tuple(shape):
        raise ValueError(f"monitor must have shape ({n_eta},) or {tuple(shape)}, got {mon.shape}")
    return mon


def _undo_drift(frames, shifts, monitor, scale, normalisation):
    """Frames resampled to undo the drift (lazily), and the frame scale of the monitor resampled alike.

    The frames stay counts (normalised in the reduction, frame by frame, so that its noise cut
    follows each frame's counting statistics); points without beam have no weight.
    """
    measured = None if scale is None else scale > 0
    frames = apply_drift(frames, shifts, measured=measured)
    if scale is not None:
        readings = _readings(monitor, scale.shape)[..., None, None]
        resampled = np.asarray(apply_drift(readings, shifts, measured=measured).compute())[..., 0, 0]
        beam = np.isfinite(resampled) & (resampled > 0)
        scale = np.where(beam, normalisation["monitor_reference"] / np.where(beam, resampled, 1.0), 0.0)
        scale = scale.astype(np.float32)
    return frames, scale


def frame_missing(block, valid):
    """Which frames of ``block`` (..., rows, cols) are missing data: NaN on their first good pixel.

    :func:`~braggscope.analysis.sxdm.drift.apply_drift` fills with NaN the frames whose sample
    point was not scanned; returns bool of shape ``block.shape[:-2]``.
    """
    if block.dtype.kind != "f":
        return np.zeros(block.shape[:-2], bool)
    first = int(np.argmax(valid))
    flat = block.reshape(block.shape[:-2] + (-1,))
    return np.isnan(flat[..., first])


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
