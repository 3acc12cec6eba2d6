"""SXDM inputs: catalog runs, ID01 BLISS HDF5 files and XSOCS master files.

Every reader returns ``(frames, meta)``: ``frames`` a lazy dask array
``(n_eta, ny, nx, rows, cols)`` in raster order (read chunk by chunk by the
reduction), ``meta`` a dict with the keys of the ``sxdm_map`` start document
(``docs/TEAM_NOTES.md``): ``energy_kev``, ``distance_m``, ``pixel_m``, ``cch``
(row, col), ``delta``, ``nu``, ``phi`` (deg, scalar or per angle), ``eta``
(list, deg), ``raster`` ({x: [start, stop, num], y: [...]}) plus ``x``/``y``
piezo positions (um) and ``pixel_mask`` when the file has them.
:func:`reduce_run` reduces any such pair.

Reliability: a virtual dataset or external link whose source file is absent
reads as zeros in h5py without error, so sources are checked; truncated
files, frames of the wrong shape, and angles or positions not matching the
frame count raise an error naming the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from braggscope.core.setup import ScanSetup

__all__ = ["read_bliss", "read_xsocs", "read_stack", "reduce_run", "detect_format", "geometry_from_meta"]


# --------------------------------------------------------------------------
# reduction of a (frames, meta) pair
# --------------------------------------------------------------------------
def geometry_from_meta(meta):
    """``Geometry`` of the frames a start-document-like ``meta`` describes.

    Reads ``meta["setup"]`` (a :class:`~braggscope.core.setup.ScanSetup` or its dict) or, for
    older runs and files, the flat keys, through :meth:`ScanSetup.from_start_doc`.
    """
    return ScanSetup.from_start_doc(meta).geometry()


def _raster_axis(meta, name, n):
    if meta.get(name) is not None:
        return np.asarray(meta[name], dtype=float)
    spec = (meta.get("raster") or {}).get(name)
    if spec is not None and len(spec) == 3 and int(spec[2]) == n:
        return np.linspace(float(spec[0]), float(spec[1]), int(spec[2]))
    return None


def reduce_run(frames, meta, **kwargs):
    """Reduce an SXDM stack described by a start-document-like ``meta``.

    Parameters
    ----------
    frames : array-like, shape (n_eta, ny, nx, rows, cols)
        E.g. from ``braggscope.core.storage.sxdm_stack(run)``, :func:`read_bliss`
        or :func:`read_xsocs`.
    meta : dict
        ``setup`` (a :class:`~braggscope.core.setup.ScanSetup`; or, from older
        runs, the flat keys ``energy_kev``, ``distance_m``, ``pixel_m``,
        ``cch``, ``detector_shape``, ``delta``, ``nu``, ``phi``), ``eta`` and
        optionally ``raster`` / ``x`` / ``y`` (um).
    **kwargs
        Passed to :func:`braggscope.analysis.sxdm.reduce_stack` (threshold,
        background, median, roi, shifts are applied first if ``shifts=`` is
        given, ...).

    Returns
    -------
    xarray.Dataset (see ``reduce_stack``), with ``attrs["source"]`` from meta.
    """
    from braggscope.analysis.sxdm.reduce import reduce_stack

    setup = ScanSetup.from_start_doc(meta)
    shape = tuple(frames.shape)
    if len(shape) != 5:
        raise ValueError(f"frames must have shape (n_eta, ny, nx, rows, cols), got {shape}")
    kwargs.setdefault("x", _raster_axis(meta, "x", shape[2]))
    kwargs.setdefault("y", _raster_axis(meta, "y", shape[1]))
    if setup.pixel_mask is not None:
        kwargs.setdefault("pixel_mask", setup.pixel_mask)
    shifts = kwargs.pop("shifts", None)
    if shifts is not None:
        from braggscope.analysis.sxdm.drift import apply_drift

        frames = apply_drift(frames, shifts)
    delta, nu, phi = setup.angles(shape[0])
    maps = reduce_stack(frames, meta["eta"], setup.geometry(), delta, nu, phi, **kwargs)
    maps.attrs["source"] = str(meta.get("source", ""))
    return maps


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------
def read_stack(path, format="auto", **kwargs):
    """Read an SXDM stack from a file: ``format`` is ``"bliss"``, ``"xsocs"`` or ``"auto"``."""
    if format == "auto":
        format = detect_format(path)
    if format == "bliss":
        return read_bliss(path, **kwargs)
    if format == "xsocs":
        return read_xsocs(path, **kwargs)
    raise ValueError(f"format must be 'bliss', 'xsocs' or 'auto', got {format!r}")


def detect_format(path) -> str:
    """``"bliss"`` or ``"xsocs"`` from the layout of an HDF5 file."""
    f = _open(path)
    try:
        for name in f:
            entry = f.get(name, getlink=False)
            if entry is None or not hasattr(entry, "keys"):
                continue
            if "measurement/image/data" in entry or "measurement/image" in entry:
                return "xsocs"
            if "instrument" in entry and "technique" in entry or "instrument/positioners" in entry:
                return "bliss"
    finally:
        f.close()
    raise ValueError(f"{path}: neither an ID01 BLISS nor an XSOCS SXDM file (no scan with frames found)")


def _open(path):
    import h5py
    import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 filters before reading)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read as HDF5 (truncated or not HDF5?): {exc}") from None


def _dataset(f, path, key):
    """A dataset that really exists, with virtual and external sources checked."""
    try:
        link = f.get(key, getlink=True)
    except (KeyError, ValueError):
        link = None
    if link is None:
        raise ValueError(f"{path}: missing {key}")
    import h5py

    if isinstance(link, h5py.ExternalLink):
        src = _resolve(path, link.filename)
        if not src.is_file():
            raise FileNotFoundError(f"{path}: {key} links to {link.filename}, which is missing")
    try:
        dset = f[key]
    except (KeyError, OSError) as exc:
        raise ValueError(f"{path}: cannot open {key}: {exc}") from None
    if not isinstance(dset, h5py.Dataset):
        raise ValueError(f"{path}: {key} is not a dataset")
    if dset.is_virtual:
        for vs in dset.virtual_sources():
            if vs.file_name in (".", ""):
                continue
            src = _resolve(path, vs.file_name)
            if not src.is_file():
                raise FileNotFoundError(
                    f"{path}: {key} is a virtual dataset whose source {vs.file_name} is missing "
                    f"(h5py would read it as zeros)")
    return dset


def _resolve(path, name):
    p = Path(name)
    return p if p.is_absolute() else Path(path).parent / p


def _scalar(f, path, key, default=None):
    if key not in f:
        if default is not None:
            return default
        raise ValueError(f"{path}: missing {key}")
    v = np.asarray(f[key][()], dtype=float).ravel()
    if v.size == 0:
        raise ValueError(f"{path}: {key} is empty")
    return float(v.mean()) if v.size > 1 else float(v[0])


def _check_frames(dset, path, key, ny, nx, frame_shape):
    n = ny * nx
    if dset.ndim != 3:
        raise ValueError(f"{path}: {key} has shape {dset.shape}, expected (points, rows, cols)")
    if dset.shape[0] != n:
        raise ValueError(f"{path}: {key} has {dset.shape[0]} frames, expected {ny} x {nx} = {n} "
                         f"(truncated scan?)")
    if frame_shape is not None and tuple(dset.shape[1:]) != tuple(frame_shape):
        raise ValueError(f"{path}: {key} frames are {tuple(dset.shape[1:])}, other angles {tuple(frame_shape)}")


class _Angles:
    """The per-angle frame datasets of one map, checked for a common raster as they come."""

    def __init__(self):
        self.stacks, self.orders = [], []
        self.grid = self.frame_shape = None

    def add(self, img, path, img_key, label, plural, ny, nx, xa, ya, order):
        if self.grid is not None and (ny, nx) != self.grid[:2]:
            raise ValueError(f"{path}: {label} is {ny} x {nx}, other {plural} {self.grid[0]} x {self.grid[1]}")
        self.grid = (ny, nx, xa, ya)
        _check_frames(img, path, img_key, ny, nx, self.frame_shape)
        if self.orders and not np.array_equal(order, self.orders[0]):
            raise ValueError(f"{path}: {img_key} raster order differs from the other angles")
        self.orders.append(order)
        self.frame_shape = img.shape[1:]
        self.stacks.append(img)


class H5Stack:
    """A lazy ``(n_eta, ny, nx, rows, cols)`` view of one HDF5 frame dataset per angle.

    Slicing reads only the frames asked for, straight from h5py (one read per
    angle and map row), with the raster order (``order[iy, ix]`` = acquisition
    index, snake undone) applied. Holds the HDF5 file open.

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
        e_sl, y_sl, x_sl, r_sl, c_sl = sl
        etas = range(*e_sl.indices(self.shape[0]))
        ys = range(*y_sl.indices(self.shape[1]))
        out = np.empty((len(etas), len(ys), x_sl.stop - x_sl.start, r_sl.stop - r_sl.start,
                        c_sl.stop - c_sl.start), dtype=self.dtype)
        for a, i in enumerate(etas):
            d = self._dsets[i]
            for b, iy in enumerate(ys):
                idx = self._order[iy, x_sl]
                if idx.size == 0:
                    continue
                if np.all(np.diff(idx) == 1):
                    out[a, b] = d[int(idx[0]):int(idx[-1]) + 1, r_sl, c_sl]
                elif np.all(np.diff(idx) == -1):
                    out[a, b] = d[int(idx[-1]):int(idx[0]) + 1, r_sl, c_sl][::-1]
                else:
                    out[a, b] = d[np.sort(idx), r_sl, c_sl][np.argsort(np.argsort(idx))]
        if squeeze:
            out = out.reshape([n for ax, n in enumerate(out.shape) if ax not in squeeze])
        return out


