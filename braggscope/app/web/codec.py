"""The page's binary messages: a JSON header and float32 arrays in one WebSocket frame.

Layout: the header's length (uint32, little-endian), the header (UTF-8 JSON), zero bytes up
to a multiple of 4, then the arrays (float32, little-endian, C order), one after the other.
The header names each array with its shape and byte offset from the start of the arrays
(``header["arrays"][name] = {"shape": [...], "offset": n}``); NaN marks a pixel without a
value. ``app.js`` reads it with a ``DataView`` and ``Float32Array`` views, without a copy.
"""

from __future__ import annotations

import json
import struct

import numpy as np

__all__ = ["encode", "decode"]


def encode(header: dict, arrays: dict) -> bytes:
    """One binary message from ``header`` (JSON-able) and ``arrays`` (name -> array-like)."""
    data, table, offset = [], {}, 0
    for name, array in arrays.items():
        a = np.ascontiguousarray(array, dtype="<f4")
        table[name] = {"shape": list(a.shape), "offset": offset}
        data.append(a.tobytes())
        offset += a.nbytes
    text = json.dumps({**header, "arrays": table}, allow_nan=False, separators=(",", ":")).encode()
    pad = -(4 + len(text)) % 4
    return b"".join([struct.pack("<I", len(text)), text, b"\0" * pad, *data])


def decode(message: bytes) -> tuple[dict, dict]:
    """``(header, arrays)`` of a message made by :func:`encode` (tests and tools)."""
    (n,) = struct.unpack_from("<I", message)
    header = json.loads(message[4:4 + n])
    start = 4 + n + (-(4 + n) % 4)
    arrays = {}
    for name, entry in header.get("arrays", {}).items():
        count = int(np.prod(entry["shape"])) if entry["shape"] else 1
        arrays[name] = np.frombuffer(message, "<f4", count, start + entry["offset"]).reshape(entry["shape"])
    return header, arrays
