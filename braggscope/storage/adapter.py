"""The Tiled catalog over braggscope's files, served in this process or by the local catalog server.

The catalog's root is a bluesky catalog of runs (spec ``CatalogOfBlueskyRuns``), so that any Tiled
client indexes it the bluesky way (``catalog[-1]``, ``catalog[scan_id]``, a partial uid,
bluesky-tiled-plugins' ``TimeRange`` and ``ScanIDRange`` searches).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RUNS_SPEC", "catalog_adapter"]

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
