"""An SXDM file of either format: format detection and :func:`read_stack`."""

from __future__ import annotations

from braggscope.core.errors import ArgumentError, InputError

from .bliss import read_bliss
from .hdf5 import check_top_links, open_hdf5
from .xsocs import read_xsocs

__all__ = ["read_stack", "detect_format"]


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