def _grid_from_positions(x, y, path, what, shape=None):
    """Raster of per-point positions (fast axis x, slow axis y, snake or not).

    Returns ``(ny, nx, x_axis, y_axis, order, snake)`` where ``order[j, k]`` is
    the acquisition index of raster point (row j, column k increasing in x).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.size != y.size:
        raise ValueError(f"{path}: {what} x and y positions differ in length ({x.size} vs {y.size})")
    n = x.size
    if shape is None:
        dy = np.abs(np.diff(y))
        new_line = np.flatnonzero(dy > 0.5 * dy.max()) + 1 if n > 1 and dy.max() > 0 else np.array([], int)
        nx = int(new_line[0]) if new_line.size else n
    else:
        nx = int(shape[1])
    if nx < 1 or n % nx:
        raise ValueError(f"{path}: {what} has {n} points, not a whole number of lines of {nx}")
    ny = n // nx
    xs = x.reshape(ny, nx)
    order = np.arange(n).reshape(ny, nx)
    snake = bool(ny > 1 and nx > 1 and np.sign(xs[1, -1] - xs[1, 0]) != np.sign(xs[0, -1] - xs[0, 0]))
    if snake:
        order[1::2] = order[1::2, ::-1]
    return ny, nx, x[order[0]], y[order[:, 0]], order, snake


def read_bliss(path, *, scans=None, detector="mpx1x4"):
    """Read an ID01 BLISS SXDM dataset (one scan per rocking angle).

    Parameters
    ----------
    path : str or Path
        BLISS dataset file with scans ``/N.1``: frames at
        ``instrument/<detector>/image`` (often a virtual dataset into
        per-scan detector files), piezo per point at
        ``instrument/{pix,piy}/value`` (or ``{pix,piy}_position/value``),
        angles at ``instrument/positioners/{eta,phi,nu,delta}``, calibration
        at ``instrument/<detector>/{beam_center_x, beam_center_y, distance,
        x_pixel_size, y_pixel_size, pixel_mask}``, energy
        ``instrument/positioners/nrj`` (keV), map shape ``technique/dim0``
        (fast), ``dim1`` (slow).
    scans : list of str, optional
        Scan names (default: every ``N.1`` with the detector image, by N).
    detector : str

    Returns
    -------
    frames : dask.array, (n_eta, ny, nx, rows, cols), sorted by eta
    meta : dict
    """
    f = _open(path)
    if scans is None:
        scans = sorted((k for k in f if k.endswith(".1") and f"{k}/instrument/{detector}" in f),
                       key=lambda k: float(k.split(".")[0]) if k.split(".")[0].isdigit() else 0)
    if not scans:
        raise ValueError(f"{path}: no scan with instrument/{detector}/image")
    angles = _Angles()
    etas, deltas, nus, phis = [], [], [], []
    for scan in scans:
        if scan not in f:
            raise ValueError(f"{path}: no scan {scan}")
        s = f[scan]
        inst = f"{scan}/instrument"
        pos = f"{inst}/positioners"
        etas.append(_scalar(f, path, f"{pos}/eta"))
        deltas.append(_scalar(f, path, f"{pos}/delta"))
        nus.append(_scalar(f, path, f"{pos}/nu", 0.0))
        phis.append(_scalar(f, path, f"{pos}/phi", 0.0))
        px = _first(f, [f"{inst}/pix/value", f"{inst}/pix_position/value"])
        py = _first(f, [f"{inst}/piy/value", f"{inst}/piy_position/value"])
        img_key = f"{inst}/{detector}/image"
        img = _dataset(f, path, img_key)
        if px is not None and py is not None:
            xv, yv = f[px][()], f[py][()]
            if xv.size != img.shape[0] or yv.size != img.shape[0]:
                raise ValueError(f"{path}: scan {scan} has {img.shape[0]} frames but {xv.size} pix and "
                                 f"{yv.size} piy positions")
            dims = None
            if "technique/dim0" in s:
                dims = (int(s["technique/dim1"][()]), int(s["technique/dim0"][()]))
            ny, nx, xa, ya, order, snake = _grid_from_positions(xv, yv, path, f"scan {scan}", dims)
        else:
            nx = int(_scalar(f, path, f"{scan}/technique/dim0"))
            ny = int(_scalar(f, path, f"{scan}/technique/dim1"))
            xa, ya, snake = np.arange(nx, dtype=float), np.arange(ny, dtype=float), False
            order = np.arange(ny * nx).reshape(ny, nx)
        if "technique/dim0" in s:
            d0, d1 = int(s["technique/dim0"][()]), int(s["technique/dim1"][()])
            if (d0, d1) != (nx, ny):
                raise ValueError(f"{path}: scan {scan} technique/dim0,dim1 = {d0}, {d1} but the positions "
                                 f"form {nx} x {ny}")
        angles.add(img, path, img_key, f"scan {scan}", "scans", ny, nx, xa, ya, order)
    det = f"{scans[0]}/instrument/{detector}"
    pr = _scalar(f, path, f"{det}/y_pixel_size", None) if f"{det}/y_pixel_size" in f else None
    pc = _scalar(f, path, f"{det}/x_pixel_size")
    meta = {
        "source": str(path), "format": "bliss", "scans": list(scans),
        "energy_kev": _scalar(f, path, f"{scans[0]}/instrument/positioners/nrj"),
        "distance_m": _scalar(f, path, f"{det}/distance"),
        "pixel_m": (pr if pr is not None else pc, pc),
        "cch": (_scalar(f, path, f"{det}/beam_center_y"), _scalar(f, path, f"{det}/beam_center_x")),
        "pixel_mask": (np.asarray(f[f"{det}/pixel_mask"][()]).astype(bool) if f"{det}/pixel_mask" in f else None),
        "x": angles.grid[2], "y": angles.grid[3], "detector_shape": list(angles.frame_shape),
    }
    return _finish(f, angles.stacks, angles.orders[0], etas, deltas, nus, phis, meta, path)


def _first(f, keys):
    for k in keys:
        if k in f:
            return k
    return None


def _finish(h5file, stacks, order, etas, deltas, nus, phis, meta, path):
    order_eta = np.argsort(etas, kind="stable")
    eta = np.asarray(etas)[order_eta]
    if np.any(np.diff(eta) == 0):
        raise ValueError(f"{path}: two scans have the same eta ({eta.tolist()})")
    frames = H5Stack(h5file, [stacks[i] for i in order_eta], order)
    order = order_eta

    def per(v):
        v = np.asarray(v, dtype=float)[order]
        return float(v[0]) if np.allclose(v, v[0]) else v

    ny, nx = frames.shape[1:3]
    meta.update(eta=eta.tolist(), delta=per(deltas), nu=per(nus), phi=per(phis),
                shape=[len(eta), int(ny), int(nx)],
                raster={"fast": "pix", "slow": "piy", "snake": False,
                        "x": [float(meta["x"][0]), float(meta["x"][-1]), int(nx)],
                        "y": [float(meta["y"][0]), float(meta["y"][-1]), int(ny)]})
    if meta.get("pixel_mask") is not None and meta["pixel_mask"].shape != tuple(frames.shape[-2:]):
        raise ValueError(f"{path}: pixel_mask is {meta['pixel_mask'].shape}, frames {tuple(frames.shape[-2:])}")
    return frames, meta


#: XSOCS's piezo motor -> measurement column (xsocs.io.XsocsH5.MOTORCOLS)
XSOCS_MOTORCOLS = {"pix": "adcY", "piy": "adcX", "piz": "adcZ"}


def _xsocs_scan(f, entry):
    """(fast column, slow column, (ny, nx) or None) from an XSOCS entry's ``scan`` group."""
    g = f.get(f"{entry}/scan")
    if g is None or "motor_0" not in g:
        return XSOCS_MOTORCOLS["pix"], XSOCS_MOTORCOLS["piy"], None

    def text(v):
        v = v[()]
        return v.decode() if isinstance(v, bytes) else str(v)

    m0, m1 = text(g["motor_0"]), text(g["motor_1"])
    if m0 not in XSOCS_MOTORCOLS or m1 not in XSOCS_MOTORCOLS:
        raise ValueError(f"{f.filename}: entry {entry} scans {m0}/{m1}, expected piezo motors pix/piy/piz")
    return XSOCS_MOTORCOLS[m0], XSOCS_MOTORCOLS[m1], (int(g["motor_1_steps"][()]), int(g["motor_0_steps"][()]))


