"""Which frame of a detector file belongs to which event: pairing by unique id, and verification.

A detector file can hold frames that no event names: an exposure interrupted
by an immediate pause (Ctrl-C twice) is written by the detector, then the point
is taken again on resume; a run aborted during an exposure leaves one more
frame than events. Taking "the first n frames" then gives later points their
neighbour's frame. So every frame carries a unique id (areaDetector's
``NDArrayUniqueId``, stored per frame in the file at :data:`UNIQUE_ID_DATASET`),
every event records the id of its frame (``<detector>_unique_id``) and the
file's frame count once it was written (``<detector>_num_captured``), and the
readers pair them: each event gets the frame with its id, and anything that
cannot be paired one to one raises, never slices.

:func:`verify_frames` checks the pairing against a second, independent record:
the detector's own total of each frame (``Stats1:Total_RBV``, recorded with the
event) against the sum of the frame the reader returns.

"""

from __future__ import annotations

import dask.array as da
import h5py
import numpy as np

from braggscope.storage.sources import CatalogArray, array_source

__all__ = ["UNIQUE_ID_DATASET", "FramePairing", "event_frames", "frames_node", "paired_frames", "verify_frames"]

#: Per-frame unique ids in a detector HDF5 file (areaDetector's NDAttributes layout).
UNIQUE_ID_DATASET = "/entry/instrument/NDAttributes/NDArrayUniqueId"


class FramePairing:
    """The events of one detector field and the ids they recorded for their frames.

    Parameters
    ----------
    stream : event stream (tiled client) or None
        Where ``<detector>_unique_id`` and ``<detector>_num_captured`` are
        read; None: nothing recorded (legacy runs).
    field : str
        The image field, ``<detector>_image``.
    n_events : int
        Events the catalog holds for ``field``.
    """

    def __init__(self, stream, field: str, n_events: int):
        detector = field[: -len("_image")] if field.endswith("_image") else field
        self.field = field
        self.n_events = int(n_events)
        self.unique_ids = _column(stream, f"{detector}_unique_id")
        self.captured = _column(stream, f"{detector}_num_captured")
        for name, column in (("unique_id", self.unique_ids), ("num_captured", self.captured)):
            if column is not None and column.size != self.n_events:
                raise ValueError(f"{detector}_{name}: {column.size} values for {self.n_events} "
                                 f"events of {field}; the run's records disagree")

    def frame_index(self, n_file: int, file_ids, path) -> np.ndarray:
        """Index in the file of each event's frame, shape ``(n_events,)``.

        Parameters
        ----------
        n_file : int
            Frames in the file.
        file_ids : ndarray or None
            The file's per-frame unique ids (:data:`UNIQUE_ID_DATASET`), if stored.
        path : path-like
            The file, for error messages.

        Raises
        ------
        ValueError
            An event names a frame the file does not hold, the file repeats an
            id, or frames and events differ in number with nothing to pair them by.
        """
        if self.unique_ids is not None and file_ids is not None:
            file_ids = np.asarray(file_ids, dtype=np.int64)
            if file_ids.size != n_file:
                raise ValueError(f"{path}: {file_ids.size} unique ids for {n_file} frames "
                                 f"({UNIQUE_ID_DATASET}); the file is damaged")
            where = {int(u): i for i, u in enumerate(file_ids)}
            if len(where) != file_ids.size:
                raise ValueError(f"{path}: repeated frame unique ids in {UNIQUE_ID_DATASET}; cannot tell which "
                                 "frame an event took (file truncated or damaged, or ArrayCounter reset mid-run?)")
            missing = [j for j, u in enumerate(self.unique_ids) if int(u) not in where]
            if missing:
                shown = ", ".join(f"event {j} (id {int(self.unique_ids[j])})" for j in missing[:5])
                raise ValueError(f"{path}: {len(missing)} events name frames the file does not hold: {shown}")
            return np.array([where[int(u)] for u in self.unique_ids], dtype=np.int64)
        if self.captured is not None:
            index = self.captured.astype(np.int64) - 1
            if index.size and (index.min() < 0 or index.max() >= n_file or np.any(np.diff(index) <= 0)):
                raise ValueError(f"{path}: the events' frame numbers (num_captured - 1, {index[:5]}...) "
                                 f"do not fit the file's {n_file} frames")
            return index
        if n_file != self.n_events:
            raise ValueError(f"{path}: {n_file} frames for {self.n_events} events of {self.field} and no "
                             "per-event frame ids to pair them by; refusing to guess which frames are whose")
        return np.arange(n_file, dtype=np.int64)

    def check_served_in_order(self, served=None) -> None:
        """Raise unless the catalog serves event i's frame at row i.

        Parameters
        ----------
        served : sequence of int, optional
            The file frames the catalog serves, in order (the data source's
            ``slice``, written by ``storage.catalog_writer``); None: the file's
            first ``n_events`` frames, as Tiled serves a run written without it.
        """
        if self.captured is None:
            return
        index = self.captured.astype(np.int64) - 1
        rows = np.arange(index.size) if served is None else np.asarray(served, dtype=np.int64)[:index.size]
        if not np.array_equal(index, rows):
            first = int(np.argmax(index != rows)) if index.size == rows.size else int(min(index.size, rows.size))
            raise ValueError(
                f"{self.field}: the catalog does not serve event {first} its own frame (the detector file holds "
                "frames no event names, an interrupted exposure, and the run was written without each event's "
                "frame number); read the run where its detector file is local "
                "(detector.read_path or storage.readable_paths)")


