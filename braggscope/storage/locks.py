"""One writer per embedded catalog, and one creator at a time.

The embedded catalog is a SQLite file written by the process that runs the
scans. A second process writing into it at the same time interleaves its
runs with the first one's and leaves orphans when either is killed, and two
processes creating a new catalog at once race in its initialisation. Both are
prevented with advisory locks (``fcntl.flock``) on files beside the catalog:

* ``writer.lock``: held by the process that subscribed a catalog writer, for
  its lifetime; it records that process's PID and command line so that a
  refused writer can say who holds the catalog. The operating system drops the
  lock when the holder exits, however it exits, so a stale lock file (its PID
  gone) never blocks anyone.
* ``create.lock``: held while a catalog is opened or created.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["CatalogBusyError", "acquire_writer_lock", "creation_lock", "release_writer_lock"]

WRITER_LOCK = "writer.lock"
CREATE_LOCK = "create.lock"

#: Writer locks held by this process: catalog root -> open file (the lock lives as long as it).
_HELD: dict[str, object] = {}


class CatalogBusyError(RuntimeError):
    """Another live process is writing to this embedded catalog."""


def acquire_writer_lock(root) -> Path:
    """Make this process the only writer of the embedded catalog under ``root``.

    Idempotent within a process (several RunEngines of one process may write).

    Parameters
    ----------
    root : path-like
        The catalog directory (``storage.data_dir/catalog``).

    Returns
    -------
    pathlib.Path
        The lock file.

    Raises
    ------
    CatalogBusyError
        Another live process holds the lock; the message names its PID and command.
    """
    root = Path(root)
    key = str(root.resolve())
    path = root / WRITER_LOCK
    if key in _HELD:
        return path
    root.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = _holder(handle.read())
        handle.close()
        raise CatalogBusyError(
            f"the catalog {root} is being written by another process ({holder}); one writer per embedded "
            "catalog: run the scans from that session, stop it first, or point storage.data_dir elsewhere"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv)[:300], "since": time.time()}))
    handle.flush()
    _HELD[key] = handle
    return path


def holds_writer_lock(root) -> bool:
    """Whether this process holds the writer lock of the catalog under ``root``."""
    return str(Path(root).resolve()) in _HELD


def release_writer_lock(root) -> None:
    """Give up this process's writer lock on ``root`` (no-op if not held)."""
    handle = _HELD.pop(str(Path(root).resolve()), None)
    if handle is not None:
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
        handle.close()  # closing the file releases the flock


@contextlib.contextmanager
def creation_lock(root):
    """Hold ``root/create.lock`` (blocking) while a catalog is opened or created."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / CREATE_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']}: {info.get('command', '?')}"
    except (ValueError, KeyError, TypeError):
        return "pid unknown"