def read_xsocs(path, *, pixel_m=55e-6, entries=None):
    """Read an XSOCS master file (one entry per rocking angle).

    Parameters
    ----------
    path : str or Path
        Master file whose entries (often external links to per-angle files)
        hold ``measurement/image/data`` (points, rows, cols), piezo
        positions per point in ``measurement/adcY`` (pix) and ``adcX`` (piy),
        as XSOCS maps them, with ``scan/motor_0`` naming the fast axis when
        present, angles
        ``instrument/positioners/{eta,phi,nu,del}`` and
        ``instrument/detector/{beam_energy (eV), center_chan_dim0/1,
        chan_per_deg_dim0/1}``.
    pixel_m : float
        Detector pixel size (m), used with ``chan_per_deg`` to get the
        distance, ``D = chan_per_deg * pixel / tan(1 deg)``, unless the file
        has ``instrument/detector/pixelsize_dim0``.
    entries : list of str, optional

    Returns
    -------
    frames, meta : as :func:`read_bliss`
    """
    f = _open(path)
    if entries is None:
        entries = []
        for k in f:
            link = f.get(k, getlink=True)
            import h5py

            if isinstance(link, h5py.ExternalLink) and not _resolve(path, link.filename).is_file():
                raise FileNotFoundError(f"{path}: entry {k} links to {link.filename}, which is missing")
            if f"{k}/measurement/image/data" in f:
                entries.append(k)
    if not entries:
        raise ValueError(f"{path}: no entry with measurement/image/data")
    angles = _Angles()
    etas, deltas, nus, phis = [], [], [], []
    for e in entries:
        img_key = f"{e}/measurement/image/data"
        img = _dataset(f, path, img_key)
        fast, slow, dims = _xsocs_scan(f, e)
        xv = np.asarray(_dataset(f, path, f"{e}/measurement/{fast}")[()])
        yv = np.asarray(_dataset(f, path, f"{e}/measurement/{slow}")[()])
        if xv.size != img.shape[0] or yv.size != img.shape[0]:
            raise ValueError(f"{path}: entry {e} has {img.shape[0]} frames but {xv.size} {fast} and "
                             f"{yv.size} {slow} positions")
        ny, nx, xa, ya, order, snake = _grid_from_positions(xv, yv, path, f"entry {e}", dims)
        angles.add(img, path, img_key, f"entry {e}", "entries", ny, nx, xa, ya, order)
        pos = f"{e}/instrument/positioners"
        etas.append(_scalar(f, path, f"{pos}/eta"))
        deltas.append(_scalar(f, path, f"{pos}/del"))
        nus.append(_scalar(f, path, f"{pos}/nu", 0.0))
        phis.append(_scalar(f, path, f"{pos}/phi", 0.0))
    det = f"{entries[0]}/instrument/detector"
    if f"{det}/pixelsize_dim0" in f:
        pixel_m = _scalar(f, path, f"{det}/pixelsize_dim0")
        pixel_m = pixel_m * 1e-6 if pixel_m > 1e-2 else pixel_m  # um or m
    cpd = _scalar(f, path, f"{det}/chan_per_deg_dim0")
    if not cpd > 0:
        raise ValueError(f"{path}: {det}/chan_per_deg_dim0 must be > 0, got {cpd}")
    distance = cpd * float(pixel_m) / np.tan(np.radians(1.0))
    meta = {
        "source": str(path), "format": "xsocs", "entries": list(entries),
        "energy_kev": _scalar(f, path, f"{det}/beam_energy") / 1000.0,
        "distance_m": float(distance), "pixel_m": float(pixel_m),
        "cch": (_scalar(f, path, f"{det}/center_chan_dim0"), _scalar(f, path, f"{det}/center_chan_dim1")),
        "x": angles.grid[2], "y": angles.grid[3], "detector_shape": list(angles.frame_shape),
    }
    return _finish(f, angles.stacks, angles.orders[0], etas, deltas, nus, phis, meta, path)
