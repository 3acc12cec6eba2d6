"""The catalog writer's worker thread, and its spool while the catalog is unreachable.

:class:`BackgroundWriter` feeds a document callback (a ``TiledWriter``) from one
thread in document order, so catalog writes never stall the RunEngine; a
catalog server that stops answering does not fail the run: the documents are
kept (in memory and a spool file) and delivered once it answers again.
"""

from __future__ import annotations

import atexit
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

__all__ = ["BackgroundWriter", "KeptByWriter", "unreachable"]


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
                try:
                    self._retry()
                except Exception as exc:  # handed to the RunEngine's thread (the worker must not die with it)
                    self._broken, self._error = True, exc
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
            if not unreachable(exc):
                raise
            self._keep(name, doc, failed=True, kept=_kept(name, exc))
            self._next_try = time.monotonic() + self.retry_s
            if not self._lost:
                self._lost = True
                sys.stderr.write(f"catalog: unreachable ({type(exc).__name__}); the scan goes on and its "
                                 f"documents are kept ({self._spool_files[-1]}) until the catalog answers again\n")
                sys.stderr.flush()
            return
        if self._lost:
            self._delivered()

    def _keep(self, name, doc, *, failed=False, kept=False):
        """Keep a document for later delivery (memory + the run's spool file).

        An event whose write failed (``failed``) is already in the ``TiledWriter``'s table
        buffer, which is only cleared after a successful write: it is written with the next
        write and is not delivered twice (it stays in the spool file). Nor is a document the
        callback said it kept (``kept``: it raised :class:`KeptByWriter`).
        """
        import json

        if not (failed and (name in _BUFFERED or kept)):
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
                if unreachable(exc):
                    if name in _BUFFERED or _kept(name, exc):  # the writer has it: written with its next write
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


class KeptByWriter(ConnectionError):
    """Raised by a callback whose write of a document failed for a lost catalog, when it keeps what the
    document carried and writes it itself once the catalog answers (``storage.catalog_writer``: a frame
    registration). :class:`BackgroundWriter` then does not deliver the document again (it would be
    taken in twice); the cause is the connection error."""


def _kept(name: str, exc: BaseException) -> bool:
    """Whether the callback kept the document ``name`` whose write raised ``exc`` (or an error raised from
    it; not one raised while handling it, which may concern another document). Never a stop: what the
    callback kept may be a frame it registers at the stop, and the stop must then come again."""
    if name == "stop":
        return False
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, KeptByWriter):
            return True
        exc, seen = exc.__cause__, seen + 1
    return False


def unreachable(exc: BaseException) -> bool:
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
