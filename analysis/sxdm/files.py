"""Saving and loading SXDM maps as NeXus-style HDF5.

Layout::

    /entry                      NXentry   (attrs: default="maps", program, parameters)
    /entry/maps                 NXdata    (signal="strain", axes=["y", "x"])
    /entry/maps/<variable>      (ny, nx) with attrs units, long_name
    /entry/maps/x, /entry/maps/y  piezo positions, um
    /entry/maps/eta_intensity   (n_eta, ny, nx), with /entry/maps/eta in degrees
    /entry/parameters           NXcollection: reduction parameters (attrs of the Dataset)

The file is written to a temporary name next to ``path`` and moved into place
with ``os.replace``: a crash never leaves a half-written maps file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["save_maps", "load_maps"]


def save_maps(maps, path) -> Path:
    """Write a maps ``xarray.Dataset`` (from ``reduce_stack``) to NeXus-style HDF5.

    Parameters
    ----------
    maps : xarray.Dataset
    path : str or Path
        Output file (replaced atomically if it exists).

    Returns
    -------
    Path of the written file.
    """
    import h5py

    path = Path(path)
    if not hasattr(maps, "data_vars") or "strain" not in maps:
        raise ValueError("maps must be the Dataset returned by reduce_stack (no 'strain' variable)")
    if path.exists() and path.is_dir():
        raise ValueError(f"path {path} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            entry.attrs["default"] = "maps"
            entry.attrs["program"] = "braggscope.analysis.sxdm.reduce"
            data = entry.create_group("maps")
            data.attrs["NX_class"] = "NXdata"
            data.attrs["signal"] = "strain"
            data.attrs["axes"] = ["y", "x"]
            for name in ("x", "y", "eta"):
                if name in maps.coords:
                    d = data.create_dataset(name, data=np.asarray(maps.coords[name].values, dtype=float))
                    d.attrs["units"] = maps.coords[name].attrs.get("units", "deg" if name == "eta" else "um")
            for name, var in maps.data_vars.items():
                values = np.asarray(var.values)
                if values.dtype == bool:
                    values = values.astype(np.uint8)
                d = data.create_dataset(name, data=values, compression="gzip")
                for k, v in var.attrs.items():
                    d.attrs[k] = v
                d.attrs["dims"] = list(var.dims)
            params = entry.create_group("parameters")
            params.attrs["NX_class"] = "NXcollection"
            for k, v in maps.attrs.items():
                params.attrs[k] = json.dumps(v) if not isinstance(v, (str, int, float)) else v
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_maps(path):
    """Read a file written by :func:`save_maps` back into an ``xarray.Dataset``."""
    import h5py
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with h5py.File(path, "r") as f:
        if "entry/maps" not in f:
            raise ValueError(f"{path}: not a braggscope maps file (no /entry/maps)")
        g = f["entry/maps"]
        coords = {n: (n, g[n][()], {"units": g[n].attrs.get("units", "")}) for n in ("x", "y", "eta") if n in g}
        data = {}
        for name, d in g.items():
            if name in coords:
                continue
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in d.attrs.items() if k != "dims"}
            dims = tuple(str(x) for x in d.attrs["dims"])
            values = d[()]
            data[name] = (dims, values.astype(bool) if name == "mask" else values, attrs)
        attrs = {}
        for k, v in f["entry/parameters"].attrs.items():
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, str) and v[:1] in "[{":
                try:
                    v = json.loads(v)
                except ValueError:
                    pass
            attrs[k] = v
    return xr.Dataset(data, coords=coords, attrs=attrs)
