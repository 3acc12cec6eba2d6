"""Runs of the catalog the way operators ask for them: ``db[-1]``, ``db[42]``, ``db["3f2a"]``.

:class:`Runs` wraps a Tiled catalog client (``storage.open_catalog``) with the
databroker idioms the NSLS-II profiles use:

* ``db[-1]`` the latest run, ``db[-2]`` the one before (by start time);
* ``db[42]`` the run whose ``scan_id`` is 42 (a scan id shared by several runs,
  as in catalogs written before scan ids persisted, is refused with their uids);
* ``db["3f2a9c"]`` a run by uid or unique uid prefix;
* ``db.search(plan="sxdm_map", sample="nmc622", since="2026-11-30", until=...)``
  another :class:`Runs` over the matching runs (newest first when iterated).

Scan ids persist across sessions and processes (:class:`ScanIdCounter`, given to
the RunEngine as ``scan_id_source``): a small JSON file in ``storage.data_dir``
updated atomically under an ``flock``, never below the largest scan id already
in the catalog, so two shells at once never hand out the same id.

This module is part of the bottom layer: it imports no wing.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import math
import os
from pathlib import Path

import numpy as np

from braggscope.core.atomic import atomic_path
from braggscope.core.errors import ArgumentError, InputError, UserError

__all__ = ["AmbiguousRunError", "RunNotFound", "Runs", "ScanIdCounter", "install_scan_ids", "lookup",
           "lookup_text", "max_scan_id"]

SCAN_ID_FILE = "scan_id.json"


class RunNotFound(InputError, KeyError):
    """No run answers to the scan id, index or uid asked for."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AmbiguousRunError(UserError, LookupError):
    """Several runs answer to one scan id or uid prefix; the message lists their uids."""


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _start(run) -> dict:
    return run.metadata.get("start", {})


def _newest(client):
    """The catalog's runs sorted newest first, as a lazy, paged view (one query per page).

    Tiled compares ``start.time`` as text: the same order as the numbers for ten-digit epoch seconds.
    """
    return client.sort(("start.time", -1))


def _newest_first(runs) -> list:
    return sorted(runs, key=lambda r: _start(r).get("time", 0.0), reverse=True)


def _describe(runs) -> str:
    return ", ".join(f"{_start(r).get('uid', '?')} ({_stamp(_start(r).get('time'))}, "
                     f"{_start(r).get('plan_name', '?')})" for r in runs)


def _stamp(t) -> str:
    if not isinstance(t, (int, float)) or not math.isfinite(t):
        return "?"
    return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def lookup(client, key):
    """One run of ``client`` by index (< 0), scan id (>= 0) or uid (prefix); see :class:`Runs`.

    Raises
    ------
    RunNotFound
        No such run (a ``KeyError`` and a ``UserError``).
    AmbiguousRunError
        Several runs share the scan id or the uid prefix (their uids are listed).
    """
    from tiled.queries import Key

    if _is_int(key) and key < 0:
        # one sorted, paged query for the k-th newest run: no walk over every run's metadata
        try:
            return _newest(client).values()[-int(key) - 1]
        except IndexError:
            raise RunNotFound(f"only {len(client)} runs in the catalog, asked for db[{int(key)}]") from None
    if _is_int(key):
        runs = _newest_first(client.search(Key("start.scan_id") == int(key)).values())
        if not runs:
            raise RunNotFound(f"no run with scan id {int(key)} in the catalog")
        if len(runs) > 1:
            raise AmbiguousRunError(f"scan id {int(key)} names {len(runs)} runs: {_describe(runs)}; "
                                    "give the uid (or a unique prefix) instead")
        return runs[0]
    if not isinstance(key, str) or not key.strip():
        raise ArgumentError(f"a run is named by an int (scan id, or -1 for the latest) or a uid string, "
                            f"got {key!r}")
    key = key.strip()
    try:
        return client[key]
    except KeyError:
        pass
    matches = [k for k in client.keys() if k.startswith(key)]
    if not matches:
        raise RunNotFound(f"no run with uid {key!r} (or starting with it) in the catalog")
    if len(matches) > 1:
        raise AmbiguousRunError(f"uid prefix {key!r} names {len(matches)} runs: "
                                f"{', '.join(matches[:10])}{' ...' if len(matches) > 10 else ''}")
    return client[matches[0]]


def lookup_text(client, text: str):
    """A run named on a command line: ``"42"`` (scan id), ``"-1"`` (latest) or a uid prefix.

    An all-digit uid prefix is tried as a uid when no run has that scan id.
    """
    text = str(text).strip()
    if text.lstrip("-").isdigit():
        try:
            return lookup(client, int(text))
        except RunNotFound:
            if text.startswith("-"):
                raise
    return lookup(client, text)


def _timestamp(value, name: str) -> float:
    """Seconds since the epoch from a date string (ISO 8601, local time), datetime, date or number."""
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day).timestamp()
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        if not math.isfinite(float(value)):
            raise ArgumentError(f"{name} must be a finite time, got {value!r}")
        return float(value)
    if isinstance(value, str):
        try:
            return _dt.datetime.fromisoformat(value.strip()).timestamp()
        except ValueError:
            pass
    raise ArgumentError(f"{name} must be a date such as '2026-11-30' or '2026-11-30 14:00', a datetime "
                        f"or seconds since the epoch, got {value!r}")


