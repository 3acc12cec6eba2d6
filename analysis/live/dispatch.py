"""Run a live callback off the RunEngine thread.

:class:`LiveMapDispatcher` is what you ``RE.subscribe``: its ``__call__`` only
puts ``(name, doc)`` on a bounded queue and returns (microseconds); a worker
thread feeds the documents to the wrapped callback (e.g.
:class:`braggscope.analysis.live.callback.LiveSXDM`), calls its ``flush()`` whenever the
queue runs dry (so batches grow when frames arrive faster than they are
reduced) and then the ``on_update`` hooks (e.g. a
:class:`braggscope.analysis.live.plot.LiveMapPlot`). Nothing is dropped: when
the queue is full, ``__call__`` waits for room (back-pressure) rather than
losing a frame. Errors in the worker never reach the RunEngine; they are
logged, kept in :attr:`errors` and raised by :meth:`wait`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

__all__ = ["LiveMapDispatcher"]

logger = logging.getLogger(__name__)
_CLOSE = object()


class LiveMapDispatcher:
    """Queue documents to a worker thread running a (slow) callback.

    Parameters
    ----------
    callback : callable ``(name, doc)``
        The consumer; if it has ``flush()`` it is called when the queue is empty.
    maxsize : int
        Queue bound (documents). With 512x512 uint32 frames inline, 256
        documents hold at most ~256 MiB.
    on_update : callable or list of callables, optional
        Called without arguments in the worker after each drained batch and
        after every stop document (e.g. ``LiveMapPlot.update``).
    name : str
        Worker thread name.

    Examples
    --------
    >>> live = LiveSXDM(batch_size=32)                        # doctest: +SKIP
    >>> dispatcher = LiveMapDispatcher(live)                  # doctest: +SKIP
    >>> RE.subscribe(dispatcher); RE(plan)                    # doctest: +SKIP
    >>> dispatcher.wait(); live.maps()                        # doctest: +SKIP
    """

    def __init__(self, callback, *, maxsize=256, on_update=None, name="live-map-worker"):
        if not callable(callback):
            raise TypeError(f"callback must be callable (name, doc), got {callback!r}")
        if int(maxsize) < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize!r}")
        self.callback = callback
        if on_update is None:
            on_update = []
        self.on_update = list(on_update) if isinstance(on_update, (list, tuple)) else [on_update]
        self.errors = []
        self.documents_processed = 0
        self._queue = queue.Queue(maxsize=int(maxsize))
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    def __call__(self, name, doc):
        """RunEngine side: enqueue and return (blocks only while the queue is full)."""
        if self._closed:
            raise RuntimeError("LiveMapDispatcher is closed")
        self._queue.put((name, doc))

    # -- worker ------------------------------------------------------------
    def _work(self):
        while True:
            item = self._queue.get()
            if item is _CLOSE:
                self._queue.task_done()
                return
            batch = [item]
            # drain what is already waiting, then reduce the batch in one go
            closing = False
            while len(batch) < self._queue.maxsize:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _CLOSE:
                    closing = True
                    break
                batch.append(item)
            for item in batch:
                self._handle(item)
            self._finish_batch()
            # mark done only after the flush: wait() then sees finished maps
            for _ in range(len(batch) + closing):
                self._queue.task_done()
            if closing:
                return

    def _handle(self, item):
        name, doc = item
        try:
            self.callback(name, doc)
        except Exception as exc:  # keep the RunEngine alive; report later
            logger.exception("live callback failed on %r document", name)
            self.errors.append(exc)
        self.documents_processed += 1

    def _finish_batch(self):
        flush = getattr(self.callback, "flush", None)
        try:
            if flush is not None:
                flush()
            for hook in self.on_update:
                hook()
        except Exception as exc:
            logger.exception("live flush/update failed")
            self.errors.append(exc)

    # -- control -----------------------------------------------------------
    def pending(self):
        """Documents queued or being processed."""
        return self._queue.unfinished_tasks

    def wait(self, timeout=60.0):
        """Block until every queued document is processed; raise the first worker error.

        Raises ``TimeoutError`` if the worker is still busy after ``timeout`` s.
        """
        deadline = time.monotonic() + float(timeout)
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._queue.unfinished_tasks} documents still queued "
                                   f"after {timeout} s")
            time.sleep(0.002)
        if self.errors:
            raise RuntimeError(f"live callback failed: {self.errors[0]!r}") from self.errors[0]

    def close(self, timeout=60.0):
        """Process what is queued, stop the worker thread and join it."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_CLOSE)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"live worker did not stop within {timeout} s")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
