"""The subscription of ``braggscope live``: a durable JetStream pull consumer feeding a :class:`LiveConsumer`.

Messages are acknowledged only once their documents are in the maps; a
restart with the same durable name replays the run in progress from its
start document (its stream sequence travels in every message) and continues
after the last acknowledged message.
"""

from __future__ import annotations

import asyncio

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from braggscope.app.bus.format import (
    HEADER_PART,
    HEADER_RUN,
    HEADER_START_SEQ,
    decode_batch,
    ensure_stream,
    run_messages,
)
from braggscope.core.errors import ServerUnreachableError

__all__ = ["consume"]


async def consume(url, stream, subject, consumer, *, durable="braggscope-live", deliver="new", runs=0,
                  fetch_batch=128, stop=None, connect_timeout_s=15.0):
    """Pull the bus into ``consumer`` until ``runs`` runs are finished (0: until ``stop`` is set).

    Parameters
    ----------
    url, stream, subject : str
        NATS server, JetStream stream and documents subject.
    consumer : LiveConsumer
    durable : str
        Durable consumer name (its position survives restarts).
    deliver : {"new", "all"}
        Start of a durable consumer created here.
    runs : int
        Return after this many finished runs (0: never).
    fetch_batch : int
        Most messages per pull.
    stop : asyncio.Event, optional
        Set it to return after the current batch.
    connect_timeout_s : float
        Give up (``ServerUnreachableError``) when the broker does not answer
        this long at start; later outages are waited out.
    """
    try:  # the client would retry a first connection for ever
        nc = await asyncio.wait_for(nats.connect(url, connect_timeout=5, max_reconnect_attempts=-1,
                                                 reconnect_time_wait=0.5, name=f"braggscope-live-{durable}",
                                                 error_cb=_quiet), connect_timeout_s)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise ServerUnreachableError(f"NATS server {url} unreachable after {connect_timeout_s:.0f} s: "
                                     "start it or pass --url") from exc
    try:
        js = nc.jetstream()
        await ensure_stream(js, stream, subject)
        sub = await _durable(js, stream, subject, durable, deliver, consumer)
        consumer.echo(f"braggscope live: subscribed to {subject} on {url} (stream {stream}, durable {durable})")
        while not (runs and len(consumer.finished) >= runs) and not (stop is not None and stop.is_set()):
            try:  # the first message as soon as it is there, then what else is waiting (a fetch of
                # many would hold the first until the batch is full or the time-out is over)
                msgs = await sub.fetch(1, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except (nats.errors.Error, OSError):  # broker away: the client reconnects by itself
                await asyncio.sleep(0.2)
                continue
            try:
                msgs += await sub.fetch(fetch_batch, timeout=0.005)
            except (TimeoutError, nats.errors.Error, OSError):
                pass
            for m in msgs:
                consumer.feed_message(m.headers, m.data)
            consumer.flush()
            try:  # only now are their documents in the maps; one ack covers the batch (AckPolicy.ALL)
                await msgs[-1].ack()
            except (nats.errors.Error, OSError):  # re-delivered later, and skipped then
                pass
        consumer.close()
        await nc.flush(timeout=5)
    finally:
        await nc.close()


async def _quiet(exc):
    """Connection errors: the client reconnects by itself, nothing to print."""


async def _durable(js, stream, subject, durable, deliver, consumer):
    """Bind the durable consumer; after a restart, replay the run it was in the middle of."""
    # AckPolicy.ALL: acknowledging a message acknowledges those before it, so a batch costs one ack
    # (one socket write) instead of one per message
    config = ConsumerConfig(durable_name=durable, filter_subject=subject, ack_policy=AckPolicy.ALL,
                            ack_wait=30.0, max_ack_pending=-1,
                            deliver_policy=DeliverPolicy.NEW if deliver == "new" else DeliverPolicy.ALL)
    try:
        info = await js.consumer_info(stream, durable)
    except nats.js.errors.NotFoundError:
        info = None
    floor = info.ack_floor.stream_seq if info is not None and info.ack_floor else 0
    if info is not None and not floor and info.config.ack_policy != AckPolicy.ALL:
        await js.delete_consumer(stream, durable)  # made by an older braggscope (one ack per message)
    if floor:
        msg = await js.get_msg(stream, floor)
        headers = msg.headers or {}
        whole = HEADER_PART not in headers  # a part: its run is not over (a stop is small)
        if not whole or not any(name == "stop" for name, _ in decode_batch(msg.data)):
            run_uid = headers.get(HEADER_RUN)
            start_seq = int(headers.get(HEADER_START_SEQ, floor))
            for h, data in await run_messages(js, stream, start_seq, floor, run_uid):
                consumer.feed_message(h, data)
            consumer.flush()
            consumer.echo(f"braggscope live: run {str(run_uid)[:8]} replayed from stream sequence {start_seq}")
        # restart right after the last acknowledged message (no wait for the server's re-delivery)
        await js.delete_consumer(stream, durable)
        config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, floor + 1
    return await js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
