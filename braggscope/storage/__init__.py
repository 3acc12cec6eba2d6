"""Where runs go and how they come back: a Tiled catalog fed by ``TiledWriter``.

The catalog the configuration names (``[storage]``):

* the user's local catalog server (default: ``storage.tiled_uri = ""``,
  ``storage.catalog_server = "auto"``), shared by every braggscope process of
  the user (``storage.server``);
* embedded (``storage.catalog_server = "off"``): the same files (SQLite for the
  documents, DuckDB for scalars, zarr for arrays) opened in this process;
* production: a Tiled server (``tiled serve catalog postgresql+asyncpg://...``)
  at ``storage.tiled_uri`` with ``storage.api_key`` or ``$TILED_API_KEY``.

Detector frames stay in their HDF5 files, read in place from ``detector.read_path``.

This module gathers the storage API; the code lives in small modules:

========================  ==========================================================
``storage.catalog``          ``open_catalog``, ``catalog_paths``, ``find_runs``, ``load_run``, ``load_run_from_text``
``storage.writer``           ``subscribe_writer``, ``keep_abort_reason``
``storage.background``  ``BackgroundWriter`` (worker thread, spool while the catalog is lost)
``storage.recovery``         ``close_dead_writer_runs`` (runs left open by a killed writer)
``storage.stacks``           ``sxdm_stack``, ``rocking_stack``
``storage.frames``           ``event_frames``, ``verify_frames`` (frame-event pairing)
========================  ==========================================================

Bottom layer: imports no wing (devices, plans, simulators, analysis).
"""

from __future__ import annotations

from braggscope.storage.background import BackgroundWriter
from braggscope.storage.catalog import catalog_paths, find_runs, load_run, load_run_from_text, open_catalog
from braggscope.storage.frames import event_frames, verify_frames
from braggscope.storage.layout import map_layout, raster_order  # noqa: F401 - kept importable from here
from braggscope.storage.stacks import _lazy_frames, _SlicedArray, rocking_stack, sxdm_stack  # noqa: F401
from braggscope.storage.writer import keep_abort_reason, subscribe_writer

__all__ = [
    "verify_frames",
    "event_frames",
    "keep_abort_reason",
    "open_catalog",
    "subscribe_writer",
    "BackgroundWriter",
    "find_runs",
    "load_run",
    "load_run_from_text",
    "sxdm_stack",
    "rocking_stack",
    "catalog_paths",
]