class Runs:
    """The catalog's runs, indexed the databroker way.

    Parameters
    ----------
    client : tiled.client.container.Container
        The catalog (``storage.open_catalog(cfg)``) or a search result of it.

    Examples
    --------
    >>> db[-1]                                    # doctest: +SKIP
    >>> db[42].metadata["start"]["plan_name"]     # doctest: +SKIP
    >>> for run in db.search(plan="sxdm_map", since="2026-11-30"): ...  # doctest: +SKIP
    """

    def __init__(self, client):
        self.client = client

    def __getitem__(self, key):
        return lookup(self.client, key)

    def __len__(self) -> int:
        return len(self.client)

    def __iter__(self):
        """Runs, newest first (paged by the catalog, not read all at once)."""
        return iter(_newest(self.client).values())

    def search(self, plan: str | None = None, sample: str | None = None, since=None, until=None,
               **md) -> "Runs":
        """Runs matching every criterion given.

        Parameters
        ----------
        plan : str, optional
            Start document ``plan_name`` (``"sxdm_map"``, ``"bcdi_rocking"``, ``"scan"`` ...).
        sample : str, optional
            Start document ``sample``.
        since, until : str, datetime, date or float, optional
            Runs started at or after ``since`` and before ``until`` (a date alone
            means its midnight, local time; a float is seconds since the epoch).
        **md
            Any other start document key and its exact value (``scan_id=42``).
        """
        from tiled.queries import Key

        results = self.client
        for key, value in (("plan_name", plan), ("sample", sample), *md.items()):
            if value is not None:
                results = results.search(Key(f"start.{key}") == value)
        if since is not None:
            results = results.search(Key("start.time") >= _timestamp(since, "since"))
        if until is not None:
            results = results.search(Key("start.time") < _timestamp(until, "until"))
        return Runs(results)

    def __repr__(self) -> str:
        total = len(self.client)
        lines = [f"{total} runs" + (" (latest 10)" if total > 10 else "")]
        for run in _newest(self.client).values()[:10]:
            s = _start(run)
            lines.append(f"  scan {s.get('scan_id', '?')!s:>5}  {str(s.get('uid', '?'))[:8]}  "
                         f"{_stamp(s.get('time'))}  {s.get('plan_name', '?'):14s} {s.get('sample') or ''}")
        return "\n".join(lines)


def _any_above(client, scan_id: int) -> bool:
    """Whether a run of the catalog has a scan id above ``scan_id`` (one count query, no run read)."""
    from tiled.queries import Key

    return len(client.search(Key("start.scan_id") > int(scan_id))) > 0


def max_scan_id(client) -> int:
    """The largest ``scan_id`` of the catalog's runs (0 when none).

    Found with count queries (``start.scan_id > k``: doubling k, then
    bisecting), about ``2 log2(max)`` of them and no run read, instead of a
    walk over every run: as fast on a catalog of 100 000 runs as on an empty one.
    """
    if not _any_above(client, 0):
        return 0
    low, high = 0, 1  # invariant: a run above low, none above high (once found)
    while _any_above(client, high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _any_above(client, middle) else (low, middle)
    return high


class ScanIdCounter:
    """Scan ids that persist across sessions and processes (a RunEngine ``scan_id_source``).

    The last id handed out is kept in ``<directory>/scan_id.json``; each call
    takes an ``flock`` on ``scan_id.json.lock``, reads the file, adds one and
    rewrites it atomically, so two processes at once never get the same id.

    Parameters
    ----------
    directory : path-like
        Where the file lives (``storage.data_dir``).
    floor : int
        Ids handed out are above it (the largest scan id already in the catalog).
    """

    def __init__(self, directory, *, floor: int = 0):
        self.path = Path(directory) / SCAN_ID_FILE
        self.floor = int(floor)

    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path.with_suffix(".json.lock"), "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    def last(self) -> int:
        """The last scan id handed out (0 before the first)."""
        try:
            value = json.loads(self.path.read_text()).get("scan_id", 0)
        except (OSError, ValueError, AttributeError):
            return 0
        return int(value) if _is_int(value) else 0

    def __call__(self, md=None) -> int:
        """The next scan id (``RunEngine.scan_id_source`` calls it with ``RE.md`` at ``open_run``)."""
        with self._locked():
            current = self.last()
            in_md = (md or {}).get("scan_id")  # an operator may set RE.md["scan_id"] to jump ahead
            new = max(current, self.floor, int(in_md) if _is_int(in_md) else 0) + 1
            with atomic_path(self.path) as tmp:
                Path(tmp).write_text(json.dumps({"scan_id": new, "pid": os.getpid()}))
            return new


def install_scan_ids(RE, cfg, client=None) -> ScanIdCounter:
    """Give ``RE`` scan ids that persist in ``storage.data_dir`` and continue the catalog's.

    ``RE.md["scan_id"]`` is set to the last id handed out, so ``RE.md`` shows
    where the numbering stands. The catalog is asked one count query (any run
    above the counter?); only then is its largest scan id searched
    (:func:`max_scan_id`, a counter file lost or a catalog copied in).
    """
    counter = ScanIdCounter(cfg.expand_path("storage.data_dir"))
    if client is not None and _any_above(client, counter.last()):  # one query when the counter is ahead
        counter.floor = max_scan_id(client)
    RE.scan_id_source = counter
    RE.md["scan_id"] = max(counter.last(), counter.floor)
    return counter
