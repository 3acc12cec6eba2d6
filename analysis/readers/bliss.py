"""ID01 BLISS HDF5 files: an SXDM map (one scan per angle) or a BCDI rocking scan (one scan).

Layout read (per scan ``N.1``): frames at ``instrument/<detector>/image``
(usually a virtual dataset into the detector's own files), calibration at
``instrument/<detector>/{beam_center_x, beam_center_y, distance,
x_pixel_size, y_pixel_size, pixel_mask}``, angles and energy at
``instrument/positioners/{eta, delta, nu, phi, nrj}`` (degrees, keV), piezo
positions per point at ``instrument/{pix,piy}/value`` (or
``{pix,piy}_position/value``), the map shape at ``technique/dim0`` (fast),
``dim1`` (slow), and for a rocking scan the angle per frame at
``instrument/eta/value`` (or ``measurement/eta``). The counters recorded with
every point (``measurement/<name>``: the monitor ``mon1``, the fluorescence
``ct_fluo``, ...) and the machine's ``instrument/machine/{current,
refill_countdown}`` come along in the stack's ``counters``.
"""

from __future__ import annotations

import h5py
import numpy as np

from braggscope.core.errors import InputError
from braggscope.core.stacks import RockingStack

from .hdf5 import check_top_links, checked_dataset, first_key, open_hdf5, read_all, scalar
from .stack import Angles, counter_role, finish, grid_from_positions, setup_from_fields

__all__ = ["read_bliss", "read_bliss_rocking"]


def read_bliss(path, *, scans=None, detector="mpx1x4", monitor="auto", fluorescence="auto"):
    """Read an ID01 BLISS SXDM dataset (one scan per rocking angle).

    Parameters
    ----------
    path : str or Path
        BLISS dataset file (layout in the module docstring).
    scans : list of str, optional
        Scan names (default: every ``N.1`` with the detector image, by N).
    detector : str
        Detector group under ``instrument``.
    monitor, fluorescence : str or None
        The counters that measure the incident flux and an angle-independent signal: a name
        (``"mon1"``, ``"ct_fluo"``), ``"auto"`` for those two names when recorded, None for none.

    Returns
    -------
    MapStack
        Frames an :class:`~braggscope.analysis.readers.H5Stack` ``(n_eta, ny, nx, rows, cols)``
        sorted by eta, in raster order; ``setup`` from the file's calibration and positioners
        (``delta``/``nu``/``phi`` scalar or one per angle); ``x``/``y`` in um; ``counters``
        the per-point counters of ``measurement/`` (``(n_eta, ny, nx)``) and the machine's
        ``machine_current`` and ``refill_countdown`` (``(n_eta,)``), with ``monitor`` and
        ``fluorescence`` naming two of them; ``metadata`` ``format``, ``scans``.

    Raises
    ------
    SourceMissingError, InputError
        A missing or unreadable file, link or source, or an inconsistent layout (named).
    """
    f = open_hdf5(path)
    try:
        check_top_links(f, path)
        if scans is None:
            scans = sorted((k for k in f if k.endswith(".1") and f"{k}/instrument/{detector}" in f),
                           key=lambda k: float(k.split(".")[0]) if k.split(".")[0].isdigit() else 0)
        if not scans:
            raise InputError(f"{path}: no scan with instrument/{detector}/image")
        angles = Angles()
        etas, deltas, nus, phis = [], [], [], []
        for scan in scans:
            if scan not in f:
                raise InputError(f"{path}: no scan {scan}")
            pos = f"{scan}/instrument/positioners"
            etas.append(scalar(f, path, f"{pos}/eta"))
            deltas.append(scalar(f, path, f"{pos}/delta"))
            nus.append(scalar(f, path, f"{pos}/nu", 0.0))
            phis.append(scalar(f, path, f"{pos}/phi", 0.0))
            _add_scan(f, path, scan, detector, angles)
        fields = {"format": "bliss", "scans": list(scans), "detector": detector, "monitor": monitor,
                  "fluorescence": fluorescence, **_calibration(f, path, scans[0], detector)}
        return finish(f, angles, etas, deltas, nus, phis, fields, path)
    except BaseException:
        f.close()
        raise


def _add_scan(f, path, scan, detector, angles):
    """Check one scan's frames and positions and add them to ``angles``."""
    s = f[scan]
    inst = f"{scan}/instrument"
    px = first_key(f, [f"{inst}/pix/value", f"{inst}/pix_position/value"])
    py = first_key(f, [f"{inst}/piy/value", f"{inst}/piy_position/value"])
    img_key = f"{inst}/{detector}/image"
    img = checked_dataset(f, path, img_key)
    if img.ndim != 3:
        raise InputError(f"{path}: {img_key} has shape {img.shape}, expected (points, rows, cols)")
    dims = None
    if "technique/dim0" in s:
        dims = (int(scalar(f, path, f"{scan}/technique/dim1")), int(scalar(f, path, f"{scan}/technique/dim0")))
    if px is not None and py is not None:
        xv, yv = f[px][()], f[py][()]
        if xv.size != img.shape[0] or yv.size != img.shape[0]:
            raise InputError(f"{path}: scan {scan} has {img.shape[0]} frames but {xv.size} pix and "
                             f"{yv.size} piy positions")
        ny, nx, xa, ya, order, _ = grid_from_positions(xv, yv, path, f"scan {scan}", dims)
    else:
        if dims is None:
            raise InputError(f"{path}: scan {scan} has neither pix/piy positions nor technique/dim0, dim1")
        ny, nx = dims
        xa, ya = np.arange(nx, dtype=float), np.arange(ny, dtype=float)
        order = np.arange(ny * nx).reshape(ny, nx)
    if dims is not None and dims != (ny, nx):
        raise InputError(f"{path}: scan {scan} technique/dim0,dim1 = {dims[1]}, {dims[0]} but the positions "
                         f"form {nx} x {ny}")
    angles.add(img, path, img_key, f"scan {scan}", "scans", ny, nx, xa, ya, order,
               counters=_counters(f, path, scan, img.shape[0]))


