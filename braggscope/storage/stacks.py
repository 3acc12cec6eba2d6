"""Runs read back as the arrays the analysis wants: ``sxdm_stack`` and ``rocking_stack``.

``sxdm_stack(run)`` gives ``frames[n_eta, ny, nx, rows, cols]`` in raster order
(snake undone) and ``rocking_stack(run)`` ``frames[n_eta, rows, cols]``, both
lazy (dask), each event's own frame (paired by unique id,
``core.frames.FramePairing``), read straight from the detector's HDF5 file when
it is on this computer, else through the catalog.

Bottom layer: imports no wing. Re-exported by ``braggscope.storage``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from braggscope.storage.frames import UNIQUE_ID_DATASET, FramePairing
from braggscope.storage.layout import map_layout
from braggscope.core.setup import ScanSetup, SetupError

__all__ = ["sxdm_stack", "rocking_stack"]


def sxdm_stack(run, *, field: str | None = None):
    """Frames of a map run as a lazy 5-D array, raster order restored.

    A map run is an ``sxdm_map`` or a bluesky ``grid_scan`` over rocking
    angle, slow and fast piezo axes (:func:`braggscope.storage.layout.map_layout`).

    Parameters
    ----------
    run : BlueskyRun (tiled client)
    field : str, optional
        Detector field of the primary stream; default the setup's image field.

    Returns
    -------
    frames : dask.array.Array, shape (n_eta, ny, nx, rows, cols)
        Raw counts; ``frames[i, j, k]`` is eta index i, slow (y) index j and
        fast (x) index k in increasing raster order (the snake is undone).
    meta : dict
        The start document, plus ``setup`` (:class:`~braggscope.core.setup.ScanSetup`,
        :meth:`~braggscope.core.setup.ScanSetup.from_run`; None when the run
        lacks required fields, which the reduction then names), ``eta`` (n_eta,) in
        degrees, ``x`` (nx,) and ``y`` (ny,) nominal raster coordinates in
        micrometres (before the eccentricity correction), ``pix``/``piy``
        measured fast/slow positions (n_eta, ny, nx) in micrometres, and
        ``exit_status``.

    Raises
    ------
    ValueError
        If the run is not a map or is incomplete (fewer events than
        ``shape`` asks for; read ``run["primary"]`` directly then).
    """
    start = dict(run.metadata["start"])
    layout = map_layout(start)
    setup, field = _setup_and_field(run, start, field)
    n_eta, ny, nx = layout.shape
    stream = run["primary"]
    n_points = n_eta * ny * nx
    captured = None
    if start.get("plan_name") == "sxdm_fly":  # frames and positions from the run's StreamResource files
        from braggscope.storage.fly_stream import fly_arrays

        flat, captured = fly_arrays(stream, field, (layout.fast, layout.slow))
    else:
        flat = _lazy_frames(stream[field], stream=stream, field=field)
    if flat.shape[0] < n_points:
        raise ValueError(f"run {start['uid']} is incomplete: {flat.shape[0]} of {n_points} points "
                         f"(exit status {_exit_status(run)!r}); read run['primary'] directly")
    order = layout.order()
    frames = flat[order.ravel()].reshape((n_eta, ny, nx) + tuple(flat.shape[1:]))
    meta = start
    meta["setup"] = setup
    meta["eta"], meta["x"], meta["y"] = layout.eta, layout.x, layout.y
    fast, slow = layout.fast, layout.slow
    table = captured if captured is not None else stream.read([fast, slow])
    meta["pix"] = np.asarray(table[fast])[:n_points][order]
    meta["piy"] = np.asarray(table[slow])[:n_points][order]
    if captured is not None:  # a fly map's x: the captured positions, not the setpoints
        from braggscope.storage.fly_stream import fly_x_from_captured

        meta["x"] = fly_x_from_captured(meta["pix"], layout.eta, start.get("eccentricity"))
    meta["exit_status"] = _exit_status(run)
    return frames, meta


def rocking_stack(run, *, field: str | None = None):
    """Frames of a ``bcdi_rocking`` run as a lazy ``(n_eta, rows, cols)`` array.

    Parameters
    ----------
    run : BlueskyRun (tiled client)
    field : str, optional
        Detector field of the primary stream; default the setup's image field.

    Returns
    -------
    frames : dask.array.Array, shape (n_eta, rows, cols)
    meta : dict
        The start document with ``setup`` (:class:`~braggscope.core.setup.ScanSetup`, or None),
        ``eta`` (n_eta,) the measured angles in degrees and ``exit_status``.
    """
    start = dict(run.metadata["start"])
    if start.get("plan_name") != "bcdi_rocking":
        raise ValueError(f"run {start.get('uid')} is a {start.get('plan_name')!r}, not a bcdi_rocking")
    setup, field = _setup_and_field(run, start, field)
    stream = run["primary"]
    frames = _lazy_frames(stream[field], stream=stream, field=field)
    n = len(start["eta"])
    if frames.shape[0] < n:
        raise ValueError(f"run {start['uid']} is incomplete: {frames.shape[0]} of {n} angles "
                         f"(exit status {_exit_status(run)!r})")
    meta = start
    meta["setup"] = setup
    meta["eta"] = np.asarray(stream.read(["eta"])["eta"], dtype=float)[:n]
    meta["exit_status"] = _exit_status(run)
    return frames[:n], meta


def _direct_hdf5(array_client, pairing):
    """Frames straight from the detector's HDF5 file when it is on this computer, else None.

    Tiled serves an AD_HDF5 dataset as one chunk, so reading frame by frame
    through it re-reads the file; the catalog still says which file and which
    dataset, and h5py reads only what is sliced. Each event gets the frame its
    recorded unique id names (:class:`braggscope.storage.frames.FramePairing`), whatever else the file holds.
    """
    import dask.array as da
    import h5py
    from urllib.parse import unquote, urlparse

    try:
        sources = array_client.include_data_sources().data_sources()
    except Exception:  # noqa: BLE001 - remote or older servers: use the HTTP path
        return None
    if len(sources) != 1 or len(sources[0].assets) != 1 or sources[0].mimetype != "application/x-hdf5":
        return None
    uri = urlparse(sources[0].assets[0].data_uri)
    path = Path(unquote(uri.path))
    if uri.scheme != "file" or uri.netloc not in ("", "localhost") or not path.is_file():
        return None
    dataset = sources[0].parameters.get("dataset") or "/entry/data/data"
    f = h5py.File(path, "r", swmr=True)
    data = f[dataset]
    if data.ndim != 3:
        f.close()
        return None
    file_ids = np.asarray(f[UNIQUE_ID_DATASET]) if UNIQUE_ID_DATASET in f else None
    index = pairing.frame_index(data.shape[0], file_ids, path)
    frames = da.from_array(data, chunks=(1,) + data.shape[1:], asarray=True, fancy=False)
    if np.array_equal(index, np.arange(index.size)):
        return frames[:index.size]
    return frames[index]


def _served_frames(array_client):
    """The file frames the catalog serves for an array (its data source's ``slice`` list), or None."""
    try:
        served = array_client.include_data_sources().data_sources()[0].parameters.get("slice")
    except Exception:  # noqa: BLE001 - a server that does not say: the file's first frames
        return None
    return served if isinstance(served, list) and all(isinstance(i, int) for i in served) else None


def _setup_and_field(run, start, field):
    """The run's ScanSetup (None when incomplete: the frames still load, the reduction names what
    is missing) and the frames' field (``field``, else the setup's, else ``<start detector>_image``)."""
    try:
        setup = ScanSetup.from_run(run)
    except SetupError:
        setup = None
    if field is None:
        field = setup.image_field if setup is not None else f"{start.get('detector') or 'mpx1x4'}_image"
    return setup, field


def _exit_status(run) -> str | None:
    stop = run.metadata.get("stop") or {}
    return stop.get("exit_status")


class _SlicedArray:
    """Minimal array-like over a Tiled array client, fetching only what is sliced."""

    def __init__(self, client):
        self._client = client
        self.shape = tuple(client.shape)
        self.dtype = np.dtype(client.dtype.to_numpy_dtype()) if hasattr(client.dtype, "to_numpy_dtype") \
            else np.dtype(client.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        return np.asarray(self._client[key])


def _lazy_frames(array_client, *, stream=None, field=None):
    """The frames of ``stream[field]`` in event order, each event's own frame (dask, lazy).

    Raises ``ValueError`` when frames and events cannot be paired one to one
    (:class:`braggscope.storage.frames.FramePairing`).
    """
    import dask.array as da

    pairing = FramePairing(stream, field, int(array_client.shape[0]))
    direct = _direct_hdf5(array_client, pairing)
    if direct is not None:
        return direct
    pairing.check_served_in_order(_served_frames(array_client))
    wrapped = _SlicedArray(array_client)
    chunks = (1,) + wrapped.shape[1:]
    frames = da.from_array(wrapped, chunks=chunks, asarray=False, fancy=False)
    if frames.ndim > 3:  # (N, frames_per_point=1, rows, cols) from AD_HDF5 resources
        if int(np.prod(frames.shape[1:-2])) != 1:
            raise ValueError(f"expected one frame per point, got per-point shape {frames.shape[1:]}")
        frames = frames.reshape((frames.shape[0],) + frames.shape[-2:])
    return frames
