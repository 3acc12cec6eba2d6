"""Saving and loading SXDM maps as NeXus HDF5 (silx, NeXpy and PyMca plot them as they open).

Layout (``default`` attributes lead from the root to the strain map)::

    /                          @default="entry"
    /entry                     NXentry   @default="maps"; program_name (@version, @configuration), end_time
    /entry/maps                NXdata    @signal="strain", @auxiliary_signals=[intensity, mask, ...],
                                         @axes=["y", "x"], @y_indices=0, @x_indices=1
    /entry/maps/<variable>     (ny, nx), @units, @long_name
    /entry/maps/x, y           piezo positions (um)
    /entry/eta_intensity       NXdata    @signal="eta_intensity", @axes=["eta", "y", "x"]
                               (the per-angle intensity; eta in degrees; y and x hard-linked)
    /entry/parameters          NXcollection: the reduction parameters (attributes of the Dataset)

The groups are written by :func:`braggscope.analysis.nexus.write_nxdata`, the
same writer as the BCDI results. The file appears complete or not at all
(:func:`braggscope.core.atomic.atomic_path`).
"""

from __future__ import annotations

from pathlib import Path

import h5py

from braggscope.analysis.nexus import (
    read_nxdata_groups,
    read_parameters,
    set_default,
    write_nxdata,
    write_parameters,
    write_program,
)
from braggscope.core.atomic import atomic_hdf5

__all__ = ["save_maps", "load_maps"]


def save_maps(maps, path) -> Path:
    """Write a maps ``xarray.Dataset`` (from ``reduce_stack``) to NeXus HDF5.

    Parameters
    ----------
    maps : xarray.Dataset
        With at least the ``strain`` variable (microstrain), dims ``(y, x)``.
    path : str or Path
        Output file (replaced atomically if it exists; the directory is created).

    Returns
    -------
    Path of the written file.
    """
    path = Path(path)
    if not hasattr(maps, "data_vars") or "strain" not in maps:
        raise ValueError("maps must be the Dataset returned by reduce_stack (no 'strain' variable)")
    if path.exists() and path.is_dir():
        raise ValueError(f"path {path} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_hdf5(path) as f:
        f.attrs["creator"] = "braggscope"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        write_program(entry, "braggscope.analysis.sxdm.reduce")
        entry["title"] = "SXDM maps"
        write_nxdata(entry, "maps", maps, signal="strain")
        write_parameters(entry, maps.attrs)
        set_default(f, "entry/maps")
    return path


def load_maps(path):
    """Read a file written by :func:`save_maps` back into an ``xarray.Dataset``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with h5py.File(path, "r") as f:
        if "entry/maps" not in f:
            raise ValueError(f"{path}: not a braggscope maps file (no /entry/maps)")
        ds = read_nxdata_groups(f["entry"])
        ds.attrs = read_parameters(f["entry/parameters"]) if "entry/parameters" in f else {}
    return ds
