"""The 5-D SXDM stack built from one HDF5 frame dataset per rocking angle.

:class:`H5Stack` is a lazy ``(n_eta, ny, nx, rows, cols)`` view in raster
order; :func:`grid_from_positions` recovers the raster (and the snake) from
the piezo positions recorded per point; :class:`Angles` collects the
per-angle datasets and checks they share one raster; :func:`finish` sorts the
angles and makes the :class:`~braggscope.core.stacks.MapStack`.
"""

from __future__ import annotations

import numpy as np

from braggscope.core.errors import InputError
from braggscope.core.setup import ScanSetup, SetupError
from braggscope.core.stacks import MapStack

from .hdf5 import short_reason

__all__ = ["H5Stack", "Angles", "grid_from_positions", "finish", "setup_from_fields", "counter_role",
           "AUTO_COUNTERS"]


class H5Stack:
    """A lazy ``(n_eta, ny, nx, rows, cols)`` view of one HDF5 frame dataset per angle.

    Slicing reads only the frames asked for, straight from h5py (one read per
    angle and map row), with the raster order (``order[iy, ix]`` = acquisition
    index, snake undone) applied. Holds the HDF5 file open. A read that fails
    (a file cut short after it was opened) raises
    :class:`~braggscope.core.errors.InputError` naming the file.

    Supports basic indexing with integers and unit-step slices, ``shape``,
    ``dtype``, ``ndim`` and ``np.asarray``; wrap in ``dask.array.from_array``
    for more.
    """

    def __init__(self, h5file, datasets, order):
        self._file = h5file
        self._dsets = list(datasets)
        self._order = np.asarray(order)
        d0 = self._dsets[0]
        self.shape = (len(self._dsets),) + self._order.shape + tuple(d0.shape[1:])
        self.dtype = d0.dtype
        self.ndim = 5

    def __len__(self):
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a.astype(dtype) if dtype is not None else a

    def __getitem__(self, key):
        sl, squeeze = self._normalise(key)
        e_sl, y_sl, x_sl, r_sl, c_sl = sl
        etas = range(*e_sl.indices(self.shape[0]))
        ys = range(*y_sl.indices(self.shape[1]))
        out = np.empty((len(etas), len(ys), x_sl.stop - x_sl.start, r_sl.stop - r_sl.start,
                        c_sl.stop - c_sl.start), dtype=self.dtype)
        for a, i in enumerate(etas):
            d = self._dsets[i]
            for b, iy in enumerate(ys):
                idx = self._order[iy, x_sl]
                if idx.size:
                    out[a, b] = self._read(d, idx, r_sl, c_sl)
        if squeeze:
            out = out.reshape([n for ax, n in enumerate(out.shape) if ax not in squeeze])
        return out

    def _normalise(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (5 - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (5 - len(key))
        if len(key) != 5:
            raise IndexError(f"too many indices for a 5-D stack: {key!r}")
        squeeze, sl = [], []
        for ax, k in enumerate(key):
            if isinstance(k, (int, np.integer)):
                k = int(k) + (self.shape[ax] if k < 0 else 0)
                if not 0 <= k < self.shape[ax]:
                    raise IndexError(f"index {k} out of range for axis {ax} of size {self.shape[ax]}")
                sl.append(slice(k, k + 1))
                squeeze.append(ax)
            elif isinstance(k, slice):
                start, stop, step = k.indices(self.shape[ax])
                if step != 1:
                    raise IndexError("H5Stack supports unit-step slices only")
                sl.append(slice(start, max(start, stop)))
            else:
                raise IndexError(f"H5Stack supports integers and slices, got {type(k).__name__}")
        return sl, squeeze

    @staticmethod
    def _read(d, idx, r_sl, c_sl):
        try:
            if np.all(np.diff(idx) == 1):
                return d[int(idx[0]):int(idx[-1]) + 1, r_sl, c_sl]
            if np.all(np.diff(idx) == -1):
                return d[int(idx[-1]):int(idx[0]) + 1, r_sl, c_sl][::-1]
            return d[np.sort(idx), r_sl, c_sl][np.argsort(np.argsort(idx))]
        except OSError as exc:
            raise InputError(f"{d.file.filename}: cannot read frames {int(idx.min())}..{int(idx.max())} of "
                             f"{d.name} ({short_reason(exc)}; truncated or damaged file?)") from None


def grid_from_positions(x, y, path, what, shape=None):
    """Raster of per-point positions (fast axis x, slow axis y, snake or not).

    Returns ``(ny, nx, x_axis, y_axis, order, snake)`` where ``order[j, k]`` is
    the acquisition index of raster point (row j, column k increasing in x).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.size != y.size:
        raise InputError(f"{path}: {what} x and y positions differ in length ({x.size} vs {y.size})")
    n = x.size
    if n == 0:
        raise InputError(f"{path}: {what} has no points")
    if shape is None:
        dy = np.abs(np.diff(y))
        new_line = np.flatnonzero(dy > 0.5 * dy.max()) + 1 if n > 1 and dy.max() > 0 else np.array([], int)
        nx = int(new_line[0]) if new_line.size else n
    else:
        nx = int(shape[1])
    if nx < 1 or n % nx:
        raise InputError(f"{path}: {what} has {n} points, not a whole number of lines of {nx}")
    ny = n // nx
    xs = x.reshape(ny, nx)
    order = np.arange(n).reshape(ny, nx)
    snake = bool(ny > 1 and nx > 1 and np.sign(xs[1, -1] - xs[1, 0]) != np.sign(xs[0, -1] - xs[0, 0]))
    if snake:
        order[1::2] = order[1::2, ::-1]
    return ny, nx, x[order[0]], y[order[:, 0]], order, snake


def _check_frames(dset, path, key, ny, nx, frame_shape):
    n = ny * nx
    if dset.ndim != 3:
        raise InputError(f"{path}: {key} has shape {dset.shape}, expected (points, rows, cols)")
    if dset.shape[0] != n:
        raise InputError(f"{path}: {key} has {dset.shape[0]} frames, expected {ny} x {nx} = {n} "
                         f"(truncated scan?)")
    if frame_shape is not None and tuple(dset.shape[1:]) != tuple(frame_shape):
        raise InputError(f"{path}: {key} frames are {tuple(dset.shape[1:])}, other angles {tuple(frame_shape)}")


class Angles:
    """The per-angle frame datasets of one map, checked for a common raster as they come, with the
    counters recorded with them."""

    def __init__(self):
        self.stacks, self.orders, self.counters = [], [], []
        self.grid = self.frame_shape = None

    def add(self, img, path, img_key, label, plural, ny, nx, xa, ya, order, counters=None):
        """Add one angle's frames ``img`` (points, rows, cols) with its raster and its counters
        (name: one value per point in acquisition order, or a scalar for the angle)."""
        counters = dict(counters or {})
        for name, values in counters.items():
            values = np.asarray(values, dtype=float)
            if values.ndim == 1 and values.size == ny * nx:
                values = values[order]  # acquisition order -> raster order, snake undone
            elif values.size == 1:
                values = float(values.ravel()[0])
            else:
                raise InputError(f"{path}: {label} records {values.size} values of {name} for {ny * nx} points")
            counters[name] = values
        self.counters.append(counters)
        if self.grid is not None and (ny, nx) != self.grid[:2]:
            raise InputError(f"{path}: {label} is {ny} x {nx}, other {plural} {self.grid[0]} x {self.grid[1]}")
        self.grid = (ny, nx, xa, ya)
        _check_frames(img, path, img_key, ny, nx, self.frame_shape)
        if self.orders and not np.array_equal(order, self.orders[0]):
            raise InputError(f"{path}: {img_key} raster order differs from the other angles")
        self.orders.append(order)
        self.frame_shape = img.shape[1:]
        self.stacks.append(img)


def finish(h5file, angles: Angles, etas, deltas, nus, phis, fields: dict, path) -> MapStack:
    """Sort the angles by eta; the :class:`~braggscope.core.stacks.MapStack` of a file's map.

    ``fields`` holds the file's calibration (``energy_kev``, ``distance_m``, ``pixel_m``, ``cch``,
    ``pixel_mask``, ``detector``) and what else it says of itself (``format``, ``scans``).
    """
    order_eta = np.argsort(etas, kind="stable")
    eta = np.asarray(etas)[order_eta]
    if np.any(np.diff(eta) == 0):
        raise InputError(f"{path}: two scans have the same eta ({eta.tolist()})")
    frames = H5Stack(h5file, [angles.stacks[i] for i in order_eta], angles.orders[0])

    def per(v):
        v = np.asarray(v, dtype=float)[order_eta]
        return float(v[0]) if np.allclose(v, v[0]) else v

    fields = dict(fields, delta=per(deltas), nu=per(nus), phi=per(phis))
    setup = setup_from_fields(fields, frames.shape[-2:], path)
    metadata = {k: v for k, v in fields.items() if k not in _SETUP_FIELDS}
    counters = _stacked_counters([angles.counters[i] for i in order_eta], frames.shape[1:3])
    roles = {role: counter_role(counters, fields.get(role, "auto"), role, path)
             for role in ("monitor", "fluorescence")}
    return MapStack(frames, eta, setup, source=str(path), metadata=metadata, x=angles.grid[2], y=angles.grid[3],
                    counters=counters, **roles)


_SETUP_FIELDS = ("energy_kev", "distance_m", "pixel_m", "cch", "delta", "nu", "phi", "pixel_mask", "monitor",
                 "fluorescence")

#: Counter names looked for when a reader is asked for its ``"auto"`` monitor and fluorescence (ID01 BLISS).
AUTO_COUNTERS = {"monitor": ("mon1",), "fluorescence": ("ct_fluo",)}


def _stacked_counters(per_angle: list, map_shape) -> dict:
    """The counters every angle recorded: ``(n_eta, ny, nx)`` when per point, ``(n_eta,)`` when per angle."""
    if not per_angle:
        return {}
    names = set(per_angle[0]).intersection(*per_angle[1:])
    out = {}
    for name in sorted(names):
        values = [c[name] for c in per_angle]
        if all(np.ndim(v) == 0 for v in values):
            out[name] = np.asarray(values, dtype=float)
        else:
            out[name] = np.stack([np.broadcast_to(v, tuple(map_shape)) for v in values]).astype(float)
    return out


def counter_role(counters: dict, wanted, role: str, path):
    """The counter playing ``role`` (monitor, fluorescence): ``wanted`` by name, ``"auto"`` for the usual
    name when recorded, None for none."""
    if wanted is None:
        return None
    if wanted == "auto":
        return next((n for n in AUTO_COUNTERS[role] if n in counters), None)
    if wanted not in counters:
        raise InputError(f"{path}: {role} {wanted!r} is not recorded with every point "
                         f"(counters: {', '.join(sorted(counters)) or 'none'})")
    return wanted


def setup_from_fields(fields: dict, frame_shape, path, detector: str = "mpx1x4") -> ScanSetup:
    """The :class:`~braggscope.core.setup.ScanSetup` of the calibration fields a file gave.

    Raises
    ------
    InputError
        A field is missing or out of range (named, with the file).
    """
    mask = fields.get("pixel_mask")
    if mask is not None and mask.shape != tuple(frame_shape):
        raise InputError(f"{path}: pixel_mask is {mask.shape}, frames {tuple(frame_shape)}")
    try:
        return ScanSetup(
            energy_kev=fields["energy_kev"], distance_m=fields["distance_m"], pixel_m=fields["pixel_m"],
            cch=fields["cch"], detector_shape=tuple(int(n) for n in frame_shape), delta=fields["delta"],
            nu=fields.get("nu", 0.0), phi=fields.get("phi", 0.0), detector=fields.get("detector") or detector,
            pixel_mask=mask)
    except SetupError as exc:
        raise InputError(f"{path}: {exc}") from None
