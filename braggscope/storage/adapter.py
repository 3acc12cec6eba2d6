"""The Tiled catalog over braggscope's files, served in this process or by the local catalog server.

The catalog's root is a bluesky catalog of runs (spec ``CatalogOfBlueskyRuns``), so that any Tiled
client indexes it the bluesky way (``catalog[-1]``, ``catalog[scan_id]``, a partial uid,
bluesky-tiled-plugins' ``TimeRange`` and ``ScanIDRange`` searches). A production server
(``tiled serve config``) serves the same root from the file :func:`write_server_config` writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["RUNS_SPEC", "catalog_adapter", "server_config", "write_server_config"]

#: The spec of a catalog of bluesky runs (bluesky-tiled-plugins' ``CatalogOfBlueskyRuns`` client).
RUNS_SPEC = {"name": "CatalogOfBlueskyRuns", "version": "3.0"}


def catalog_adapter(root, readable_paths=()):
    """The Tiled catalog adapter of the catalog under ``root`` (created if new).

    Parameters
    ----------
    root : path-like
        The catalog directory: SQLite for the documents (``catalog.db``), DuckDB for scalars
        (``tables.duckdb``), zarr arrays under ``data/``.
    readable_paths : sequence of path-like
        Directories whose HDF5 files the catalog may read in place (the detector's).
    """
    # tiled's server side (FastAPI, SQLAlchemy) takes a second to import: only a process serving a catalog
    from tiled.catalog import from_uri

    root = Path(root)
    (root / "data").mkdir(parents=True, exist_ok=True)
    return from_uri(f"sqlite:///{root / 'catalog.db'}",
                    writable_storage=[str(root / "data"), f"duckdb:///{root / 'tables.duckdb'}"],
                    readable_storage=[str(Path(r)) for r in readable_paths], init_if_not_exists=True,
                    specs=[RUNS_SPEC])


def server_config(uri: str, *, writable_storage, readable_storage=(), key_variable="TILED_SINGLE_USER_API_KEY"):
    """A ``tiled serve config`` configuration serving the catalog at ``uri`` as a catalog of runs.

    Parameters
    ----------
    uri : str
        The catalog database: ``sqlite+aiosqlite:///path/catalog.db`` or
        ``postgresql+asyncpg://user@host:5432/name``.
    writable_storage : sequence of str
        Where new arrays and tables go (a directory for zarr, ``duckdb:///path`` or the PostgreSQL
        URI for tables).
    readable_storage : sequence of path-like
        Directories whose files (the detector's HDF5) the server may read in place.
    key_variable : str
        The environment variable holding the API key, read by tiled when it parses the file (the
        key itself is never written into it).
    """
    return {
        "authentication": {"single_user_api_key": f"${{{key_variable}}}"},
        "catalog": {"uri": uri, "writable_storage": [str(s) for s in writable_storage],
                    "readable_storage": [str(Path(r)) for r in readable_storage], "init_if_not_exists": True,
                    "specs": [RUNS_SPEC]},
    }


def write_server_config(path, uri: str, **kwargs) -> Path:
    """Write :func:`server_config` to ``path`` (YAML: here its JSON subset), readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as f:
        json.dump(server_config(uri, **kwargs), f, indent=2)
    return path
