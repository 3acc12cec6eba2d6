"""Catalog runs as reduction inputs, with the detector files they point at checked.

A run's frames live in the detector's HDF5 files, which the catalog only
references. :func:`read_catalog_run` checks, before reading, that every file
the run's image field names exists and is a complete HDF5 file whose
dataset's own sources (virtual datasets, external links) exist, as the file
readers do; a missing or damaged file is named.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import unquote, urlparse

from braggscope.core.errors import ConfigError, InputError, ServerUnreachableError, SourceMissingError
from braggscope.core.setup import ScanSetup

from .hdf5 import checked_dataset, open_hdf5

__all__ = ["open_catalog_checked", "read_catalog_run", "check_run_sources"]


def open_catalog_checked(cfg):
    """``braggscope.storage.open_catalog(cfg)``, an unreachable server named in one error.

    Raises
    ------
    ServerUnreachableError
        ``storage.tiled_uri`` does not answer.
    """
    import httpx

    from braggscope.storage import open_catalog

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


def read_catalog_run(client, text: str, *, kind: str = "sxdm"):
    """``(frames, meta)`` of the run named by ``text`` (scan id, ``-1``, or uid prefix).

    Parameters
    ----------
    client : tiled client
        From :func:`open_catalog_checked`.
    text : str
        As typed on a command line.
    kind : {"sxdm", "bcdi"}
        ``sxdm_stack`` (5-D lazy stack) or ``rocking_stack`` (frames in memory).

    Raises
    ------
    InputError
        No such run, a run of another kind, or an incomplete run.
    SourceMissingError
        A detector file of the run is absent (named).
    """
    from braggscope.storage.runs import lookup_text as load_run_from_text  # a shared scan id is refused
    from braggscope.storage import rocking_stack, sxdm_stack

    if kind not in ("sxdm", "bcdi"):
        raise ValueError(f"kind must be 'sxdm' or 'bcdi', got {kind!r}")
    try:
        run = load_run_from_text(client, text)
    except KeyError:
        raise InputError(f"{text}: no such run in the catalog (give a scan id, -1 for the latest, a uid prefix, "
                         f"or an HDF5 file that exists)") from None
    uid = run.metadata["start"].get("uid", text)
    check_run_sources(run, ScanSetup.from_run(run).image_field, name=f"run {uid}")
    try:
        frames, meta = (sxdm_stack if kind == "sxdm" else rocking_stack)(run)
    except ValueError as exc:  # not a map / not a rocking scan / incomplete: the run, not the code
        raise InputError(f"run {uid}: {exc}") from None
    if kind == "bcdi":
        frames = frames.compute() if hasattr(frames, "compute") else frames
    meta.setdefault("source", f"run {uid}")
    return frames, meta


def check_run_sources(run, field: str, *, name: str = "run") -> None:
    """Every HDF5 file holding ``run["primary"][field]`` exists and is complete (with its own sources)."""
    try:
        node = run["primary"][field]
        sources = node.include_data_sources().data_sources()
    except (KeyError, AttributeError):
        return  # no such field, or a server that does not list sources: the stack reader says what is missing
    for source in sources:
        if getattr(source, "mimetype", None) != "application/x-hdf5":
            continue
        dataset = (source.parameters or {}).get("dataset") or "/entry/data/data"
        for asset in source.assets:
            uri = urlparse(asset.data_uri)
            if uri.scheme != "file":
                continue
            path = Path(unquote(uri.path))
            if not path.is_file():
                raise SourceMissingError(f"{name}: {field} is stored in {path}, which is missing")
            with open_hdf5(path, role=f"{field} of {name}") as f:
                checked_dataset(f, path, dataset)
