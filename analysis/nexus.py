"""Labelled results (``xarray.Dataset``) <-> NeXus ``NXdata`` groups in HDF5.

One writer and one reader for every braggscope result: the SXDM maps and the
BCDI reconstructions are both ``xarray.Dataset`` objects with coordinates and
units, and both are stored as NeXus ``NXdata`` groups that silx, nexusformat
(NeXpy), h5web and PyMca plot without help:

* the variables are grouped by their dimensions; each group of dimensions is
  one ``NXdata`` group (the group holding ``signal`` is named ``name``, the
  others after their single variable, or ``<name>_<dims>``);
* ``signal`` names the plotted variable, ``auxiliary_signals`` the others of
  the same shape; ``axes`` lists one coordinate per dimension (``"."`` where
  there is none) and ``<axis>_indices`` the dimension each axis spans;
* every dataset carries ``units`` and ``long_name`` when the variable has
  them; booleans are stored as ``uint8`` with the attribute ``boolean = 1``;
* a coordinate shared by several groups is written once and hard-linked.

The ``default`` attributes that lead a reader from the file root to the
plotted group are set by the callers (they know the entry's name).

Processing parameters (a CXI ``process_1/configuration``, as PyNX writes
it) go through :func:`write_configuration`, the one writer for every
braggscope file, read back by :func:`read_configuration`. Its rule, chosen
so that PyNX, silx and h5py read the values as they are:

* numbers and booleans: scalar datasets; strings: UTF-8 string datasets;
* lists (and arrays) of numbers, rectangular: numeric array datasets; lists
  of strings: UTF-8 string arrays;
* nested dicts: ``NXcollection`` subgroups (as PyNX stores a nested
  configuration), recursively;
* anything else (ragged lists, lists of dicts or with None): JSON text in a
  string dataset with the attribute ``format = "json"``;
* None: left out (HDF5 has no null; an absent key reads as None).
"""

from __future__ import annotations

import dataclasses
import datetime
import json

import h5py
import numpy as np

from braggscope import __version__

__all__ = ["write_nxdata", "read_nxdata", "read_nxdata_groups", "set_default", "write_program", "write_parameters",
           "read_parameters", "write_configuration", "read_configuration", "decode", "jsonable"]

_INDEX_ONLY = "index_only"


def write_nxdata(parent, name: str, ds, *, signal: str, compression="gzip") -> list[str]:
    """Write ``ds`` as NXdata group(s) under ``parent``; returns the group names.

    Parameters
    ----------
    parent : h5py.Group
        Usually an ``NXentry``.
    name : str
        Name of the group that holds ``signal`` (and every variable with the
        same dimensions).
    ds : xarray.Dataset
        Variables of at least one dimension; coordinates one-dimensional.
    signal : str
        The variable plotted by default.
    compression : str or None
        HDF5 filter for arrays of more than 64 elements.
    """
    if signal not in ds.data_vars:
        raise ValueError(f"signal {signal!r} is not a variable of the dataset (have {sorted(ds.data_vars)})")
    by_dims: dict[tuple, list[str]] = {}
    for vname, var in ds.data_vars.items():
        if var.ndim == 0:
            raise ValueError(f"variable {vname!r} is a scalar: store it as an attribute of the dataset")
        by_dims.setdefault(tuple(var.dims), []).append(str(vname))
    main_dims = tuple(ds[signal].dims)
    written_axes: dict[str, object] = {}
    names = []
    for dims, variables in by_dims.items():
        if dims == main_dims:
            gname, variables = name, [signal] + [v for v in variables if v != signal]
        elif len(variables) == 1:
            gname = variables[0]
        else:
            gname = f"{name}_{'_'.join(str(d) for d in dims)}"
        g = parent.create_group(gname)
        g.attrs["NX_class"] = "NXdata"
        g.attrs["signal"] = variables[0]
        if len(variables) > 1:
            g.attrs["auxiliary_signals"] = variables[1:]
        axes = []
        for i, dim in enumerate(dims):
            axes.append(str(dim))
            g.attrs[f"{dim}_indices"] = np.int32(i)
            if str(dim) in written_axes:
                g[str(dim)] = written_axes[str(dim)]  # hard link: one copy of each axis
                continue
            if dim in ds.coords:
                c = ds.coords[dim]
                d = g.create_dataset(str(dim), data=np.asarray(c.values))
                _attrs(d, c.attrs)
            else:
                d = g.create_dataset(str(dim), data=np.arange(ds.sizes[dim], dtype=np.int32))
                d.attrs[_INDEX_ONLY] = np.uint8(1)
            written_axes[str(dim)] = d
        g.attrs["axes"] = axes
        for vname in variables:
            values = np.asarray(ds[vname].values)
            is_bool = values.dtype == bool
            if is_bool:
                values = values.astype(np.uint8)
            big = values.size > 64 and compression
            d = g.create_dataset(vname, data=values, compression=compression if big else None,
                                 shuffle=bool(big), chunks=True if big else None)
            _attrs(d, ds[vname].attrs)
            if is_bool:
                d.attrs["boolean"] = np.uint8(1)
        names.append(gname)
    return names


