"""The bus publisher: every run's documents published on NATS JetStream, never blocking the RunEngine.

:class:`DocumentPublisher` is what the acquisition ``RE.subscribe``-s. Its
``__call__`` serialises the document (msgpack, numpy converted) and appends it
to a bounded in-memory queue; it never waits for the network. One thread owns
an asyncio loop and a NATS connection and publishes the queue in order, one
JetStream message per batch of documents (a batch never spans two runs), each
acknowledged by the server before the next is sent.

Guarantees:

* **Order and completeness.** Every message carries the run uid and the index
  of its first document in the run (``Nats-Msg-Id = <run uid>:<index>``, so a
  re-sent message is dropped by the server's de-duplication window) and the
  stream sequence of the run's start document (a consumer restarting mid-run
  replays the run from there: :func:`braggscope.app.bus.format.run_messages`).
* **Backpressure.** ``queue_size`` documents fit in memory. Past
  ``high_water`` (a fraction of it) a one-line warning is logged once and
  :attr:`DocumentPublisher.stats` counts the documents queued over the mark.
* **Broker outage.** The worker reconnects for ever (backoff up to 2 s).
  When the memory queue is full, documents go to a spill file in ``spill_dir``
  (appended, in order); the worker publishes it after the memory queue, so the
  order is kept. Past ``spill_max_mb`` the next document raises
  :class:`BusOverflowError` in the RunEngine: the run fails loudly. A spill
  left at :meth:`DocumentPublisher.close` is published by the next publisher
  on the same ``spill_dir`` and stream.

Frames are not on the bus: events carry datum ids and the resource documents
name the detector's HDF5 files.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
import time
from collections import deque
from pathlib import Path

import msgpack

from braggscope.app.bus.format import (
    HEADER_INDEX,
    HEADER_PART,
    HEADER_RUN,
    HEADER_START_SEQ,
    encode_document,
    ensure_stream,
)

__all__ = ["DocumentPublisher", "BusOverflowError"]

logger = logging.getLogger("braggscope.app.bus")  # the name users filter on (the module was split)

_LEN = struct.Struct("<I")
_SPILL_NAME = "bus-spill-{stream}.bin"
_QUARANTINE_NAME = "bus-quarantine-{stream}-{stamp}.bin"
#: Bytes of a message kept for its headers and the protocol below the broker's ``max_payload``.
PAYLOAD_MARGIN = 4096


class BusOverflowError(RuntimeError):
    """The bus spill file reached its limit: the run must stop (nothing is dropped silently)."""


class DocumentPublisher:
    """Publish bluesky documents on a NATS JetStream stream without blocking the caller.

    Parameters
    ----------
    url : str
        NATS server, e.g. ``"nats://127.0.0.1:4222"``.
    stream, subject : str
        JetStream stream (created with file storage if absent) and the subject
        its messages are published on.
    queue_size : int
        Documents held in memory before spilling to disk.
    high_water : float
        Fraction of ``queue_size`` above which backpressure is reported.
    spill_dir : path-like
        Directory of the spill file (``bus-spill-<stream>.bin``).
    spill_max_mb : float
        Spill file limit (MiB); past it the next document raises :class:`BusOverflowError`.
    max_batch : int
        Most documents in one bus message.
    publish_timeout_s : float
        Wait for the server's acknowledgement of one message before re-sending it.
    linger_s : float
        After an idle spell, wait this long (s) for more documents before
        publishing, and start at most one message per ``linger_s`` while
        documents keep coming, so that the documents of several points leave
        as one message. The publishing thread's CPU time (which the RunEngine's thread
        gives up through the GIL) is mostly per message (~0.7 ms): on a quiet
        2-core machine at ~150 points/s, one message per point cost +12 % of
        the process's CPU per point, 20 ms +3.7 to +7.6 %, 40 ms (about seven
        points a message) +2.0 to +3.8 %; the documents wait up to 40 ms longer
        (fly frames' latency median 58 ms, p99 86 ms).

    Attributes
    ----------
    stats : dict
        ``documents`` (queued), ``published`` (acknowledged), ``messages``,
        ``over_high_water`` (documents queued above the mark), ``spilled``,
        ``max_depth``, ``reconnects``, ``resent`` (failed attempts),
        ``call_s_max`` and ``call_s_total`` (seconds spent in ``__call__``,
        i.e. the RunEngine's cost), ``call_cpu_s_total`` (the CPU time of
        the calling thread in ``__call__``: the same cost without the time
        the thread waited for a core), ``worker_cpu_s`` (the CPU time of the
        publishing thread so far).
    connected : bool
        Whether the last publish attempt found the broker.

    Examples
    --------
    >>> pub = DocumentPublisher("nats://127.0.0.1:4222", spill_dir="/tmp/bus")  # doctest: +SKIP
    >>> RE.subscribe(pub); RE(plan); pub.close()                                 # doctest: +SKIP
    """

    def __init__(self, url, *, stream="BRAGGSCOPE", subject="braggscope.documents", queue_size=10000,
                 high_water=0.5, spill_dir, spill_max_mb=2048.0, max_batch=256, publish_timeout_s=2.0,
                 linger_s=0.04):
        if int(queue_size) < 1 or not 0.0 < float(high_water) <= 1.0:
            raise ValueError(f"queue_size must be >= 1 and 0 < high_water <= 1, got {queue_size!r}, {high_water!r}")
        self.url, self.stream, self.subject = str(url), str(stream), str(subject)
        self.queue_size, self.max_batch = int(queue_size), int(max_batch)
        self.high_mark = max(1, int(float(high_water) * self.queue_size))
        self.spill_path = Path(spill_dir).expanduser() / _SPILL_NAME.format(stream=self.stream)
        self.spill_max_bytes = int(float(spill_max_mb) * 2**20)
        self.publish_timeout_s = float(publish_timeout_s)
        self.linger_s = float(linger_s)
        self.stats = {"documents": 0, "published": 0, "messages": 0, "over_high_water": 0, "spilled": 0,
                      "max_depth": 0, "reconnects": 0, "resent": 0, "call_s_max": 0.0, "call_s_total": 0.0,
                      "call_cpu_s_total": 0.0, "worker_cpu_s": 0.0, "split": 0, "quarantined": 0}
        self._memory: deque = deque()
        self._lock = threading.Lock()
        self._warned = False
        self._run = None  # (run uid, next index)
        self._spill_w = self._spill_r = None
        self._spill_unread = 0  # records written but not yet read back
        self._flight, self._in_flight = [], 0  # the batch in the worker's hands
        self._start_seq = {}
        self._closing = False
        self.connected = False
        self.error = None
        self._outage_since = None  # when the broker stopped answering (None: it answers)
        self._recovered_runs = set()  # runs whose documents an earlier session left in the spill
        self._nc = None  # the worker's NATS connection
        self._wake = None
        self._loop = asyncio.new_event_loop()
        self._recover_spill()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._work(),),
                                        name="bus-publisher", daemon=True)
        self._thread.start()

    # -- RunEngine side ------------------------------------------------------
    def __call__(self, name, doc):
        """Queue one document; returns in microseconds whatever the broker does."""
        t0, c0 = time.perf_counter(), time.thread_time()
        if self._closing:
            raise RuntimeError("DocumentPublisher is closed")
        if self.error is not None:
            raise RuntimeError(f"bus publisher failed: {self.error!r}") from self.error
        if name == "start":
            self._run = [doc["uid"], 0]
        elif self._run is None:
            raise RuntimeError(f"bus publisher got a {name!r} document before any start document")
        run_uid, index = self._run
        self._run[1] += 1
        # the time travels with the document: a consumer measures its latency from here (stream datums
        # carry no time of their own)
        record = (name, run_uid, index, encode_document(doc), time.time())
        with self._lock:
            depth = len(self._memory) + self._spill_unread
            if self._spill_unread == 0 and len(self._memory) < self.queue_size:
                self._memory.append(record)
            else:
                self._spill(record)
            depth += 1
            self.stats["documents"] += 1
            self.stats["max_depth"] = max(self.stats["max_depth"], depth)
            if depth > self.high_mark:
                self.stats["over_high_water"] += 1
                if not self._warned:
                    self._warned = True
                    logger.warning("bus: %d documents queued for %s (high-water mark %d); acquisition goes on, "
                                   "the queue spills to %s past %d", depth, self.url, self.high_mark,
                                   self.spill_path, self.queue_size)
            elif depth <= self.high_mark // 2:
                self._warned = False
        wake = self._wake
        if wake is not None and not wake.is_set():
            self._loop.call_soon_threadsafe(wake.set)
        dt = time.perf_counter() - t0
        self.stats["call_s_max"] = max(self.stats["call_s_max"], dt)
        self.stats["call_s_total"] += dt
        self.stats["call_cpu_s_total"] += time.thread_time() - c0

    def _spill(self, record):
        data = msgpack.packb(record, use_bin_type=True)
        if self._spill_w is None:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            self._spill_w = open(self.spill_path, "ab")
        if self._spill_w.tell() + len(data) > self.spill_max_bytes:
            raise BusOverflowError(f"bus spill file {self.spill_path} reached bus.spill_max_mb "
                                   f"({self.spill_max_bytes / 2**20:.0f} MiB) while {self.url} is unreachable: "
                                   "the run stops; start the broker or raise bus.spill_max_mb")
        self._spill_w.write(_LEN.pack(len(data)) + data)
        self._spill_w.flush()
        self._spill_unread += 1
        self.stats["spilled"] += 1

    # -- state -----------------------------------------------------------------
    def pending(self) -> int:
        """Documents not yet acknowledged by the broker (memory + spill)."""
        with self._lock:
            return len(self._memory) + self._spill_unread + self._in_flight

    def wait(self, timeout=30.0) -> bool:
        """Block until everything queued is acknowledged; False on timeout."""
        deadline = time.monotonic() + float(timeout)
        while self.pending():
            if self.error is not None:
                raise RuntimeError(f"bus publisher failed: {self.error!r}") from self.error
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout=30.0) -> int:
        """Publish what is queued (up to ``timeout`` s), then stop.

        Returns the number of documents left unpublished; they are kept in the
        spill file (path logged) and published by the next publisher.
        """
        if self._closing:
            return 0
        if self.error is None:  # a failed publisher publishes nothing more: what is queued is kept
            self.wait(timeout)
        self._closing = True
        if self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)
        self._thread.join(timeout=10.0)
        if not self._thread.is_alive():
            self._loop.close()
        left = self._save_leftovers()
        if left:
            logger.warning("bus: %d documents not published to %s are kept in %s for the next session",
                           left, self.url, self.spill_path)
        return left

    # -- worker ------------------------------------------------------------------
    async def _work(self):
        try:
            await self._publish_queue()
        except BaseException as exc:  # a bug: reported to the RunEngine with the next document
            self.error = exc
            logger.exception("bus publisher stopped")

    async def _publish_queue(self):
        self._wake = asyncio.Event()
        try:
            await self._publish_loop()
        finally:  # also after a bug: the client's tasks end with this loop
            if self._nc is not None:
                try:
                    await asyncio.wait_for(self._nc.close(), 5.0)
                except Exception:  # noqa: BLE001 - closing a dead connection
                    pass

    async def _publish_loop(self):
        nc = None
        need_stream = False
        while True:
            batch = self._next_batch()
            if batch is None:
                if self._closing:
                    break
                self._wake.clear()
                if self._peek_empty():
                    try:
                        await asyncio.wait_for(self._wake.wait(), 0.25)
                    except TimeoutError:
                        continue
                    # let the point's other documents join: one message, one wake-up per point
                    await asyncio.sleep(self.linger_s)
                continue
            started = time.monotonic()
            while not self._closing:
                try:
                    if nc is None or not nc.is_connected:
                        nc = self._nc = await self._connect(nc)
                    if need_stream:  # a broker restarted without its store
                        await ensure_stream(nc.jetstream(), self.stream, self.subject)
                        need_stream = False
                    await self._publish(nc.jetstream(), batch)
                    self._answers()
                    break
                except Exception as exc:  # broker down, timeout: keep the batch, retry
                    if not _transient(exc) and batch[0][1] in self._recovered_runs:
                        self._quarantine(batch, exc)  # left by an earlier session: never replayed for ever
                        break
                    if not _transient(exc):
                        raise  # our own bug: _work reports it to the RunEngine with the next document
                    self.connected = bool(nc and nc.is_connected)
                    need_stream = "NoStreamResponse" in type(exc).__name__ or "stream not found" in str(exc)
                    self.stats["resent"] += 1
                    self._unanswered(exc)
                    await asyncio.sleep(0.2)
            else:
                self._unread(batch)
                break
            self._done(batch)
            self.stats["worker_cpu_s"] = time.thread_time()  # this thread's CPU time
            # at most one message per linger_s while documents keep coming: a busy stream otherwise left
            # one point per message (the next batch is whatever arrived during the last acknowledgement)
            rest = self.linger_s - (time.monotonic() - started)
            if rest > 0 and not self._closing:
                await asyncio.sleep(rest)

    async def _connect(self, old):
        import nats  # slow to import, and the session loads this module whether or not a bus is configured

        if old is not None and not old.is_closed:
            await asyncio.sleep(0.2)  # the client reconnects by itself
            if old.is_connected:
                return old
            raise ConnectionError("reconnecting")
        wait = 0.1
        while not self._closing:
            try:
                # the client retries a first connection for ever: bounded here to notice a close
                nc = await asyncio.wait_for(nats.connect(
                    self.url, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                    name="braggscope-publisher", reconnected_cb=self._reconnected, error_cb=self._quiet), 5.0)
                await ensure_stream(nc.jetstream(), self.stream, self.subject)
                self.connected = True
                return nc
            except Exception as exc:  # noqa: BLE001 - unreachable broker: buffer and retry
                self._unanswered(exc)
                await asyncio.sleep(wait)
                wait = min(2 * wait, 2.0)
        raise ConnectionError("closing")

    def _unanswered(self, exc) -> None:
        """A failed attempt: the first of an outage is said in one line, the others at debug level."""
        logger.debug("bus: %s did not answer (%r); retrying", self.url, exc)
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logger.warning("bus: %s does not answer (%s); acquisition goes on, documents are kept and "
                           "published when it answers", self.url, type(exc).__name__)

    def _answers(self) -> None:
        if self._outage_since is not None:
            logger.warning("bus: %s answers again after %.1f s; the kept documents are being published",
                           self.url, time.monotonic() - self._outage_since)
            self._outage_since = None

    async def _reconnected(self):
        self.stats["reconnects"] += 1

    async def _quiet(self, exc):
        logger.debug("bus connection: %r", exc)

    async def _publish(self, js, batch):
        """One message for the batch; a batch over the broker's ``max_payload`` goes a document at a time,
        and a document over it in parts (:data:`HEADER_PART`)."""
        payload = msgpack.packb([(r[0], r[3], r[4]) for r in batch], use_bin_type=True)
        room = self._nc.max_payload - PAYLOAD_MARGIN if self._nc is not None else len(payload)
        if len(payload) > room and len(batch) > 1:
            for record in batch:
                await self._publish(js, [record])
            return
        name, run_uid, index = batch[0][:3]
        headers = {"Nats-Msg-Id": f"{run_uid}:{index}", HEADER_RUN: run_uid, HEADER_INDEX: str(index)}
        if name != "start" and run_uid in self._start_seq:  # unknown only for a run recovered from a spill
            headers[HEADER_START_SEQ] = str(self._start_seq[run_uid])
        parts = [payload[i:i + room] for i in range(0, len(payload), room)] if len(payload) > room else [payload]
        if len(parts) > 1:
            self.stats["split"] += 1
        for k, part in enumerate(parts):
            if len(parts) > 1:
                headers = {**headers, "Nats-Msg-Id": f"{run_uid}:{index}:{k}", HEADER_PART: f"{k}/{len(parts)}"}
            ack = await js.publish(self.subject, part, timeout=self.publish_timeout_s, stream=self.stream,
                                   headers=headers)
            if name == "start" and k == 0:
                self._start_seq = {run_uid: ack.seq}
                # the start is its own message: later ones name its (first part's) sequence
        self.connected = True

    def _next_batch(self):
        """Up to ``max_batch`` documents of one run, oldest first (memory, then spill)."""
        with self._lock:
            batch = []
            while len(batch) < self.max_batch:
                if self._memory:
                    rec = self._memory[0]
                elif self._spill_unread:
                    rec = self._read_spill()
                    self._memory.appendleft(rec)
                    self._spill_unread -= 1
                else:
                    break
                if batch and (rec[1] != batch[0][1] or rec[0] == "start"):
                    break
                batch.append(self._memory.popleft())
                if rec[0] == "start":
                    break  # the start goes alone: its sequence is named by the rest of the run
            self._in_flight, self._flight = len(batch), batch
            return batch or None

    def _peek_empty(self):
        with self._lock:
            return not self._memory and not self._spill_unread

    def _unread(self, batch):
        with self._lock:
            self._memory.extendleft(reversed(batch))
            self._in_flight, self._flight = 0, []

    def _done(self, batch):
        with self._lock:
            self._in_flight, self._flight = 0, []
            self.stats["published"] += len(batch)
            self.stats["messages"] += 1
            if not self._spill_unread and self._spill_w is not None and not self._memory:
                self._reset_spill()

    def _read_spill(self):
        if self._spill_r is None:
            self._spill_r = open(self.spill_path, "rb")
        (n,) = _LEN.unpack(self._spill_r.read(_LEN.size))
        return _record(msgpack.unpackb(self._spill_r.read(n), raw=False))

    def _reset_spill(self):
        for f in (self._spill_w, self._spill_r):
            if f is not None:
                f.close()
        self._spill_w = self._spill_r = None
        self.spill_path.unlink(missing_ok=True)

    def _recover_spill(self):
        """Queue the documents a previous publisher left in the spill file; an unreadable one is quarantined."""
        if not self.spill_path.is_file():
            return
        with open(self.spill_path, "rb") as f:
            data = f.read()
        offset, records = 0, []
        try:
            while offset + _LEN.size <= len(data):
                (n,) = _LEN.unpack_from(data, offset)
                if offset + _LEN.size + n > len(data):
                    break  # a record cut by a crash: never acknowledged by anyone
                records.append(_record(msgpack.unpackb(data[offset + _LEN.size:offset + _LEN.size + n], raw=False)))
                offset += _LEN.size + n
        except (ValueError, TypeError, msgpack.exceptions.ExtraData) as exc:
            target = self._quarantine_path()
            self.spill_path.replace(target)
            self.stats["quarantined"] += 1
            logger.warning("bus: the spill file %s left by a previous session cannot be read (%s); moved to %s, "
                           "not published", self.spill_path, exc, target)
            return
        self.spill_path.unlink()
        self._memory.extend(records)  # may exceed queue_size once: they were already on disk
        self._recovered_runs = {r[1] for r in records}
        if records:
            logger.warning("bus: %d documents left by a previous session in %s are published first",
                           len(records), self.spill_path)

    def _quarantine_path(self) -> Path:
        return self.spill_path.with_name(_QUARANTINE_NAME.format(stream=self.stream, stamp=time.strftime(
            "%Y%m%d-%H%M%S")))

    def _quarantine(self, batch, exc) -> None:
        """Set aside a batch left by an earlier session that the broker refuses for good (one line)."""
        path = self._quarantine_path()
        with open(path, "ab") as f:
            for rec in batch:
                data = msgpack.packb(rec, use_bin_type=True)
                f.write(_LEN.pack(len(data)) + data)
        self.stats["quarantined"] += len(batch)
        logger.warning("bus: %d documents of run %s left by a previous session cannot be published (%s: %s); "
                       "set aside in %s", len(batch), batch[0][1], type(exc).__name__, exc, path)

    def _save_leftovers(self) -> int:
        with self._lock:
            left = list(self._flight) + list(self._memory)  # a batch still in the worker's hands first
            while self._spill_unread:
                left.append(self._read_spill())
                self._spill_unread -= 1
            self._memory.clear()
            if self._spill_w is not None:
                self._reset_spill()
            if left:
                self.spill_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.spill_path, "wb") as f:
                    for rec in left:
                        data = msgpack.packb(rec, use_bin_type=True)
                        f.write(_LEN.pack(len(data)) + data)
        return len(left)


def _transient(exc: BaseException) -> bool:
    """Whether a publish failure is the broker's (unreachable, timed out, restarting), worth retrying; any
    other is a bug of ours (an unencodable document, a payload over the broker's limit)."""
    import nats.errors  # (nats: see DocumentPublisher._connect)

    if isinstance(exc, nats.errors.MaxPayloadError):
        return False
    return (isinstance(exc, (OSError, TimeoutError, asyncio.TimeoutError, ConnectionError))
            or type(exc).__module__.split(".")[0] == "nats")


def _record(fields) -> tuple:
    """A queued record ``(name, run uid, index, document bytes, time)`` read back from a spill file (one
    written by an older publisher has no time: ``None``)."""
    name, run_uid, index, raw, *when = fields
    return (name, run_uid, index, raw, when[0] if when else None)