def verify_frames(run, *, field: str = "mpx1x4_image", stats_field: str | None = None, rtol: float = 0.0) -> dict:
    """Check that every event's frame, as the readers return it, is the frame the detector took.

    The sum of each frame returned for event i (the same pairing as
    ``storage.sxdm_stack``/``rocking_stack``) is compared with the total the
    detector reported for that exposure and recorded with the event.

    Parameters
    ----------
    run : BlueskyRun (tiled client)
    field : str
        The image field of the primary stream.
    stats_field : str, optional
        The recorded per-frame total (counts). Default: ``<detector>_stats_total``
        (areaDetector ``Stats1:Total_RBV``), else ``<detector>_total``.
    rtol : float
        Relative tolerance of the comparison (0: exact; sums of integer counts are exact).

    Returns
    -------
    dict
        ``events`` (checked), ``frames_in_order`` (bool: event i is file frame i).

    Raises
    ------
    ValueError
        Naming the first events whose frame total differs from the recorded one,
        or when frames and events cannot be paired.
    """
    stream = run["primary"]
    detector = field[: -len("_image")] if field.endswith("_image") else field
    candidates = [stats_field] if stats_field else [f"{detector}_stats_total", f"{detector}_total"]
    recorded = next((c for c in (_column(stream, k) for k in candidates) if c is not None), None)
    if recorded is None:
        raise ValueError(f"run {run.metadata['start'].get('uid')}: no per-event frame total recorded "
                         f"({' or '.join(candidates)}); nothing to verify the frames against")
    frames = event_frames(run, field=field)
    totals = np.asarray(frames.sum(axis=(1, 2), dtype=np.float64).compute())
    recorded = np.asarray(recorded, dtype=np.float64)
    if totals.shape != recorded.shape:
        raise ValueError(f"{field}: {totals.size} frames read for {recorded.size} recorded totals")
    bad = np.flatnonzero(~np.isclose(totals, recorded, rtol=rtol, atol=0.0))
    if bad.size:
        shown = ", ".join(f"event {j}: frame sums to {totals[j]:.0f}, detector reported {recorded[j]:.0f}"
                          for j in bad[:5])
        raise ValueError(f"{bad.size} of {totals.size} events of {field} got a frame that is not theirs: {shown}")
    pairing = FramePairing(stream, field, totals.size)
    in_order = pairing.captured is None or np.array_equal(pairing.captured - 1, np.arange(totals.size))
    return {"events": int(totals.size), "frames_in_order": bool(in_order)}


