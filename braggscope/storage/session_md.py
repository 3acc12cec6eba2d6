"""``RE.md`` that persists across sessions and processes, as NSLS-II profiles keep it.

The operator's metadata (``RE.md["sample"] = "nmc622"``, ``RE.md["proposal"] = ...``) goes into every
run's start document. :class:`PersistentMetadata` keeps it in ``<storage.data_dir>/session_md.json``:
each change rewrites the file atomically under an ``flock``, and each read takes the file again when
another process changed it, so a second shell, a queue worker and the next session see what the first
one set. Values must be JSON-able (what a start document can hold anyway).
"""

from __future__ import annotations

import collections.abc
import contextlib
import fcntl
import json
from pathlib import Path

from braggscope.core.atomic import atomic_path
from braggscope.core.errors import ArgumentError

__all__ = ["MD_FILE", "PersistentMetadata", "install_persistent_md"]

MD_FILE = "session_md.json"
#: keys the RunEngine manages itself; kept out of the file
_RUN_ENGINE_KEYS = ("scan_id",)


class PersistentMetadata(collections.abc.MutableMapping):
    """A dict synced with a JSON file, safe with several processes (a RunEngine's ``md``).

    Parameters
    ----------
    path : path-like
        The file (created at the first change).

    Examples
    --------
    >>> RE.md = PersistentMetadata(data_dir / "session_md.json")   # doctest: +SKIP
    >>> RE.md["sample"] = "nmc622"     # in every later run, in this process and the others
    """

    def __init__(self, path):
        self.path = Path(path)
        self._data: dict = {}
        self._stamp = None
        self._reload()

    # -- reading ------------------------------------------------------------------------
    def __getitem__(self, key):
        self._reload()
        return self._data[key]

    def __iter__(self):
        self._reload()
        return iter(dict(self._data))

    def __len__(self):
        self._reload()
        return len(self._data)

    def __repr__(self):
        return f"PersistentMetadata({self.path}): {dict(self)!r}"

    # -- writing ------------------------------------------------------------------------
    def __setitem__(self, key, value):
        if not isinstance(key, str):
            raise ArgumentError(f"RE.md keys are strings, got {key!r}")
        _check_jsonable(key, value)
        with self._locked():
            self._data[key] = value
            self._write()

    def __delitem__(self, key):
        with self._locked():
            del self._data[key]
            self._write()

    def update(self, *args, **kwargs):  # one write for many keys
        items = dict(*args, **kwargs)
        for key, value in items.items():
            if not isinstance(key, str):
                raise ArgumentError(f"RE.md keys are strings, got {key!r}")
            _check_jsonable(key, value)
        with self._locked():
            self._data.update(items)
            self._write()

    # -- the file -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self):
        """Hold the lock, with the file's latest content loaded (another process may have changed it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._reload()
            yield

    def _write(self):
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True))
        self._stamp = _stamp(self.path)

    def _reload(self):
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self.path.read_text()) if stamp is not None else {}
        except (OSError, ValueError):
            data = {}  # a damaged file: start again rather than refuse every run
        self._data = data if isinstance(data, dict) else {}
        self._stamp = stamp


def install_persistent_md(RE, cfg) -> PersistentMetadata:
    """Give ``RE`` a persistent ``md`` in ``<storage.data_dir>``, keeping what it already held."""
    md = PersistentMetadata(cfg.expand_path("storage.data_dir") / MD_FILE)
    # the software versions are this process's; the rest the file keeps wins over a fresh RunEngine's
    carried = {k: v for k, v in dict(RE.md).items() if k not in _RUN_ENGINE_KEYS and (k == "versions" or k not in md)}
    if carried:
        md.update(carried)
    RE.md = md
    return md


def _stamp(path: Path):
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def _check_jsonable(key, value) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"RE.md[{key!r}] must be JSON-able (str, number, list, dict) and finite: {exc}") from None
