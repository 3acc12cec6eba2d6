"""Read a fly-scan run's primary stream: frames and captured positions from StreamResource files.

An ``sxdm_fly`` run writes one detector file and one position-capture file (earlier
runs: one of each per line); its primary stream's fields are consolidated by the
catalog from StreamResource/StreamDatum documents. Row i of a field is row
``slice[i]`` of its files joined end to end when the data source has a ``slice``
(a retried line's short attempt left rows that no datum names), else row i.
When the files are on this computer they are read directly with h5py (lazily for
the frames, a frame per dask block); otherwise through the catalog. Bottom layer:
imports no wing.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlparse

import numpy as np

from braggscope.core.eccentricity import EccentricityModel

__all__ = ["LocalSource", "fly_arrays", "fly_x_from_captured", "local_assets", "streamed_only"]


def streamed_only(descriptor: dict) -> bool:
    """Whether every field of an event descriptor comes as StreamResource/StreamDatum (``external``
    ``"STREAM:"``; a fly scan's primary stream): such a stream has no event rows."""
    keys = descriptor.get("data_keys", {}).values()
    return bool(keys) and all(str(key.get("external", "")).startswith("STREAM:") for key in keys)


class LocalSource(NamedTuple):
    """The files behind a catalog array, on this computer."""

    paths: list[Path]  # in order
    dataset: str
    rows: list[int] | None  # the data source's ``slice`` (None: the first rows)
    swmr: bool  # open them in SWMR mode (a process opening a file twice must use one mode)


def local_assets(array_client) -> LocalSource | None:
    """The files behind a catalog array, or None when not all of them are on this computer."""
    try:
        sources = array_client.include_data_sources().data_sources()
    except Exception:  # noqa: BLE001 - remote or older servers
        return None
    if len(sources) != 1 or sources[0].mimetype != "application/x-hdf5":
        return None
    paths = []
    for asset in sorted(sources[0].assets, key=lambda a: a.num or 0):
        uri = urlparse(asset.data_uri)
        path = Path(unquote(uri.path))
        if uri.scheme != "file" or uri.netloc not in ("", "localhost") or not path.is_file():
            return None
        paths.append(path)
    parameters = sources[0].parameters
    rows = parameters.get("slice")
    if rows is not None and not isinstance(rows, list):
        return None  # a slice given as text: left to the catalog
    return LocalSource(paths, parameters.get("dataset") or "/entry/data/data", rows, bool(parameters.get("swmr")))


def _rows(joined, rows, n: int):
    """The catalog's rows of the files' rows joined end to end."""
    if rows is None:
        if joined.shape[0] < n:
            raise ValueError(f"{joined.shape[0]} rows in the files, the run recorded {n}")
        return joined[:n]
    return joined[np.asarray(rows, dtype=np.int64)]


def _frames(array_client):
    import dask.array as da
    import h5py
    import hdf5plugin  # noqa: F401  (registers the Blosc filter of the fly detector files)

    found = local_assets(array_client)
    if found is None:
        from braggscope.storage import _SlicedArray  # the catalog path

        wrapped = _SlicedArray(array_client)
        return da.from_array(wrapped, chunks=(1,) + wrapped.shape[1:], asarray=False, fancy=False)
    blocks = [da.from_array(data, chunks=(1,) + data.shape[1:], asarray=True, fancy=False)
              for data in (h5py.File(path, "r", swmr=found.swmr)[found.dataset] for path in found.paths)]
    if not blocks:
        return da.zeros((0, 1, 1), dtype=np.uint32)
    return _rows(da.concatenate(blocks, axis=0), found.rows, int(array_client.shape[0]))


def _values(array_client) -> np.ndarray:
    import h5py

    found = local_assets(array_client)
    if found is None:
        return np.asarray(array_client.read(), dtype=float)
    parts = []
    for path in found.paths:
        with h5py.File(path, "r", swmr=found.swmr) as f:
            parts.append(np.asarray(f[found.dataset], dtype=float))
    return _rows(np.concatenate(parts) if parts else np.zeros(0), found.rows, int(array_client.shape[0]))


def fly_arrays(stream, field: str, axes: tuple[str, str]):
    """Frames (dask, ``(N, rows, cols)``) and the captured positions of ``axes`` (``{name: (N,)}``, um).

    ``N`` is the number of points the catalog holds (accepted lines x points per line).
    """
    frames = _frames(stream[field])
    captured = {name: _values(stream[name]) for name in axes}
    for name, values in captured.items():
        if values.shape[0] != frames.shape[0]:
            raise ValueError(f"fly run: {values.shape[0]} captured {name} positions for {frames.shape[0]} frames")
    return frames, captured


def fly_x_from_captured(pix: np.ndarray, eta: np.ndarray, eccentricity: dict | None) -> np.ndarray:
    """The map's fast coordinate (nx,), um: captured positions ``(n_eta, ny, nx)`` less each angle's
    eccentricity offset, averaged over angles and rows."""
    model = EccentricityModel.coerce(eccentricity, "eccentricity")
    dx, _ = model.offset(np.asarray(eta, dtype=float))
    dx = np.broadcast_to(np.asarray(dx, dtype=float), (pix.shape[0],))
    return np.mean(pix - dx[:, None, None], axis=(0, 1))
