"""XSOCS master files: one entry per rocking angle, usually external links to per-angle files.

Layout read (per entry): frames at ``measurement/image/data`` (points, rows,
cols); piezo positions per point in ``measurement/adcY`` (pix) and ``adcX``
(piy), as XSOCS maps them, with ``scan/motor_0`` naming the fast axis when
present; angles at ``instrument/positioners/{eta, del, nu, phi}`` (degrees);
the detector at ``instrument/detector/{beam_energy (eV), center_chan_dim0/1,
chan_per_deg_dim0/1, pixelsize_dim0}``.
"""

from __future__ import annotations

import numpy as np

from braggscope.core.errors import InputError

from .hdf5 import check_top_links, checked_dataset, open_hdf5, read_all, scalar
from .stack import Angles, finish, grid_from_positions

__all__ = ["read_xsocs", "XSOCS_MOTORCOLS"]

#: XSOCS's piezo motor -> measurement column (xsocs.io.XsocsH5.MOTORCOLS)
XSOCS_MOTORCOLS = {"pix": "adcY", "piy": "adcX", "piz": "adcZ"}


def read_xsocs(path, *, pixel_m=55e-6, entries=None):
    """Read an XSOCS master file (one entry per rocking angle).

    Parameters
    ----------
    path : str or Path
        Master file (layout in the module docstring).
    pixel_m : float
        Detector pixel size (m), used with ``chan_per_deg`` to get the
        distance, ``D = chan_per_deg * pixel / tan(1 deg)``, unless the file
        has ``instrument/detector/pixelsize_dim0``.
    entries : list of str, optional
        Entry names (default: every entry with ``measurement/image/data``).

    Returns
    -------
    MapStack
        As :func:`~braggscope.analysis.readers.read_bliss` (``metadata``: ``format``, ``entries``).

    Raises
    ------
    SourceMissingError, InputError
        A missing or unreadable file, link or source, or an inconsistent layout (named).
    """
    f = open_hdf5(path)
    try:
        check_top_links(f, path)
        if entries is None:
            entries = [k for k in f if f"{k}/measurement/image/data" in f]
        if not entries:
            raise InputError(f"{path}: no entry with measurement/image/data")
        angles = Angles()
        etas, deltas, nus, phis = [], [], [], []
        for e in entries:
            _add_entry(f, path, e, angles)
            pos = f"{e}/instrument/positioners"
            etas.append(scalar(f, path, f"{pos}/eta"))
            deltas.append(scalar(f, path, f"{pos}/del"))
            nus.append(scalar(f, path, f"{pos}/nu", 0.0))
            phis.append(scalar(f, path, f"{pos}/phi", 0.0))
        fields = {"format": "xsocs", "entries": list(entries), **_detector(f, path, entries[0], pixel_m)}
        return finish(f, angles, etas, deltas, nus, phis, fields, path)
    except BaseException:
        f.close()
        raise


def _add_entry(f, path, e, angles):
    img_key = f"{e}/measurement/image/data"
    img = checked_dataset(f, path, img_key)
    fast, slow, dims = _xsocs_scan(f, path, e)
    xv = np.asarray(read_all(checked_dataset(f, path, f"{e}/measurement/{fast}"), path, fast))
    yv = np.asarray(read_all(checked_dataset(f, path, f"{e}/measurement/{slow}"), path, slow))
    if img.ndim != 3:
        raise InputError(f"{path}: {img_key} has shape {img.shape}, expected (points, rows, cols)")
    if xv.size != img.shape[0] or yv.size != img.shape[0]:
        raise InputError(f"{path}: entry {e} has {img.shape[0]} frames but {xv.size} {fast} and "
                         f"{yv.size} {slow} positions")
    ny, nx, xa, ya, order, _ = grid_from_positions(xv, yv, path, f"entry {e}", dims)
    angles.add(img, path, img_key, f"entry {e}", "entries", ny, nx, xa, ya, order)


def _detector(f, path, entry, pixel_m) -> dict:
    det = f"{entry}/instrument/detector"
    if f"{det}/pixelsize_dim0" in f:
        pixel_m = scalar(f, path, f"{det}/pixelsize_dim0")
        pixel_m = pixel_m * 1e-6 if pixel_m > 1e-2 else pixel_m  # um or m
    cpd = scalar(f, path, f"{det}/chan_per_deg_dim0")
    if not cpd > 0:
        raise InputError(f"{path}: {det}/chan_per_deg_dim0 must be > 0, got {cpd}")
    return {
        "energy_kev": scalar(f, path, f"{det}/beam_energy") / 1000.0,
        "distance_m": float(cpd * float(pixel_m) / np.tan(np.radians(1.0))),
        "pixel_m": float(pixel_m),
        "cch": (scalar(f, path, f"{det}/center_chan_dim0"), scalar(f, path, f"{det}/center_chan_dim1")),
    }


def _xsocs_scan(f, path, entry):
    """(fast column, slow column, (ny, nx) or None) from an XSOCS entry's ``scan`` group."""
    g = f.get(f"{entry}/scan")
    if g is None or "motor_0" not in g:
        return XSOCS_MOTORCOLS["pix"], XSOCS_MOTORCOLS["piy"], None

    def text(v):
        v = v[()]
        return v.decode() if isinstance(v, bytes) else str(v)

    m0, m1 = text(g["motor_0"]), text(g["motor_1"])
    if m0 not in XSOCS_MOTORCOLS or m1 not in XSOCS_MOTORCOLS:
        raise InputError(f"{path}: entry {entry} scans {m0}/{m1}, expected piezo motors pix/piy/piz")
    return XSOCS_MOTORCOLS[m0], XSOCS_MOTORCOLS[m1], (int(g["motor_1_steps"][()]), int(g["motor_0_steps"][()]))
