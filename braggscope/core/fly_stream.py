"""Read a fly-scan run's primary stream: frames and captured positions from StreamResource files.

An ``sxdm_fly`` run writes one detector file and one position-capture file per
accepted line; its primary stream's fields are consolidated by the catalog from
StreamResource/StreamDatum documents (one asset per line). When those files are on
this computer they are read directly with h5py (lazily for the frames, a line per
dask block); otherwise through the catalog. Bottom layer: imports no wing.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from braggscope.core.eccentricity import EccentricityModel

__all__ = ["fly_arrays", "fly_x_from_captured", "local_assets"]


def local_assets(array_client) -> tuple[list[Path], str] | None:
    """The files (in order) and the dataset behind a catalog array, or None when not all local."""
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
    return paths, sources[0].parameters.get("dataset") or "/entry/data/data"


def _frames(array_client, n_points: int):
    import dask.array as da
    import h5py
    import hdf5plugin  # noqa: F401  (registers the Blosc filter of the fly detector files)

    found = local_assets(array_client)
    if found is None:
        from braggscope.core.storage import _SlicedArray  # the catalog path

        wrapped = _SlicedArray(array_client)
        return da.from_array(wrapped, chunks=(1,) + wrapped.shape[1:], asarray=False, fancy=False)
    paths, dataset = found
    per_line = max(n_points // max(len(paths), 1), 1)
    blocks = []
    for path in paths:
        data = h5py.File(path, "r")[dataset]
        if data.shape[0] < per_line:
            raise ValueError(f"{path}: {data.shape[0]} frames, the run recorded {per_line} for this line")
        blocks.append(da.from_array(data, chunks=(1,) + data.shape[1:], asarray=True, fancy=False)[:per_line])
    return da.concatenate(blocks, axis=0) if blocks else da.zeros((0, 1, 1), dtype=np.uint32)


def _values(array_client) -> np.ndarray:
    import h5py

    found = local_assets(array_client)
    if found is None:
        return np.asarray(array_client.read(), dtype=float)
    paths, dataset = found
    parts = []
    for path in paths:
        with h5py.File(path, "r") as f:
            parts.append(np.asarray(f[dataset], dtype=float))
    return np.concatenate(parts) if parts else np.zeros(0)


def fly_arrays(stream, field: str, axes: tuple[str, str], n_points: int):
    """Frames (dask, ``(N, rows, cols)``) and the captured positions of ``axes`` (``{name: (N,)}``, um).

    ``N`` is the number of points the catalog holds (accepted lines x points per line).
    """
    frames = _frames(stream[field], n_points)
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
