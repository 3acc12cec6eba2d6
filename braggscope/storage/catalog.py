"""Opening the run catalog and finding runs in it.

``open_catalog(cfg)`` returns a Tiled client for the catalog the configuration
names: the user's local catalog server (``storage.server``, the default),
the embedded catalog (SQLite + DuckDB files opened in this process) or a
production Tiled server (``storage.tiled_uri``). ``find_runs``, ``load_run`` and
``load_run_from_text`` pick runs from it (``core.runs.Runs`` is the shell's
databroker-style index).

Bottom layer: imports no wing. Re-exported by ``braggscope.storage``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from braggscope.storage.locks import creation_lock
from braggscope.storage.recovery import close_dead_writer_runs

__all__ = ["catalog_paths", "open_catalog", "find_runs", "load_run", "load_run_from_text"]


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
    uri = (cfg.get("storage.tiled_uri") or "").strip()
    if uri:
        from tiled.client import from_uri

        api_key = cfg.get("storage.api_key") or os.environ.get("TILED_API_KEY") or None
        if not api_key:
            raise ValueError("storage.api_key (or $TILED_API_KEY) is required with storage.tiled_uri")
        return _recovered(from_uri(uri, api_key=api_key))
    from braggscope.storage import server as catalog_server  # the local server, started on demand

    if catalog_server.wanted(cfg):  # storage.catalog_server = "auto": shared by every process of the user
        from tiled.client import from_uri

        uri, api_key = catalog_server.ensure_server(cfg, readable_paths=readable_paths)
        client = from_uri(uri, api_key=api_key)
        client._braggscope_spool = cfg.expand_path("storage.data_dir") / "spool"  # documents kept if it is lost
        return _recovered(client)
    return _recovered(_open_embedded(cfg, readable_paths))


def _recovered(client):
    """``client``, after closing the runs its dead writers left open (``storage.recovery``)."""
    try:
        close_dead_writer_runs(client)
    except Exception as exc:  # noqa: BLE001 - e.g. a read-only key: the catalog still opens
        print(f"catalog: runs left open by dead writers not checked ({type(exc).__name__}: {exc})",
              file=sys.stderr, flush=True)
    return client


def _open_embedded(cfg, readable_paths):
    from tiled.catalog import from_uri
    from tiled.client import from_context
    from tiled.client.context import Context
    from tiled.server.app import build_app

    p = catalog_paths(cfg)
    p["data"].mkdir(parents=True, exist_ok=True)
    readable = [Path(r).expanduser() for r in list(p["readable"]) + list(readable_paths)]
    for r in readable:
        r.mkdir(parents=True, exist_ok=True)
    with creation_lock(p["root"]):  # two processes creating one new catalog: one at a time
        catalog = from_uri(
            f"sqlite:///{p['catalog_db']}",
            writable_storage=[str(p["data"]), f"duckdb:///{p['tables']}"],
            readable_storage=[str(r) for r in readable],
            init_if_not_exists=True,
        )
        context = Context.from_app(build_app(catalog))
        client = from_context(context)
    client._braggscope_context = context  # keep the in-process server alive with the client
    client._braggscope_root = p["root"]  # subscribe_writer takes the catalog's writer lock
    return client


def find_runs(client, **md) -> list:
    """Runs whose start document matches every ``key=value`` given, newest first.

    >>> find_runs(client, plan_name="sxdm_map", sample="nmc622")  # doctest: +SKIP
    """
    from tiled.queries import Key

    results = client
    for key, value in md.items():
        results = results.search(Key(f"start.{key}") == value)
    runs = list(results.values())
    runs.sort(key=lambda r: r.metadata["start"].get("time", 0.0), reverse=True)
    return runs


def load_run(client, scan_id_or_uid):
    """One run by ``scan_id`` (int: the newest run with that id; -1 the latest run, -2 the one
    before ...) or uid (str, or a unique prefix)."""
    from tiled.queries import Key

    if isinstance(scan_id_or_uid, (int, np.integer)) and not isinstance(scan_id_or_uid, bool) \
            and scan_id_or_uid < 0:
        runs = find_runs(client)
        if len(runs) < -scan_id_or_uid:
            raise KeyError(f"only {len(runs)} runs in the catalog, asked for {scan_id_or_uid}")
        return runs[-int(scan_id_or_uid) - 1]
    if isinstance(scan_id_or_uid, (int, np.integer)) and not isinstance(scan_id_or_uid, bool):
        found = client.search(Key("start.scan_id") == int(scan_id_or_uid))
        runs = sorted(found.values(), key=lambda r: r.metadata["start"].get("time", 0.0))
        if not runs:
            raise KeyError(f"no run with scan_id {scan_id_or_uid}")
        return runs[-1]
    if not isinstance(scan_id_or_uid, str) or not scan_id_or_uid:
        raise TypeError(f"scan_id_or_uid must be an int scan_id or a uid string, got {scan_id_or_uid!r}")
    try:
        return client[scan_id_or_uid]
    except KeyError:
        pass
    matches = [k for k in client.keys() if k.startswith(scan_id_or_uid)]
    if len(matches) != 1:
        raise KeyError(f"uid {scan_id_or_uid!r} matches {len(matches)} runs")
    return client[matches[0]]


def load_run_from_text(client, text: str):
    """A run named on a command line: a scan id (``"42"``; ``"-1"`` the latest run) or a uid prefix.

    An all-digit uid prefix (about 2 % of 8-character prefixes) is tried as a uid when no run
    has that scan id.
    """
    text = str(text).strip()
    if text.lstrip("-").isdigit():
        try:
            return load_run(client, int(text))
        except KeyError:
            if text.startswith("-"):
                raise
    return load_run(client, text)
