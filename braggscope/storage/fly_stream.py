"""Read a fly-scan run's primary stream: frames and captured positions from StreamResource files.

An ``sxdm_fly`` run writes one detector file and one position-capture file (earlier
runs: one of each per line); its primary stream's fields are consolidated by the
catalog from StreamResource/StreamDatum documents. Row i of a field is row
``slice[i]`` of its files joined end to end when the data source has a ``slice``
(a retried line's short attempt left rows that no datum names), else row i.
When the files are on this computer they are read directly with h5py (lazily for
the frames, a frame per dask block); otherwise through the catalog.
"""

from __future__ import annotations

import dask.array as da
import h5py
import hdf5plugin  # noqa: F401 - registers the Blosc filter of the fly detector files
import numpy as np

from braggscope.core.eccentricity import EccentricityModel
from braggscope.storage.sources import CatalogArray, local_source

__all__ = ["fly_arrays", "fly_x_from_captured", "streamed_only"]


def streamed_only(descriptor: dict) -> bool:
    """Whether every field of an event descriptor comes as StreamResource/StreamDatum (``external``
    ``"STREAM:"``; a fly scan's primary stream): such a stream has no event rows."""
    keys = descriptor.get("data_keys", {}).values()
    return bool(keys) and all(str(key.get("external", "")).startswith("STREAM:") for key in keys)


def _rows(joined, rows, n: int):
    """The catalog's rows of the files' rows joined end to end."""
    if rows is None:
        if joined.shape[0] < n:
            raise ValueError(f"{joined.shape[0]} rows in the files, the run recorded {n}")
        return joined[:n]
    return joined[np.asarray(rows, dtype=np.int64)]


def _frames(array_client):
    found = local_source(array_client)
    if found is None:
        wrapped = CatalogArray(array_client)
        return da.from_array(wrapped, chunks=(1,) + wrapped.shape[1:], asarray=False, fancy=False)
    blocks = [da.from_array(data, chunks=(1,) + data.shape[1:], asarray=True, fancy=False)
              for data in (h5py.File(path, "r", swmr=found.swmr)[found.dataset] for path in found.paths)]
    if not blocks:
        return da.zeros((0, 1, 1), dtype=np.uint32)
    return _rows(da.concatenate(blocks, axis=0), found.rows, int(array_client.shape[0]))


def _values(array_client) -> np.ndarray:
    found = local_source(array_client)
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
