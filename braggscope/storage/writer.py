"""The catalog writer subscribed to a RunEngine: a ``TiledWriter`` fed from a worker thread.

``subscribe_writer(RE, client)`` subscribes it (``storage.background``
keeps documents while the catalog is unreachable); ``keep_abort_reason``
makes ``RE.abort("why")`` record its reason in the stop document.
"""

from __future__ import annotations

from braggscope.core import compat
from braggscope.storage.background import BackgroundWriter
from braggscope.storage.catalog import catalog_handle
from braggscope.storage.locks import acquire_writer_lock

__all__ = ["subscribe_writer", "keep_abort_reason"]


def subscribe_writer(RE, client, *, batch_size: int = 50, background: bool = True) -> int:
    """Subscribe a catalog writer for ``client`` to a RunEngine.

    The writer is a ``TiledWriter`` (:class:`braggscope.storage.catalog_writer.CatalogWriter`)
    whose documents may be delivered again after a lost connection, that gives
    each event its own detector frame, and that records in the run's start
    document which process wrote it (``braggscope_writer``).

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
    braggscope.storage.locks.CatalogBusyError
        Another live process writes to the same embedded catalog (one writer
        per catalog; the lock is released when this process exits).

    Notes
    -----
    Also makes ``RE.abort("why")`` record its reason in the stop document
    (:func:`keep_abort_reason`).
    """
    # bluesky-tiled-plugins takes ~2 s to import: only a process that writes pays for it
    from braggscope.storage.catalog_writer import CatalogWriter

    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    handle = catalog_handle(client)
    if handle.writer_lock is not None:
        acquire_writer_lock(handle.writer_lock)
    keep_abort_reason(RE)
    writer = CatalogWriter(client, batch_size=int(batch_size))
    if not background:
        return RE.subscribe(writer)
    return RE.subscribe(BackgroundWriter(writer, spool_dir=handle.spool_dir))


def keep_abort_reason(RE) -> None:
    """Make the stop document of an aborted run carry the reason given to ``RE.abort(reason)``.

    bluesky's ``run_wrapper`` closes the run itself when the abort reaches the
    plan (``RE.abort`` while paused, the usual case after Ctrl-C) and sends
    ``close_run`` with the exit status but no reason, so the stop document said
    ``reason: ''``. The RunEngine's ``close_run`` command is wrapped here to
    fill in the reason the RunEngine holds when the plan gave none. Idempotent.
    """
    if not compat.install_once(RE, "keep_abort_reason"):
        return

    def wrap(original):
        async def close_run(msg):
            reason = compat.abort_reason(RE)
            if not msg.kwargs.get("reason") and reason:
                msg = msg._replace(kwargs={**msg.kwargs, "reason": reason})
            return await original(msg)

        return close_run

    compat.wrap_command(RE, "close_run", wrap)
