"""The catalog writer's worker thread, and what it keeps while the catalog is unreachable.

:class:`BackgroundWriter` feeds a document callback (a ``TiledWriter``) from one
thread in document order, so catalog writes never stall the RunEngine; a
catalog server that stops answering does not fail the run: the documents are
kept in memory and delivered once it answers again, and every run's documents
are in its journal (``storage.journal``) until the catalog confirms the run.
"""

from __future__ import annotations

import atexit
import errno
import queue
import sys
import threading
import time
import uuid

import httpx

from braggscope.storage.journal import RunJournal

__all__ = ["BackgroundWriter", "KeptByWriter", "NO_WAIT_KEY", "unreachable"]

#: Start-document key: ``False`` lets the run's stop document go on without waiting for the catalog.
NO_WAIT_KEY = "catalog_wait_at_stop"

CLOSED_AT_EXIT = ("the process writing this run exited while the run was open (RunEngine left paused or killed); "
                  "points recorded so far are kept")


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

    Every document is also appended, as the RunEngine emits it, to the run's
    journal in ``spool_dir`` (:class:`~braggscope.storage.journal.RunJournal`),
    removed once the catalog has stored the run's stop document.

    A catalog server that stops answering (connection refused, reset, timed
    out) does not fail the run: the documents are kept in order in memory, the
    scan goes on, one line says so on stderr, and the worker retries every
    ``retry_s`` s; once the server answers the kept documents are delivered in
    order (one line again). The stop document waits at most ``confirm_s`` for
    the catalog; a run it has not confirmed by then is said in one line naming
    its journal, which the next braggscope process that opens the catalog
    writes to it (``storage.journal.replay_journals``) if this one cannot.

    A run whose start document says ``catalog_wait_at_stop: False`` (:data:`NO_WAIT_KEY`; an operando
    campaign's tracking runs, followed at once by the checkpoint's measurement) does not wait at its
    stop: its documents are written while the next run goes on, and the next stop that waits (the
    measurement's) waits for them too; its journal keeps them until the catalog has them, and at exit
    the queue is drained (at most ``confirm_s``). A writer error in such a run fails the next run.

    Parameters
    ----------
    callback : callable
        ``callback(name, doc)``, e.g. a ``TiledWriter``.
    spool_dir : path-like, optional
        Directory of the journals (``<storage.data_dir>/spool``); None: no journal.
    retry_s : float
        Seconds between delivery attempts while the catalog is unreachable.
    confirm_s : float
        Longest wait of a stop document for the catalog.
    """

    def __init__(self, callback, *, spool_dir=None, retry_s: float = 2.0, confirm_s: float = 10.0):
        self.callback = callback
        self.retry_s = float(retry_s)
        self.confirm_s = float(confirm_s)
        self.journal = RunJournal(spool_dir) if spool_dir is not None else None
        self._spool: list[tuple[str, dict]] = []  # documents kept while the catalog is unreachable
        self._lost = False  # the catalog stopped answering and has not answered since
        self._next_try = 0.0
        self._n_delivered = 0
        self._queue = queue.Queue()
        self._error = None
        self._broken = False
        self._exiting = False
        self._open: dict[str, dict] = {}  # run uid -> {"streams": {descriptor uid: name}, "events": {name: n}}
        self._no_wait: set[str] = set()  # runs whose stop does not wait for the catalog (NO_WAIT_KEY)
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
        if self.journal is not None:
            self._record(name, doc)
        if name == "start":
            self._broken = False
            if doc.get(NO_WAIT_KEY) is False:
                self._no_wait.add(doc["uid"])
        waits = name == "stop" and doc.get("run_start") not in self._no_wait
        if name == "stop":
            self._no_wait.discard(doc.get("run_start"))
        self._raise_pending()
        if self._broken:
            return
        if name == "stop":
            self._next_try = 0.0  # a lost catalog is tried again with the stop, not retry_s later
        self._queue.put((name, doc))
        if waits:  # (a run that does not wait is written while the next one goes on)
            confirmed = self._drained(self.confirm_s) and not self._lost
            self._raise_pending()
            if not confirmed:
                self._say_unconfirmed(doc["run_start"])

    def flush(self) -> None:
        """Wait until every queued document is handled."""
        self._queue.join()

    def _drained(self, timeout: float) -> bool:
        """Wait until every queued document is handled, at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0 or not self._queue.all_tasks_done.wait(left):
                    return not self._queue.unfinished_tasks
        return True

    def _say_unconfirmed(self, uid: str) -> None:
        where = (f"its documents are kept in {self.journal.path(uid)} and are written to the catalog when it "
                 "answers, or by the next braggscope process that opens it" if self.journal is not None
                 else "its documents are kept in memory until it answers")
        sys.stderr.write(f"catalog: run {uid} not confirmed by the catalog (unreachable); {where}\n")
        sys.stderr.flush()

    def close_open_runs(self, reason: str = CLOSED_AT_EXIT) -> int:
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
        if self._thread.is_alive() and not self._lost:  # a run whose stop did not wait (NO_WAIT_KEY)
            self._drained(self.confirm_s)
        self._exiting = True
        if self._spool:
            kept = ", ".join(map(str, self.journal.kept())) if self.journal is not None else "nowhere (no journal)"
            sys.stderr.write(f"catalog: still unreachable at exit; {len(self._spool)} documents not delivered; "
                             f"the runs are kept in {kept} for the next process that opens the catalog\n")
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

    def _record(self, name, doc):
        """Journal the document; a journal that cannot be written fails the run, naming the file and why."""
        try:
            self.journal.record(name, doc)
        except OSError as exc:
            full = " (the disk is full)" if exc.errno == errno.ENOSPC else ""
            raise RuntimeError(f"catalog writer failed: its journal in {self.journal.spool_dir} could not be "
                               f"written: {exc.strerror or exc}{full}") from exc

    def _raise_pending(self):
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"catalog writer failed: {type(error).__name__}: {error}") from error

    def _work(self):
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
                where = f" (journal {self.journal.path(_run_uid(name, doc, self._open))})" \
                    if self.journal is not None and self.journal.kept() else ""
                sys.stderr.write(f"catalog: unreachable ({type(exc).__name__}); the scan goes on and its "
                                 f"documents are kept{where} until the catalog answers again\n")
                sys.stderr.flush()
            return
        self._stored(name, doc)
        if self._lost:
            self._delivered()

    def _stored(self, name, doc):
        """A document the catalog has: a stop confirms its run."""
        if name == "stop" and self.journal is not None:
            self.journal.confirmed(doc["run_start"])

    def _keep(self, name, doc, *, failed=False, kept=False):
        """Keep a document for later delivery (in memory; the journal has it too).

        An event whose write failed (``failed``) is already in the ``TiledWriter``'s table
        buffer, which is only cleared after a successful write: it is written with the next
        write and is not delivered twice. Nor is a document the callback said it kept
        (``kept``: it raised :class:`KeptByWriter`).
        """
        if not (failed and (name in _BUFFERED or kept)):
            self._spool.append((name, doc))

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
            self._stored(name, doc)
        self._delivered()

    def _delivered(self):
        sys.stderr.write(f"catalog: answering again; delivered the {self._n_delivered} documents kept while it "
                         f"was unreachable\n")
        sys.stderr.flush()
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
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _run_uid(name: str, doc: dict, open_runs: dict) -> str | None:
    """The run a document belongs to, as far as the writer's bookkeeping tells (the only open run otherwise)."""
    if name == "start":
        return doc["uid"]
    return doc.get("run_start") or next(iter(open_runs), None)