#: Machine readings of a BLISS scan (``instrument/machine/<name>``) taken into the stack's counters.
MACHINE_FIELDS = {"current": "machine_current", "refill_countdown": "refill_countdown"}


def _counters(f, path, scan, n_points) -> dict:
    """The scalar counters a scan recorded: every 1-D ``measurement/<name>`` of one value per point
    (``mon1``, ``ct_fluo``, ...) and the machine's current and refill countdown."""
    out = {}
    measurement = f.get(f"{scan}/measurement")
    if measurement is not None:
        for name in measurement:
            item = measurement.get(name)
            if isinstance(item, h5py.Dataset) and item.ndim == 1 and item.shape[0] == n_points \
                    and item.dtype.kind in "iuf":
                out[name] = read_all(item, path, f"{scan}/measurement/{name}")
    for name, key in MACHINE_FIELDS.items():
        full = f"{scan}/instrument/machine/{name}"
        if full in f and isinstance(f[full], h5py.Dataset) and f[full].dtype.kind in "iuf":
            out[key] = read_all(f[full], path, full)
    return out


def _calibration(f, path, scan, detector) -> dict:
    """Energy, distance, pixel size, direct-beam pixel and pixel mask of one scan."""
    det = f"{scan}/instrument/{detector}"
    pc = scalar(f, path, f"{det}/x_pixel_size")
    pr = scalar(f, path, f"{det}/y_pixel_size", pc)
    mask = None
    if f"{det}/pixel_mask" in f:
        mask = read_all(checked_dataset(f, path, f"{det}/pixel_mask"), path, f"{det}/pixel_mask").astype(bool)
    return {
        "energy_kev": scalar(f, path, f"{scan}/instrument/positioners/nrj"),
        "distance_m": scalar(f, path, f"{det}/distance"),
        "pixel_m": (pr, pc),
        "cch": (scalar(f, path, f"{det}/beam_center_y"), scalar(f, path, f"{det}/beam_center_x")),
        "pixel_mask": mask,
    }


def read_bliss_rocking(path, *, scan: str | None = None, detector: str = "mpx1x4", monitor="auto"):
    """Read one BCDI rocking scan from an ID01 BLISS file (the same layout, one scan).

    Parameters
    ----------
    path : path-like
        The BLISS dataset file.
    scan : str, optional
        Scan name such as ``"3.1"`` (default: the first scan with the detector image).
    detector : str
        Detector group under ``instrument``.
    monitor : str or None
        The incident-flux counter: a name, ``"auto"`` for ``mon1`` when recorded, None for none.

    Returns
    -------
    RockingStack
        Frames ``(n_eta, rows, cols)`` of raw counts read into memory, ``eta`` per frame,
        ``setup`` from the file's calibration and positioners, ``counters`` per frame (as for
        :func:`read_bliss`) with ``monitor`` naming one, ``metadata`` ``format``, ``scan``.

    Raises
    ------
    SourceMissingError, InputError
        A missing or unreadable file, link or source, or an inconsistent layout (named).
    """
    with open_hdf5(path) as f:
        check_top_links(f, path)
        entries = sorted(f.keys(), key=_entry_key)
        with_image = [e for e in entries if f"{e}/instrument/{detector}/image" in f]
        if scan is None:
            if not with_image:
                raise InputError(f"{path}: no scan with instrument/{detector}/image (scans: {', '.join(entries)})")
            scan = with_image[0]
        elif scan not in f:
            raise InputError(f"{path}: no scan {scan!r} (scans: {', '.join(entries) or 'none'})")
        key = f"{scan}/instrument/{detector}/image"
        img = checked_dataset(f, path, key)
        if img.ndim != 3:
            raise InputError(f"{path}: {key} has shape {img.shape}, expected (frames, rows, cols)")
        inst = f"{scan}/instrument"
        eta_key = first_key(f, [f"{inst}/eta/value", f"{scan}/measurement/eta", f"{inst}/positioners/eta"])
        if eta_key is None:
            raise InputError(f"{path}: scan {scan} has no eta angles (instrument/eta/value or positioners/eta)")
        eta = np.asarray(read_all(f[eta_key], path, eta_key), dtype=float).ravel()
        if eta.size < 2:
            raise InputError(f"{path}: scan {scan}: {eta_key} has a single value; not a rocking scan")
        if eta.size != img.shape[0]:
            raise InputError(f"{path}: scan {scan} has {img.shape[0]} frames but {eta.size} eta values "
                             f"({eta_key}; truncated scan?)")
        pos = f"{inst}/positioners"
        fields = {**_calibration(f, path, scan, detector), "delta": scalar(f, path, f"{pos}/delta", 0.0),
                  "nu": scalar(f, path, f"{pos}/nu", 0.0), "phi": scalar(f, path, f"{pos}/phi", 0.0)}
        setup = setup_from_fields(fields, img.shape[1:], path, detector)
        frames = read_all(img, path, key)
        counters = {name: np.broadcast_to(np.asarray(v, dtype=float), eta.shape).copy()
                    for name, v in _counters(f, path, scan, img.shape[0]).items()}
    return RockingStack(frames, eta, setup, source=str(path), metadata={"format": "bliss", "scan": scan},
                        counters=counters, monitor=counter_role(counters, monitor, "monitor", path))


def _entry_key(name):
    try:
        a, b = name.split(".")
        return (int(a), int(b))
    except ValueError:
        return (1 << 30, 0)
