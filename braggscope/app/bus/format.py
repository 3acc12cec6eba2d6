"""The document bus's wire format: how a run's documents travel as NATS JetStream messages.

A message's payload is a msgpack array of ``[name, document, time]`` triples,
each document itself msgpack bytes (numpy arrays as nested lists, numpy scalars
as Python numbers), ``time`` the wall-clock time (s since the epoch) at which
the acquisition handed the document to the publisher; the documents of one run
only. (Messages of an older publisher hold ``[name, document]`` pairs: their
times are ``None``.) Its headers name the run
(:data:`HEADER_RUN`), the index in the run of its first document
(:data:`HEADER_INDEX`), the stream sequence of the run's start document
(:data:`HEADER_START_SEQ`) and ``Nats-Msg-Id = <run uid>:<index>`` (the
server's de-duplication key). A document too large for one message (the
broker's ``max_payload``) travels in consecutive parts: messages with the same
run and index headers, :data:`HEADER_PART` ``k/n`` and ``Nats-Msg-Id =
<run uid>:<index>:<k>``, whose payloads joined in order are the message's
payload (:class:`PartJoiner`). Shared by the publisher
(:mod:`braggscope.app.bus.publisher`) and ``braggscope live``.
"""

from __future__ import annotations

import msgpack
import numpy as np

__all__ = ["encode_document", "decode_batch", "decode_timed_batch", "ensure_stream", "run_messages", "HEADER_RUN",
           "HEADER_INDEX", "HEADER_START_SEQ", "HEADER_PART", "PartJoiner"]

HEADER_RUN = "Braggscope-Run"            # run start uid
HEADER_INDEX = "Braggscope-Index"        # index in the run of the message's first document
HEADER_START_SEQ = "Braggscope-Start-Seq"  # stream sequence of the run's start document
HEADER_PART = "Braggscope-Part"          # "k/n": part k (from 0) of a message sent in n parts


class PartJoiner:
    """Join the parts of a message sent in parts (:data:`HEADER_PART`); other messages pass through."""

    def __init__(self):
        self._parts: dict[tuple, list] = {}

    def add(self, headers, payload: bytes) -> bytes | None:
        """The whole payload once its last part is in (the payload itself for an unsplit message), else None."""
        part = (headers or {}).get(HEADER_PART)
        if part is None:
            return payload
        k, n = (int(v) for v in part.split("/"))
        key = ((headers or {}).get(HEADER_RUN), (headers or {}).get(HEADER_INDEX))
        parts = self._parts.setdefault(key, [None] * n)
        parts[k] = payload
        if any(p is None for p in parts):
            return None
        del self._parts[key]
        return b"".join(parts)


def _default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot put a {type(obj).__name__} on the document bus")


def encode_document(doc) -> bytes:
    """One document as msgpack bytes (numpy arrays as nested lists, scalars as Python numbers)."""
    return msgpack.packb(doc, default=_default, use_bin_type=True)


def decode_batch(payload: bytes) -> list[tuple[str, dict]]:
    """The ``[(name, doc), ...]`` of one bus message."""
    return [(name, doc) for name, doc, _ in decode_timed_batch(payload)]


def decode_timed_batch(payload: bytes) -> list[tuple[str, dict, float | None]]:
    """The ``[(name, doc, time), ...]`` of one bus message; ``time``: when the acquisition handed the
    document to the publisher (s since the epoch), ``None`` in a message of an older publisher."""
    return [(item[0], msgpack.unpackb(item[1], raw=False, strict_map_key=False),
             item[2] if len(item) > 2 else None) for item in msgpack.unpackb(payload, raw=False)]


async def ensure_stream(js, stream: str, subject: str, *, duplicate_window_s: float = 600.0):
    """Create the JetStream stream (file storage) for ``subject`` unless it exists."""
    # nats: slow to import, and the session loads this module whether or not a bus is configured
    import nats.js.errors
    from nats.js.api import StorageType, StreamConfig

    try:
        return await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        config = StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE,
                              duplicate_window=duplicate_window_s)
        return await js.add_stream(config)


async def run_messages(js, stream: str, start_seq: int, stop_seq: int, run_uid: str):
    """The messages ``(headers, payload)`` of run ``run_uid`` between two stream sequences (inclusive).

    Used by a consumer that restarts mid-run to rebuild the run from its start
    document; decode each payload with :func:`decode_batch`.
    """
    import nats.js.errors  # (nats: see ensure_stream)

    out = []
    for seq in range(int(start_seq), int(stop_seq) + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:  # deleted by the stream's limits
            continue
        if (msg.headers or {}).get(HEADER_RUN) == run_uid:
            out.append((msg.headers, msg.data))
    return out
