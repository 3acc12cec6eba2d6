"""Where runs go and how they come back: a Tiled catalog fed by ``TiledWriter``.

Two back-ends, chosen by the configuration (``[storage]``):

* embedded (default, ``storage.tiled_uri = ""``): a local SQLite catalog under
  ``storage.data_dir/catalog`` served in-process (no server, no port);
  scalars go to DuckDB, larger arrays to zarr, and detector frames stay in
  their HDF5 files, read in place from ``detector.read_path``;
* production: a Tiled server (``tiled serve catalog postgresql+asyncpg://...``)
  at ``storage.tiled_uri`` with ``storage.api_key`` or ``$TILED_API_KEY``.

Readers: ``find_runs``, ``load_run``, and the two stack builders that turn a
run into the arrays the analysis wants, ``sxdm_stack`` (eta, y, x, rows,
cols; snake undone) and ``rocking_stack`` (eta, rows, cols), both lazy (dask).

This module is the hub's bottom layer: it imports no wing (devices, plans,
simulators, analysis).
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from braggscope.core.layout import map_layout, raster_order
from braggscope.core.setup import ScanSetup, SetupError

from braggscope.core.catalog_lock import acquire_writer_lock, creation_lock
from braggscope.core.frames import UNIQUE_ID_DATASET, FramePairing, event_frames, verify_frames

__all__ = [
    "verify_frames",
    "event_frames",
    "keep_abort_reason",
    "open_catalog",
    "subscribe_writer",
    "BackgroundWriter",
    "find_runs",
    "load_run",
    "load_run_from_text",
    "sxdm_stack",
    "rocking_stack",
    "catalog_paths",
]


# -- opening -----------------------------------------------------------------
def catalog_paths(cfg) -> dict[str, Path]:
    """Paths of the embedded catalog for a configuration.

    Returns
    -------
    dict
        ``catalog_db`` (SQLite file), ``data`` (zarr arrays), ``tables``
        (DuckDB file) and ``readable`` (list of detector file directories).
    """
    data_dir = cfg.expand_path("storage.data_dir")
    root = data_dir / "catalog"
    readable = [cfg.expand_path("detector.read_path")]
    for extra in cfg.get("storage.readable_paths", []) or []:
        readable.append(Path(os.path.expandvars(os.path.expanduser(str(extra)))))
    return {"root": root, "catalog_db": root / "catalog.db", "data": root / "data",
            "tables": root / "tables.duckdb", "readable": readable}


def open_catalog(cfg, *, readable_paths=()) -> Any:
    """Open the run catalog named by a configuration (a Tiled client).

    Parameters
    ----------
    cfg : braggscope.core.config.Config
        Uses ``storage.tiled_uri`` (empty: the local catalog server of
        ``braggscope.core.catalog_server`` when ``storage.catalog_server`` is
        ``"auto"``, else the embedded catalog), ``storage.api_key``
        (or ``$TILED_API_KEY``), ``storage.data_dir`` and ``detector.read_path``.
    readable_paths : sequence of path-like
        Extra directories whose HDF5 files the embedded catalog may read in
        place (e.g. a test's detector directory).

    Returns
    -------
    tiled.client.container.Container
        Writable client; pass it to :func:`subscribe_writer` and the readers.
    """
    uri = (cfg.get("storage.tiled_uri") or "").strip()
    if uri:
        from tiled.client import from_uri

        api_key = cfg.get("storage.api_key") or os.environ.get("TILED_API_KEY") or None
        if not api_key:
            raise ValueError("storage.api_key (or $TILED_API_KEY) is required with storage.tiled_uri")
        return from_uri(uri, api_key=api_key)
    from braggscope.core import catalog_server  # the local server, started on demand

    if catalog_server.wanted(cfg):  # storage.catalog_server = "auto": shared by every process of the user
        from tiled.client import from_uri

        uri, api_key = catalog_server.ensure_server(cfg, readable_paths=readable_paths)
        client = from_uri(uri, api_key=api_key)
        client._braggscope_spool = cfg.expand_path("storage.data_dir") / "spool"  # documents kept if it is lost
        return client
    return _open_embedded(cfg, readable_paths)


def _open_embedded(cfg, readable_paths):
    from tiled.catalog import from_uri
    from tiled.client import from_context
    from tiled.client.context import Context
    from tiled.server.app import build_app

    p = catalog_paths(cfg)
    p["data"].mkdir(parents=True, exist_ok=True)
    readable = [Path(r).expanduser() for r in list(p["readable"]) + list(readable_paths)]
    for r in readable:
        r.mkdir(parents=True, exist_ok=True)
    with creation_lock(p["root"]):  # two processes creating one new catalog: one at a time
        catalog = from_uri(
            f"sqlite:///{p['catalog_db']}",
            writable_storage=[str(p["data"]), f"duckdb:///{p['tables']}"],
            readable_storage=[str(r) for r in readable],
            init_if_not_exists=True,
        )
        context = Context.from_app(build_app(catalog))
        client = from_context(context)
    client._braggscope_context = context  # keep the in-process server alive with the client
    client._braggscope_root = p["root"]  # subscribe_writer takes the catalog's writer lock
    return client


def subscribe_writer(RE, client, *, batch_size: int = 50, background: bool = True) -> int:
    """Subscribe a ``TiledWriter`` for ``client`` to a RunEngine.

    Parameters
    ----------
    RE : bluesky.RunEngine
    client : tiled client from :func:`open_catalog`
    batch_size : int
        Events buffered before a write to the catalog. The buffer is flushed
        at the end of every run, whatever its exit status (success, abort,
        fail), so only a crash of this Python process can lose the last
        ``batch_size`` points' catalog entries (their frames stay in the
        detector files). Each write costs ~75 ms with the embedded catalog
        on top of ~2 ms per event: ~50 ms per point when writing every point
        (1), ~3.5 ms at 50 (docs/storage.md, "The writer").
    background : bool
        Write from a worker thread (default) so catalog writes never stall
        the RunEngine between points; the run's ``stop`` document waits until
        everything before it is written, so the catalog is complete when the
        plan returns. False: write in the RunEngine's thread.

    Returns
    -------
    int
        The subscription token (``RE.unsubscribe(token)``).

    Raises
    ------
    braggscope.core.catalog_lock.CatalogBusyError
        Another live process writes to the same embedded catalog (one writer
        per catalog; the lock is released when this process exits).

    Notes
    -----
    Also makes ``RE.abort("why")`` record its reason in the stop document
    (:func:`keep_abort_reason`).
    """
    from bluesky_tiled_plugins import TiledWriter

    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    root = getattr(client, "_braggscope_root", None)
    if root is not None:
        acquire_writer_lock(root)
    keep_abort_reason(RE)
    writer = TiledWriter(client, batch_size=int(batch_size), patches={"resource": _one_frame_per_point})
    if not background:
        return RE.subscribe(writer)
    return RE.subscribe(BackgroundWriter(writer, spool_dir=getattr(client, "_braggscope_spool", None)))


def keep_abort_reason(RE) -> None:
    """Make the stop document of an aborted run carry the reason given to ``RE.abort(reason)``.

    bluesky's ``run_wrapper`` closes the run itself when the abort reaches the
    plan (``RE.abort`` while paused, the usual case after Ctrl-C) and sends
    ``close_run`` with the exit status but no reason, so the stop document said
    ``reason: ''``. The RunEngine's ``close_run`` command is wrapped here to
    fill in the reason the RunEngine holds when the plan gave none. Idempotent.
    """
    if getattr(RE, "_braggscope_keeps_reason", False):
        return
    original = RE._command_registry["close_run"]

    async def close_run(msg):
        if not msg.kwargs.get("reason") and getattr(RE, "_reason", ""):
            msg = msg._replace(kwargs={**msg.kwargs, "reason": RE._reason})
        return await original(msg)

    RE.register_command("close_run", close_run)
    RE._braggscope_keeps_reason = True


class BackgroundWriter:
    """Feed a document callback from one worker thread, in document order.

    ``__call__`` only queues the document, except for ``stop``, which waits
    until the worker has handled everything queued before it. The first
    exception of the wrapped callback is raised to the RunEngine with the
    next document (the run then fails, as it would with a direct callback);
    the documents of that run after it are dropped.

    A run still open when the process exits (a RunEngine left paused, then
    the session quit) gets a stop document (``exit_status = "abort"``, the
    reason saying so, the events counted) from :meth:`close_open_runs`, run
    at interpreter exit, so the catalog never keeps a run without an end.

    A catalog server that stops answering (connection refused, reset, timed
    out) does not fail the run: the documents are kept in order, in memory and
    appended to a spool file (``spool_dir/<run uid>.jsonl``), the scan goes
    on, one line says so on stderr, and the worker retries every
    ``retry_s`` s; once the server answers the kept documents are delivered in
    order (one line again) and the spool file is removed. A spool file left by
    a process that ended before the catalog returned still holds every
    document of the run.

    Parameters
    ----------
    callback : callable
        ``callback(name, doc)``, e.g. a ``TiledWriter``.
    spool_dir : path-like, optional
        Directory of the spool files (default: the system's temporary directory).
    retry_s : float
        Seconds between delivery attempts while the catalog is unreachable.
    """

    def __init__(self, callback, *, spool_dir=None, retry_s: float = 2.0):
        import queue
        import threading

        self.callback = callback
        self.retry_s = float(retry_s)
        self._spool_dir = Path(spool_dir) if spool_dir is not None else None
        self._spool: list[tuple[str, dict]] = []  # documents kept while the catalog is unreachable
        self._spool_files: list[Path] = []
        self._current_run = None
        self._lost = False  # the catalog stopped answering and has not answered since
        self._next_try = 0.0
        self._n_delivered = 0
        self._queue = queue.Queue()
        self._error = None
        self._broken = False
        self._exiting = False
        self._open: dict[str, dict] = {}  # run uid -> {"streams": {descriptor uid: name}, "events": {name: n}}
        self._thread = threading.Thread(target=self._work, name="braggscope-catalog-writer", daemon=True)
        self._thread.start()
        # at interpreter exit, before the in-process Tiled server's threads are stopped (those use
        # threading's exit hooks, which run before atexit's)
        register = getattr(threading, "_register_atexit", atexit.register)
        register(self.close_open_runs)

    def __call__(self, name, doc):
        if self._exiting or not self._thread.is_alive():
            return  # closed at exit already (a RunEngine finalised later sends its own stop: dropped)
        self._track(name, doc)
        if name == "start":
            self._broken = False
        self._raise_pending()
        if self._broken:
            return
        self._queue.put((name, doc))
        if name == "stop":
            self._queue.join()
            self._raise_pending()

    def flush(self) -> None:
        """Wait until every queued document is handled."""
        self._queue.join()

    def close_open_runs(self, reason: str = "the process writing this run exited while the run was open "
                                            "(RunEngine left paused or killed); points recorded so far are kept") -> int:
        """Write a stop document (``exit_status = "abort"``) for every run started and not stopped.

        Returns the number of runs closed. Called at interpreter exit.
        """
        closed = 0
        for uid, run in list(self._open.items()):
            stop = {"uid": str(uuid.uuid4()), "run_start": uid, "time": time.time(), "exit_status": "abort",
                    "reason": reason, "num_events": dict(run["events"])}
            try:
                self("stop", stop)
                closed += 1
            except Exception:  # noqa: BLE001 - at exit: nothing more can be done
                self._open.pop(uid, None)
        self._exiting = True
        if self._spool:
            sys.stderr.write(f"catalog: still unreachable at exit; {len(self._spool)} documents not delivered "
                             f"are kept in {', '.join(map(str, self._spool_files))}\n")
        return closed

    def _track(self, name, doc):
        """Keep which runs are open and how many events each stream has (for :meth:`close_open_runs`)."""
        if name == "start":
            self._open[doc["uid"]] = {"streams": {}, "events": {}}
        elif name == "descriptor" and doc.get("run_start") in self._open:
            run = self._open[doc["run_start"]]
            run["streams"][doc["uid"]] = doc.get("name", "primary")
            run["events"].setdefault(doc.get("name", "primary"), 0)
        elif name in ("event", "event_page"):
            n = len(doc["seq_num"]) if name == "event_page" else 1
            for run in self._open.values():
                stream = run["streams"].get(doc["descriptor"])
                if stream is not None:
                    run["events"][stream] += n
                    break
        elif name == "stop":
            self._open.pop(doc.get("run_start"), None)

    def _raise_pending(self):
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"catalog writer failed: {type(error).__name__}: {error}") from error

    def _work(self):
        import queue

        while True:
            try:
                name, doc = self._queue.get(timeout=self.retry_s if self._lost else None)
            except queue.Empty:
                self._retry()
                continue
            try:
                if name == "start":
                    self._current_run = doc.get("uid")
                if self._broken:
                    pass
                elif self._lost:  # kept; a delivery is tried at most every retry_s (each try may be slow)
                    self._keep(name, doc)
                    if time.monotonic() >= self._next_try:
                        self._retry()
                else:
                    self._send(name, doc)
            except Exception as exc:  # handed to the RunEngine's thread
                self._broken, self._error = True, exc
            finally:
                self._queue.task_done()

    def _send(self, name, doc):
        try:
            self.callback(name, doc)
        except Exception as exc:
            if not _unreachable(exc):
                raise
            self._keep(name, doc, failed=True)
            self._next_try = time.monotonic() + self.retry_s
            if not self._lost:
                self._lost = True
                sys.stderr.write(f"catalog: unreachable ({type(exc).__name__}); the scan goes on and its "
                                 f"documents are kept ({self._spool_files[-1]}) until the catalog answers again\n")
                sys.stderr.flush()
            return
        if self._lost:
            self._delivered()

    def _keep(self, name, doc, *, failed=False):
        """Keep a document for later delivery (memory + the run's spool file).

        An event whose write failed (``failed``) is already in the ``TiledWriter``'s table
        buffer, which is only cleared after a successful write: it is written with the next
        write and is not delivered twice (it stays in the spool file).
        """
        import json

        if not (failed and name in _BUFFERED):
            self._spool.append((name, doc))
        folder = self._spool_dir or Path(tempfile.gettempdir())
        path = folder / f"braggscope-spool-{self._current_run or 'run'}.jsonl"
        if not self._spool_files or self._spool_files[-1] != path:
            folder.mkdir(parents=True, exist_ok=True)
            self._spool_files.append(path)
        with open(path, "a") as handle:
            handle.write(json.dumps([name, doc], default=_json_default) + "\n")

    def _retry(self):
        self._next_try = time.monotonic() + self.retry_s
        if self._spool:  # nothing kept yet (only a buffered event failed): the next document tries
            self._deliver_spool()

    def _deliver_spool(self):
        """Deliver the kept documents in order; stop at the first one the catalog still refuses."""
        while self._spool:
            name, doc = self._spool[0]
            try:
                self.callback(name, doc)
            except Exception as exc:
                if _unreachable(exc):
                    if name in _BUFFERED:  # buffered by the writer: written with the next write
                        self._spool.pop(0)
                    return
                self._spool.clear()
                raise
            self._spool.pop(0)
            self._n_delivered += 1
        self._delivered()

    def _delivered(self):
        for path in self._spool_files:
            path.unlink(missing_ok=True)
        sys.stderr.write(f"catalog: answering again; delivered the {self._n_delivered} documents kept while it "
                         f"was unreachable\n")
        sys.stderr.flush()
        self._spool_files.clear()
        self._lost, self._n_delivered = False, 0


#: Documents the TiledWriter buffers before a failed write and keeps buffered (never re-sent).
_BUFFERED = ("event", "event_page")


def _unreachable(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) is a lost connection to the catalog server."""
    import httpx

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _one_frame_per_point(doc: dict) -> dict:
    """Drop ``frame_per_point == 1`` from AD_HDF5 resources.

    With it the catalog advertises ``(N, 1, rows, cols)``, a different rank
    from the file's ``(N, rows, cols)``, and Tiled then refuses to read a run
    whose detector file holds one frame more than the events (an abort or a
    failure between the detector's write and the event). Without it the
    structure is ``(N, rows, cols)`` and the surplus frame is ignored.
    """
    kwargs = doc.get("resource_kwargs") or {}
    if kwargs.get("frame_per_point") == 1:
        doc = dict(doc, resource_kwargs={k: v for k, v in kwargs.items() if k != "frame_per_point"})
    return doc


# -- finding -----------------------------------------------------------------
def find_runs(client, **md) -> list:
    """Runs whose start document matches every ``key=value`` given, newest first.

    >>> find_runs(client, plan_name="sxdm_map", sample="nmc622")  # doctest: +SKIP
    """
    from tiled.queries import Key

    results = client
    for key, value in md.items():
        results = results.search(Key(f"start.{key}") == value)
    runs = list(results.values())
    runs.sort(key=lambda r: r.metadata["start"].get("time", 0.0), reverse=True)
    return runs


def load_run(client, scan_id_or_uid):
    """One run by ``scan_id`` (int: the newest run with that id; -1 the latest run, -2 the one
    before ...) or uid (str, or a unique prefix)."""
    from tiled.queries import Key

    if isinstance(scan_id_or_uid, (int, np.integer)) and not isinstance(scan_id_or_uid, bool) \
            and scan_id_or_uid < 0:
        runs = find_runs(client)
        if len(runs) < -scan_id_or_uid:
            raise KeyError(f"only {len(runs)} runs in the catalog, asked for {scan_id_or_uid}")
        return runs[-int(scan_id_or_uid) - 1]
    if isinstance(scan_id_or_uid, (int, np.integer)) and not isinstance(scan_id_or_uid, bool):
        found = client.search(Key("start.scan_id") == int(scan_id_or_uid))
        runs = sorted(found.values(), key=lambda r: r.metadata["start"].get("time", 0.0))
        if not runs:
            raise KeyError(f"no run with scan_id {scan_id_or_uid}")
        return runs[-1]
    if not isinstance(scan_id_or_uid, str) or not scan_id_or_uid:
        raise TypeError(f"scan_id_or_uid must be an int scan_id or a uid string, got {scan_id_or_uid!r}")
    try:
        return client[scan_id_or_uid]
    except KeyError:
        pass
    matches = [k for k in client.keys() if k.startswith(scan_id_or_uid)]
    if len(matches) != 1:
        raise KeyError(f"uid {scan_id_or_uid!r} matches {len(matches)} runs")
    return client[matches[0]]


def load_run_from_text(client, text: str):
    """A run named on a command line: a scan id (``"42"``; ``"-1"`` the latest run) or a uid prefix.

    An all-digit uid prefix (about 2 % of 8-character prefixes) is tried as a uid when no run
    has that scan id.
    """
    text = str(text).strip()
    if text.lstrip("-").isdigit():
        try:
            return load_run(client, int(text))
        except KeyError:
            if text.startswith("-"):
                raise
    return load_run(client, text)


# -- stacks ------------------------------------------------------------------
def sxdm_stack(run, *, field: str | None = None):
    """Frames of a map run as a lazy 5-D array, raster order restored.

    A map run is an ``sxdm_map`` or a bluesky ``grid_scan`` over rocking
    angle, slow and fast piezo axes (:func:`braggscope.core.layout.map_layout`).

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
    if start.get("plan_name") == "sxdm_fly":  # frames and positions from StreamResource files, one per line
        from braggscope.core.fly_stream import fly_arrays

        flat, captured = fly_arrays(stream, field, (layout.fast, layout.slow), n_points)
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
        from braggscope.core.fly_stream import fly_x_from_captured

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
    recorded unique id names (:class:`braggscope.core.frames.FramePairing`), whatever else the file holds.
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
    (:class:`braggscope.core.frames.FramePairing`).
    """
    import dask.array as da

    pairing = FramePairing(stream, field, int(array_client.shape[0]))
    direct = _direct_hdf5(array_client, pairing)
    if direct is not None:
        return direct
    pairing.check_served_in_order()
    wrapped = _SlicedArray(array_client)
    chunks = (1,) + wrapped.shape[1:]
    frames = da.from_array(wrapped, chunks=chunks, asarray=False, fancy=False)
    if frames.ndim > 3:  # (N, frames_per_point=1, rows, cols) from AD_HDF5 resources
        if int(np.prod(frames.shape[1:-2])) != 1:
            raise ValueError(f"expected one frame per point, got per-point shape {frames.shape[1:]}")
        frames = frames.reshape((frames.shape[0],) + frames.shape[-2:])
    return frames
