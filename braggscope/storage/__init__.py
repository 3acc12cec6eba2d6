"""Where runs go and how they come back: a Tiled catalog fed by a ``TiledWriter``.

The catalog the configuration names (``[storage]``):

* the user's local catalog server (default: ``storage.tiled_uri = ""``,
  ``storage.catalog_server = "auto"``), shared by every braggscope process of
  the user (``storage.server``);
* embedded (``storage.catalog_server = "off"``): the same files (SQLite for the
  documents, DuckDB for scalars, zarr for arrays) opened in this process;
* production: a Tiled server (``tiled serve catalog postgresql+asyncpg://...``)
  at ``storage.tiled_uri`` with ``storage.api_key`` or ``$TILED_API_KEY``.

Detector frames stay in their HDF5 files, read in place (``storage.sources`` says which
file and rows lie behind a catalog array). The modules:

=========================  ==========================================================
``storage.catalog``        ``open_catalog``, ``catalog_paths``, ``catalog_handle``
``storage.runs``           ``Runs`` (the shell's ``db``), ``load_run``, ``load_run_from_text``, ``find_runs``
``storage.scan_ids``       scan ids that persist across sessions
``storage.writer``         ``subscribe_writer``, ``keep_abort_reason``
``storage.catalog_writer``  the ``TiledWriter`` that survives a lost catalog
``storage.background``     ``BackgroundWriter`` (worker thread, spool while the catalog is lost)
``storage.recovery``       ``close_dead_writer_runs`` (runs left open by a killed writer)
``storage.sources``        the files and rows behind a catalog array or a resource document
``storage.frames``         ``event_frames``, ``verify_frames`` (frame-event pairing)
``storage.layout``         ``map_layout`` (where each event of a map belongs)
``storage.stacks``         ``sxdm_stack``, ``rocking_stack`` (typed stacks of ``core.stacks``)
``storage.fly_stream``     a fly scan's frames and captured positions
``storage.server``         the user's local catalog server
``storage.locks``          one writer per embedded catalog, one creator at a time
=========================  ==========================================================
"""

from __future__ import annotations

from braggscope.core.stacks import MapStack, RockingStack
from braggscope.storage.background import BackgroundWriter
from braggscope.storage.catalog import catalog_handle, catalog_paths, open_catalog
from braggscope.storage.frames import event_frames, verify_frames
from braggscope.storage.layout import map_layout, raster_order
from braggscope.storage.runs import Runs, find_runs, load_run, load_run_from_text
from braggscope.storage.stacks import rocking_stack, sxdm_stack
from braggscope.storage.writer import keep_abort_reason, subscribe_writer

__all__ = [
    "BackgroundWriter",
    "MapStack",
    "RockingStack",
    "Runs",
    "catalog_handle",
    "catalog_paths",
    "event_frames",
    "find_runs",
    "keep_abort_reason",
    "load_run",
    "load_run_from_text",
    "map_layout",
    "open_catalog",
    "raster_order",
    "rocking_stack",
    "subscribe_writer",
    "sxdm_stack",
    "verify_frames",
]
