"""From a file or a catalog run to an SXDM reduction: format detection and :func:`reduce_run`."""

from __future__ import annotations

import numpy as np

from braggscope.core.errors import ArgumentError, InputError
from braggscope.core.setup import ScanSetup, SetupError

from .bliss import read_bliss
from .checks import CheckedStack
from .hdf5 import check_top_links, open_hdf5
from .xsocs import read_xsocs

__all__ = ["read_stack", "detect_format", "reduce_run", "geometry_from_meta"]


def read_stack(path, format="auto", **kwargs):
    """Read an SXDM stack from a file: ``format`` is ``"bliss"``, ``"xsocs"`` or ``"auto"``."""
    if format == "auto":
        format = detect_format(path)
    if format == "bliss":
        return read_bliss(path, **kwargs)
    if format == "xsocs":
        return read_xsocs(path, **kwargs)
    raise ArgumentError(f"format must be 'bliss', 'xsocs' or 'auto', got {format!r}")


def detect_format(path) -> str:
    """``"bliss"`` or ``"xsocs"`` from the layout of an HDF5 file.

    Raises
    ------
    SourceMissingError
        The file, or a file one of its top-level external links names, is absent.
    InputError
        Not HDF5, truncated, or neither layout.
    """
    with open_hdf5(path) as f:
        check_top_links(f, path)
        for name in f:
            entry = f.get(name)
            if entry is None or not hasattr(entry, "keys"):
                continue
            if "measurement/image/data" in entry or "measurement/image" in entry:
                return "xsocs"
            if "instrument" in entry and "technique" in entry or "instrument/positioners" in entry:
                return "bliss"
    raise InputError(f"{path}: neither an ID01 BLISS nor an XSOCS SXDM file (no scan with frames found)")


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


def reduce_run(frames, meta, *, check: bool = True, **kwargs):
    """Reduce an SXDM stack described by a start-document-like ``meta``.

    Parameters
    ----------
    frames : array-like, shape (n_eta, ny, nx, rows, cols)
        E.g. from ``braggscope.storage.sxdm_stack(run)``, :func:`read_bliss`
        or :func:`read_xsocs`.
    meta : dict
        ``setup`` (a :class:`~braggscope.core.setup.ScanSetup`; or, from older
        runs, the flat keys ``energy_kev``, ``distance_m``, ``pixel_m``,
        ``cch``, ``detector_shape``, ``delta``, ``nu``, ``phi``), ``eta`` and
        optionally ``raster`` / ``x`` / ``y`` (um) and ``source`` (a name for messages).
    check : bool
        Check every block read (:class:`~braggscope.analysis.readers.CheckedStack`):
        refuse complex, NaN/inf, all-zero or mostly negative frames, read a few
        negative values as 0 with a :class:`~braggscope.core.errors.DataWarning`.
        Skipped with a distributed ``scheduler`` (the checks count in this process).
    **kwargs
        Passed to :func:`braggscope.analysis.sxdm.reduce_stack` (threshold,
        background, median, roi, shifts are applied first if ``shifts=`` is
        given, ...).

    Returns
    -------
    xarray.Dataset (see ``reduce_stack``), with ``attrs["source"]`` from meta.

    Raises
    ------
    BadDataError
        Frames that cannot be reduced (see :mod:`braggscope.analysis.readers.checks`).
    SetupError
        ``meta`` lacks a setup field (named).
    """
    from braggscope.analysis.sxdm.reduce import reduce_stack

    setup = ScanSetup.from_start_doc(meta)
    shape = tuple(frames.shape)
    if len(shape) != 5:
        raise InputError(f"frames must have shape (n_eta, ny, nx, rows, cols), got {shape}")
    kwargs.setdefault("x", _raster_axis(meta, "x", shape[2]))
    kwargs.setdefault("y", _raster_axis(meta, "y", shape[1]))
    if setup.pixel_mask is not None:
        kwargs.setdefault("pixel_mask", setup.pixel_mask)
    scheduler = kwargs.get("scheduler", "threads")
    checked = None
    if check and isinstance(scheduler, str) and scheduler in ("threads", "sync"):
        checked = frames if isinstance(frames, CheckedStack) else \
            CheckedStack(frames, meta.get("source") or "frames", pixel_mask=kwargs.get("pixel_mask"))
        frames = checked
    shifts = kwargs.pop("shifts", None)
    if shifts is not None:
        from braggscope.analysis.sxdm.drift import apply_drift

        frames = apply_drift(frames, shifts)
    try:
        delta, nu, phi = setup.angles(shape[0])
    except SetupError as exc:
        raise InputError(f"{meta.get('source') or 'meta'}: {exc}") from None
    maps = reduce_stack(frames, meta["eta"], setup.geometry(), delta, nu, phi, **kwargs)
    if checked is not None:
        checked.finish()
    maps.attrs["source"] = str(meta.get("source", ""))
    return maps
