"""Opening the run catalog.

``open_catalog(cfg)`` returns a Tiled client for the catalog the configuration
names: the user's local catalog server (``storage.server``, the default),
the embedded catalog (SQLite + DuckDB files opened in this process) or a
production Tiled server (``storage.tiled_uri``). :func:`catalog_handle` says what
braggscope knows of an open catalog beyond its client (where its writer spools
documents, which writer lock guards it); ``storage.runs`` finds runs in it.
"""

from __future__ import annotations

import os
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiled.client import from_uri

from braggscope.core import compat
from braggscope.storage import server
from braggscope.storage.adapter import catalog_adapter
from braggscope.storage.journal import PREFIX as JOURNAL_PREFIX
from braggscope.storage.journal import replay_journals
from braggscope.storage.locks import (
    CatalogBusyError,
    acquire_writer_lock,
    creation_lock,
    holds_writer_lock,
    release_writer_lock,
)
from braggscope.storage.recovery import close_dead_writer_runs

__all__ = ["CatalogHandle", "catalog_handle", "catalog_paths", "open_catalog"]

#: Longest retry of one request to the catalog before it counts as unreachable (s).
RETRY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CatalogHandle:
    """What braggscope knows of an open catalog beyond its Tiled client.

    Attributes
    ----------
    kind : {"server", "local server", "embedded"}
        A production server (``storage.tiled_uri``), the user's local catalog server, or the
        catalog opened in this process.
    spool_dir : Path or None
        Where the writer keeps documents while the catalog does not answer.
    writer_lock : Path or None
        The embedded catalog's root, whose writer lock a writer takes (one writer per catalog).
    """

    kind: str = "server"
    spool_dir: Path | None = None
    writer_lock: Path | None = None
    _keep_alive: Any = None  # the embedded catalog's in-process server, alive as long as the client


_HANDLES: dict[int, CatalogHandle] = {}  # by id(client); a Tiled client is a Mapping, hence unhashable


def catalog_handle(client) -> CatalogHandle:
    """The :class:`CatalogHandle` of a client :func:`open_catalog` returned (a plain one otherwise)."""
    return _HANDLES.get(id(client), CatalogHandle())


def _remember(client, handle: CatalogHandle):
    _HANDLES[id(client)] = handle
    weakref.finalize(client, _HANDLES.pop, id(client), None)
    return client


def catalog_paths(cfg) -> dict[str, Path]:
    """Paths of the embedded catalog for a configuration.

    Returns
    -------
    dict
        ``catalog_db`` (SQLite file), ``data`` (zarr arrays), ``tables``
        (DuckDB file) and ``readable`` (list of detector file directories).
    """
    data_dir = cfg.expand_path("storage.data_dir")
    root = data_dir / "catalog"
    readable = [cfg.expand_path("detector.read_path")]
    for extra in cfg.get("storage.readable_paths", []) or []:
        readable.append(Path(os.path.expandvars(os.path.expanduser(str(extra)))))
    return {"root": root, "catalog_db": root / "catalog.db", "data": root / "data",
            "tables": root / "tables.duckdb", "readable": readable}


def open_catalog(cfg, *, readable_paths=()) -> Any:
    """Open the run catalog named by a configuration (a Tiled client).

    Parameters
    ----------
    cfg : braggscope.core.config.Config
        Uses ``storage.tiled_uri`` (empty: the local catalog server of
        ``braggscope.storage.server`` when ``storage.catalog_server`` is
        ``"auto"``, else the embedded catalog), ``storage.api_key``
        (or ``$TILED_API_KEY``), ``storage.data_dir`` and ``detector.read_path``.
    readable_paths : sequence of path-like
        Extra directories whose HDF5 files the embedded catalog may read in
        place (e.g. a test's detector directory).

    Returns
    -------
    tiled.client.container.Container
        Writable client; pass it to :func:`subscribe_writer` and the readers.

    Notes
    -----
    Runs of this host left without a stop document by a writer process that
    died (SIGKILL, a crash) are closed on opening, ``exit_status = "fail"``
    and the reason naming that process (:func:`braggscope.storage.recovery.close_dead_writer_runs`).
    """
    # a catalog that does not answer is known in seconds, not after tiled's 45 s of retries: the writer
    # keeps the documents meanwhile, and a reader says the server does not answer
    compat.limit_tiled_retries(RETRY_TIMEOUT_S)
    uri = (cfg.get("storage.tiled_uri") or "").strip()
    spool = cfg.expand_path("storage.data_dir") / "spool"
    if uri:
        api_key = cfg.get("storage.api_key") or os.environ.get("TILED_API_KEY") or None
        if not api_key:
            raise ValueError("storage.api_key (or $TILED_API_KEY) is required with storage.tiled_uri")
        client = from_uri(uri, api_key=api_key)
        return _recovered(_remember(client, CatalogHandle("server", spool)))
    if server.wanted(cfg):  # storage.catalog_server = "auto": shared by every process of the user
        uri, api_key = server.ensure_server(cfg, readable_paths=readable_paths)
        client = from_uri(uri, api_key=api_key)
        return _recovered(_remember(client, CatalogHandle("local server", spool)))
    return _recovered(_open_embedded(cfg, readable_paths, spool))


def _catalog_writer(client):
    # bluesky-tiled-plugins takes ~2 s to import: only when a journal is replayed
    from braggscope.storage.catalog_writer import CatalogWriter

    return CatalogWriter(client, batch_size=500)


def _recovered(client):
    """``client``, after writing the runs whose journals dead writers left (``storage.journal``) and
    closing the runs they left open without one (``storage.recovery``)."""
    handle = catalog_handle(client)
    try:
        _replay(client, handle)
    except CatalogBusyError:
        pass  # the embedded catalog's live writer replays them when it opens the catalog again
    except Exception as exc:  # noqa: BLE001 - e.g. a read-only key: the catalog still opens, the journals wait
        print(f"catalog: journals in {handle.spool_dir} not replayed ({type(exc).__name__}: {exc})",
              file=sys.stderr, flush=True)
    try:
        close_dead_writer_runs(client)
    except Exception as exc:  # noqa: BLE001 - e.g. a read-only key: the catalog still opens
        print(f"catalog: runs left open by dead writers not checked ({type(exc).__name__}: {exc})",
              file=sys.stderr, flush=True)
    return client


def _replay(client, handle: CatalogHandle) -> None:
    """Replay the journals, under the embedded catalog's writer lock when it is not this process's already."""
    if handle.spool_dir is None or not any(handle.spool_dir.glob(f"{JOURNAL_PREFIX}*.jsonl")):
        return
    held = handle.writer_lock is not None and holds_writer_lock(handle.writer_lock)
    if handle.writer_lock is not None and not held:
        acquire_writer_lock(handle.writer_lock)
    try:
        replay_journals(client, handle.spool_dir, writer_factory=_catalog_writer)
    finally:
        if handle.writer_lock is not None and not held:
            release_writer_lock(handle.writer_lock)


def _open_embedded(cfg, readable_paths, spool):
    # tiled's in-process server takes a second to import: only for the embedded catalog
    from tiled.client import from_context
    from tiled.client.context import Context
    from tiled.server.app import build_app

    p = catalog_paths(cfg)
    readable = [Path(r).expanduser() for r in list(p["readable"]) + list(readable_paths)]
    for r in readable:
        r.mkdir(parents=True, exist_ok=True)
    with creation_lock(p["root"]):  # two processes creating one new catalog: one at a time
        context = Context.from_app(build_app(catalog_adapter(p["root"], readable)))
        client = from_context(context)
    return _remember(client, CatalogHandle("embedded", spool, p["root"], context))