def read_nxdata(group):
    """One NXdata group written by :func:`write_nxdata` -> ``xarray.Dataset``."""
    import xarray as xr

    axes = [decode(a) for a in np.atleast_1d(group.attrs["axes"])]
    signals = [decode(group.attrs["signal"])]
    if "auxiliary_signals" in group.attrs:
        signals += [decode(s) for s in np.atleast_1d(group.attrs["auxiliary_signals"])]
    coords = {}
    for ax in axes:
        if ax in group and not group[ax].attrs.get(_INDEX_ONLY, 0):
            coords[ax] = (ax, group[ax][()], _read_attrs(group[ax]))
    data = {}
    for s in signals:
        d = group[s]
        values = d[()]
        if d.attrs.get("boolean", 0):
            values = values.astype(bool)
        data[s] = (tuple(axes), values, {k: v for k, v in _read_attrs(d).items() if k != "boolean"})
    return xr.Dataset(data, coords=coords)


def read_nxdata_groups(parent, names=None):
    """Merge the NXdata groups of ``parent`` (or those in ``names``) into one Dataset."""
    import xarray as xr

    parts = [read_nxdata(parent[k]) for k in parent
             if (names is None or k in names) and decode(parent[k].attrs.get("NX_class", "")) == "NXdata"]
    if not parts:
        raise ValueError(f"{parent.file.filename}: no NXdata group in {parent.name}")
    return xr.merge(parts, compat="override", combine_attrs="override")


def write_program(entry, configuration: str) -> None:
    """NXentry's ``program_name`` field (``braggscope``, with its ``version`` and the ``configuration``
    that wrote the file as attributes, as the NeXus standard names them) and ``end_time`` (ISO 8601)."""
    entry["program_name"] = "braggscope"
    entry["program_name"].attrs["version"] = __version__
    entry["program_name"].attrs["configuration"] = configuration
    entry["end_time"] = datetime.datetime.now(datetime.UTC).astimezone().isoformat(timespec="seconds")


def set_default(h5file, path: str) -> None:
    """Set the ``default`` attributes from the file root down to the group ``path``."""
    parts = [p for p in path.strip("/").split("/") if p]
    node = h5file
    for p in parts:
        node.attrs["default"] = p
        node = node[p]


def write_parameters(parent, attrs: dict, name: str = "parameters"):
    """Dataset attributes as an ``NXcollection`` (JSON text for lists and dicts)."""
    g = parent.create_group(name)
    g.attrs["NX_class"] = "NXcollection"
    for k, v in attrs.items():
        g.attrs[str(k)] = v if isinstance(v, (str, int, float, np.integer, np.floating)) else json.dumps(jsonable(v))
    return g


def read_parameters(group) -> dict:
    """Inverse of :func:`write_parameters`."""
    out = {}
    for k, v in group.attrs.items():
        if k == "NX_class":
            continue
        v = decode(v)
        if isinstance(v, str) and v[:1] in "[{" or v in ("null", "true", "false"):
            try:
                v = json.loads(v)
            except ValueError:
                pass
        out[k] = v
    return out


def write_configuration(parent, params: dict | None, name: str = "configuration"):
    """Processing parameters as an ``NXcollection`` group (the rule in the module docstring).

    Parameters
    ----------
    parent : h5py.Group
        Usually an ``NXprocess`` (``process_1``).
    params : dict or None
        Keys become dataset names; values are made JSON-able first
        (:func:`jsonable`: arrays, numpy scalars, dataclasses).
    name : str
        Name of the group.
    """
    g = parent.create_group(name)
    g.attrs["NX_class"] = "NXcollection"
    for k, v in jsonable(params or {}).items():
        if v is None:
            continue
        if isinstance(v, dict):
            write_configuration(g, v, str(k))
        elif isinstance(v, str) or _is_numeric(v):
            g[str(k)] = v
        elif isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            g.create_dataset(str(k), data=v, dtype=h5py.string_dtype())
        else:
            g[str(k)] = json.dumps(v)
            g[str(k)].attrs["format"] = "json"
    return g


def read_configuration(group) -> dict:
    """Inverse of :func:`write_configuration` (arrays as lists, None keys absent)."""
    out = {}
    for k, node in group.items():
        if isinstance(node, h5py.Group):
            out[k] = read_configuration(node)
            continue
        v = node[()]
        if decode(node.attrs.get("format", "")) == "json":
            out[k] = json.loads(decode(v))
        elif isinstance(v, np.ndarray):
            out[k] = [decode(x) for x in v.tolist()] if v.dtype.kind in "OS" else v.tolist()
        else:
            out[k] = decode(v)
    return out


def _is_numeric(v) -> bool:
    """A number, bool or a rectangular (nested) list of them."""
    if isinstance(v, (bool, int, float)):
        return True
    if not isinstance(v, list) or not v:
        return False
    try:
        a = np.asarray(v)
    except ValueError:  # ragged
        return False
    return a.dtype.kind in "biuf"


def decode(v):
    """HDF5 attribute value -> Python (bytes to str, numpy scalars to Python)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _attrs(d, attrs):
    for k, v in attrs.items():
        d.attrs[str(k)] = v if isinstance(v, (str, int, float, np.integer, np.floating)) else json.dumps(jsonable(v))


def _read_attrs(d) -> dict:
    return {k: decode(v) for k, v in d.attrs.items() if k != _INDEX_ONLY}


def jsonable(obj):
    """Nested dicts/lists/arrays/numpy scalars -> JSON-able Python values (others as str)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    return str(obj)