def event_frames(run, *, field: str = "mpx1x4_image", stream: str = "primary"):
    """The frames of a run's events, in event order, each event's own frame (lazy dask array).

    Unlike ``storage.sxdm_stack``/``rocking_stack`` it accepts any run,
    complete or not (an aborted map, a failed rocking curve).

    Returns
    -------
    dask.array.Array, shape (n_events, rows, cols)

    Raises
    ------
    ValueError
        When events and frames cannot be paired one to one (:class:`FramePairing`).
    """
    events = run[stream]
    return paired_frames(frames_node(events, field, run), stream=events, field=field)


def frames_node(stream, field: str, run):
    """``stream[field]``, or a one-line ``ValueError`` saying the run's frames never reached the catalog."""
    try:
        return stream[field]
    except KeyError:
        start = run.metadata.get("start", {})
        stop = run.metadata.get("stop") or {}
        raise ValueError(f"run {start.get('uid')}: no {field} frames in the catalog for its events (exit status "
                         f"{stop.get('exit_status')!r}: {stop.get('reason') or 'no reason recorded'}); the "
                         "detector file may still hold them") from None


def paired_frames(array_client, *, stream=None, field=None):
    """The frames of ``stream[field]`` in event order, each event's own frame (dask, lazy).

    Read straight from the detector's HDF5 file when it is on this computer (Tiled serves an
    AD_HDF5 dataset as one chunk, so reading frame by frame through it re-reads the file), else
    through the catalog, which must then serve event i's frame at row i.

    Raises
    ------
    ValueError
        When frames and events cannot be paired one to one (:class:`FramePairing`).
    """
    pairing = FramePairing(stream, field, int(array_client.shape[0]))
    source = array_source(array_client)
    direct = _direct_hdf5(source, pairing)
    if direct is not None:
        return direct
    pairing.check_served_in_order(source.rows if source is not None else None)
    wrapped = CatalogArray(array_client)
    frames = da.from_array(wrapped, chunks=(1,) + wrapped.shape[1:], asarray=False, fancy=False)
    if frames.ndim > 3:  # (N, frames_per_point=1, rows, cols) from AD_HDF5 resources
        if int(np.prod(frames.shape[1:-2])) != 1:
            raise ValueError(f"expected one frame per point, got per-point shape {frames.shape[1:]}")
        frames = frames.reshape((frames.shape[0],) + frames.shape[-2:])
    return frames


def _direct_hdf5(source, pairing):
    """Each event's frame straight from the one local detector file of ``source``, else None.

    Each event gets the frame its recorded unique id names, whatever else the file holds.
    """
    if source is None or len(source.paths) != 1 or not source.local:
        return None
    path = source.paths[0]
    f = h5py.File(path, "r", swmr=True)
    data = f[source.dataset]
    if data.ndim != 3:
        f.close()
        return None
    file_ids = np.asarray(f[UNIQUE_ID_DATASET]) if UNIQUE_ID_DATASET in f else None
    index = pairing.frame_index(data.shape[0], file_ids, path)
    frames = da.from_array(data, chunks=(1,) + data.shape[1:], asarray=True, fancy=False)
    if np.array_equal(index, np.arange(index.size)):
        return frames[:index.size]
    return frames[index]


def _column(stream, key: str):
    """The event column ``key`` of ``stream`` as a 1-D array, or None when it was not recorded."""
    if stream is None:
        return None
    try:
        keys = set(stream.keys()) if hasattr(stream, "keys") else set()
        internal = stream["internal"] if "internal" in keys else None
        if internal is not None and hasattr(internal, "columns") and key not in internal.columns:
            return None
        return np.asarray(stream.read([key])[key])
    except (KeyError, ValueError):
        return None
