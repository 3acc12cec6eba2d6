"""The page's subscription to the document bus, and the thread that turns documents into its messages.

:func:`follow_bus` reads the bus (NATS JetStream) from now on with an ordered consumer (no
acknowledgements, nothing stored for it on the broker); when it starts in the middle of a
run, it first replays that run from its start document (whose stream sequence every message
carries), so a page opened or a server restarted mid-map shows the whole map. A lost broker
is waited out (the client reconnects; a first connection is retried every few seconds).

:class:`FeedThread` feeds the messages to a :class:`~braggscope.app.web.feed.RunFeed` in a
thread of its own: reducing frames into maps never holds up the server's event loop, and the
page's messages go back to it through ``publish``.
"""

from __future__ import annotations

import asyncio
import queue
import threading

from braggscope.app.bus.format import (
    HEADER_PART,
    HEADER_RUN,
    HEADER_START_SEQ,
    PartJoiner,
    decode_timed_batch,
    ensure_stream,
    run_messages,
)

__all__ = ["FeedThread", "follow_bus"]

#: Seconds between two attempts at a first connection to the broker.
RETRY_S = 3.0


class FeedThread:
    """A :class:`RunFeed` fed from a thread; ``publish(messages)`` gets its messages (from that thread).

    Parameters
    ----------
    feed : braggscope.app.web.feed.RunFeed
    publish : callable
        Called with ``[(kind, payload), ...]`` after each batch; must be thread-safe.
    tick_s : float
        Longest wait for a message before the feed is flushed anyway (a map message held back by
        the feed's ``min_interval_s`` goes out then).
    """

    def __init__(self, feed, publish, *, tick_s: float = 0.05):
        self.feed, self.publish, self.tick_s = feed, publish, float(tick_s)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._joiner = PartJoiner()
        self._run = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="braggscope-web-feed", daemon=True)
        self._thread.start()

    def put(self, headers, payload: bytes) -> None:
        """One bus message (any thread)."""
        self._queue.put((headers or {}, payload))

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the messages already put."""
        self._stop.set()
        self._thread.join(timeout)

    def _work(self):
        while not (self._stop.is_set() and self._queue.empty()):
            batch = []
            try:
                batch.append(self._queue.get(timeout=self.tick_s))
                while len(batch) < 256:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            for headers, payload in batch:
                self._feed_message(headers, payload)
            messages = self.feed.flush()
            if messages:
                self.publish(messages)

    def _feed_message(self, headers, payload):
        payload = self._joiner.add(headers, payload)
        if payload is None:
            return
        run_uid = headers.get(HEADER_RUN)
        for name, doc, published in decode_timed_batch(payload):
            if name == "start":
                self._run = doc["uid"]
            if run_uid == self._run:
                self.feed.feed(name, doc, published)


async def follow_bus(url: str, stream: str, subject: str, sink: FeedThread, *, stop: asyncio.Event,
                     status=lambda line: None) -> None:
    """Put the bus's messages into ``sink`` until ``stop`` is set; ``status(line)`` says where it stands."""
    # nats: only where a bus is followed
    import nats
    import nats.errors

    while not stop.is_set():
        try:
            nc = await asyncio.wait_for(nats.connect(url, connect_timeout=3, max_reconnect_attempts=-1,
                                                     reconnect_time_wait=0.5, error_cb=_quiet,
                                                     name="braggscope-web"), 2 * RETRY_S)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            status(f"the bus at {url} does not answer ({type(exc).__name__}); trying again")
            await _wait(stop, RETRY_S)
            continue
        try:
            sub = await _subscribe(nc.jetstream(), stream, subject, sink)
            status(f"following {subject} on {url}")
            while not stop.is_set():
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except (nats.errors.Error, OSError):  # the broker away: the client reconnects by itself
                    await asyncio.sleep(0.2)
                    continue
                sink.put(msg.headers, msg.data)
        finally:
            await nc.close()


async def _subscribe(js, stream, subject, sink):
    """An ordered consumer from the next message; the run in progress replayed into ``sink`` first."""
    from nats.js.api import ConsumerConfig, DeliverPolicy  # (nats: see follow_bus)

    info = await ensure_stream(js, stream, subject)
    last = int(info.state.last_seq or 0)
    if last:
        msg = await js.get_msg(stream, last)
        headers = msg.headers or {}
        finished = HEADER_PART not in headers and any(name == "stop" for name, _, _ in decode_timed_batch(msg.data))
        if not finished and headers.get(HEADER_RUN):
            start_seq = int(headers.get(HEADER_START_SEQ, last))
            for h, data in await run_messages(js, stream, start_seq, last, headers[HEADER_RUN]):
                sink.put(h, data)
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last + 1)
    return await js.subscribe(subject, stream=stream, ordered_consumer=True, config=config)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def _quiet(exc):
    """Connection errors: the client reconnects by itself, nothing to print."""
