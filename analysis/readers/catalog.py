"""Catalog runs as reduction inputs, with the detector files they point at checked.

A run's frames live in the detector's HDF5 files, which the catalog only
references. :func:`read_catalog_run` checks, before reading, that every file
the run's image field names exists and is a complete HDF5 file whose
dataset's own sources (virtual datasets, external links) exist, as the file
readers do; a missing or damaged file is named.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from urllib.parse import urlparse

import httpx
import numpy as np

from braggscope.core.errors import ConfigError, InputError, ServerUnreachableError, SourceMissingError
from braggscope.core.setup import ScanSetup
from braggscope.core.stacks import MapStack, RockingStack
from braggscope.storage import load_run_from_text, open_catalog, rocking_stack, sxdm_stack
from braggscope.storage.sources import array_source

from .hdf5 import checked_dataset, open_hdf5

__all__ = ["open_catalog_checked", "read_catalog_run", "check_run_sources"]


def open_catalog_checked(cfg):
    """``braggscope.storage.open_catalog(cfg)``, an unreachable server named in one error.

    Raises
    ------
    ServerUnreachableError
        ``storage.tiled_uri`` does not answer.
    """
    uri = (cfg.get("storage.tiled_uri") or "").strip()
    if uri:
        _check_reachable(uri)
    try:
        return open_catalog(cfg)
    except (httpx.TransportError, ConnectionError) as exc:
        raise ServerUnreachableError(f"catalog server {uri or '(embedded)'} does not answer ({exc}); start it or "
                                     f"fix storage.tiled_uri") from None


def _check_reachable(uri: str, timeout: float = 3.0) -> None:
    """One TCP connection to the server of ``uri``; refused or silent: ServerUnreachableError.

    Tiled's client retries a refused connection for several seconds, writing
    "Retrying..." on stderr; a server that is not there is named at once instead.
    """
    parts = urlparse(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"storage.tiled_uri must be an http(s) URL such as http://127.0.0.1:8000, got {uri!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise ServerUnreachableError(f"catalog server {uri} does not answer ({exc.strerror or exc}); start it or "
                                     f"fix storage.tiled_uri") from None


def read_catalog_run(client, text: str, *, kind: str = "sxdm") -> MapStack | RockingStack:
    """The stack of the run named by ``text`` (scan id, ``-1``, or uid prefix).

    Parameters
    ----------
    client : tiled client
        From :func:`open_catalog_checked`.
    text : str
        As typed on a command line.
    kind : {"sxdm", "bcdi"}
        A :class:`~braggscope.core.stacks.MapStack` (5-D lazy frames) or a
        :class:`~braggscope.core.stacks.RockingStack` (frames in memory).

    Raises
    ------
    InputError
        No such run, a run of another kind, or an incomplete run.
    SourceMissingError
        A detector file of the run is absent (named).
    """
    if kind not in ("sxdm", "bcdi"):
        raise ValueError(f"kind must be 'sxdm' or 'bcdi', got {kind!r}")
    try:
        run = load_run_from_text(client, text)  # a scan id shared by several runs is refused
    except KeyError:
        raise InputError(f"{text}: no such run in the catalog (give a scan id, -1 for the latest, a uid prefix, "
                         f"or an HDF5 file that exists)") from None
    uid = run.metadata["start"].get("uid", text)
    check_run_sources(run, ScanSetup.from_run(run).image_field, name=f"run {uid}")
    try:
        stack = (sxdm_stack if kind == "sxdm" else rocking_stack)(run)
    except ValueError as exc:  # not a map / not a rocking scan / incomplete: the run, not the code
        raise InputError(f"run {uid}: {exc}") from None
    if kind == "bcdi":
        stack = replace(stack, frames=np.asarray(stack.frames))
    return stack


def check_run_sources(run, field: str, *, name: str = "run") -> None:
    """Every HDF5 file holding ``run["primary"][field]`` exists and is complete (with its own sources)."""
    try:
        source = array_source(run["primary"][field])
    except (KeyError, AttributeError):
        return  # no such field: the stack reader says what is missing
    if source is None:
        return  # a server that does not list its sources, or not HDF5
    for path in source.paths:
        if path is None:
            continue  # not a local file URI: read through the catalog
        if not path.is_file():
            raise SourceMissingError(f"{name}: {field} is stored in {path}, which is missing")
        with open_hdf5(path, role=f"{field} of {name}") as f:
            checked_dataset(f, path, source.dataset)
