"""Which files and rows lie behind a catalog array or a resource document.

Detector frames and captured positions stay in HDF5 files; the catalog and the
documents only name them. Every reader that wants to open such a file asks here:

* :func:`array_source` for a catalog array (its data source's assets, dataset,
  ``slice`` and SWMR flag), and :func:`local_source` when every file is on this
  computer;
* :func:`uri_path` and :func:`resource_path` for the documents themselves
  (``stream_resource`` URIs, ``resource`` roots and paths);
* :class:`CatalogArray`, an array-like that fetches from the catalog only what is sliced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

__all__ = ["ArraySource", "CatalogArray", "DEFAULT_DATASET", "array_source", "local_source", "resource_path",
           "uri_path"]

#: The areaDetector HDF5 plugin's default dataset.
DEFAULT_DATASET = "/entry/data/data"


@dataclass(frozen=True)
class ArraySource:
    """The HDF5 files behind one catalog array.

    Attributes
    ----------
    paths : list of Path
        The files, in order (their rows joined end to end); None for a file that is not a local
        ``file:`` URI.
    dataset : str
        The dataset in each file.
    rows : list of int or None
        The data source's ``slice``: row i of the array is row ``rows[i]`` of the joined files
        (None: the first rows).
    swmr : bool
        Open the files in SWMR mode (a process that opens a file twice must use one mode).
    """

    paths: list
    dataset: str
    rows: list | None
    swmr: bool

    @property
    def local(self) -> bool:
        """Whether every file is a local file that exists."""
        return all(p is not None and p.is_file() for p in self.paths)


def uri_path(uri: str) -> Path | None:
    """The local path of a ``file:`` URI (``file://localhost/...`` or ``file:///...``), else None."""
    parts = urlparse(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    return Path(unquote(parts.path))


def resource_path(doc: dict) -> Path:
    """The file a ``resource`` document names (``root`` joined with ``resource_path``)."""
    root = doc.get("root") or ""
    return Path(root) / doc["resource_path"] if root else Path(doc["resource_path"])


def array_source(array_client) -> ArraySource | None:
    """The HDF5 files behind a catalog array, or None when it is not one HDF5 data source
    (a remote or older server that does not list its sources, or another format)."""
    try:
        sources = array_client.include_data_sources().data_sources()
    except Exception:  # noqa: BLE001 - remote or older servers do not list data sources
        return None
    if len(sources) != 1 or sources[0].mimetype != "application/x-hdf5":
        return None
    parameters = sources[0].parameters or {}
    try:
        rows = _rows(parameters.get("slice"))
    except ValueError:
        return None  # a slice this reader does not follow: left to the catalog
    assets = sorted(sources[0].assets, key=lambda a: a.num or 0)
    return ArraySource([uri_path(a.data_uri) for a in assets], parameters.get("dataset") or DEFAULT_DATASET,
                       rows, bool(parameters.get("swmr")))


def _rows(value) -> list | None:
    """The rows a data source's ``slice`` selects: None (the first rows), or a list of row numbers.

    The catalog writes a list of rows, or text ``"start:stop"`` (bluesky-tiled-plugins: ``":6"``
    for the first six rows).
    """
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(i, int) for i in value):
        return value
    if isinstance(value, str) and value.count(":") == 1:
        start, _, stop = value.partition(":")
        if not start.strip() or int(start) == 0:
            return None
        if stop.strip():
            return list(range(int(start), int(stop)))
    raise ValueError(f"slice {value!r}")


def local_source(array_client) -> ArraySource | None:
    """:func:`array_source` when every file is on this computer, else None."""
    found = array_source(array_client)
    return found if found is not None and found.paths and found.local else None


class CatalogArray:
    """An array-like over a Tiled array client that fetches only what is sliced (for ``dask.array.from_array``)."""

    def __init__(self, client):
        self._client = client
        self.shape = tuple(client.shape)
        dtype = client.dtype
        self.dtype = np.dtype(dtype.to_numpy_dtype() if hasattr(dtype, "to_numpy_dtype") else dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        return np.asarray(self._client[key])
