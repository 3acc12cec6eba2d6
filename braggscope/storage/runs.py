"""Runs of the catalog the way operators ask for them: ``db[-1]``, ``db[42]``, ``db["3f2a"]``.

:class:`Runs` wraps a Tiled catalog client (``storage.open_catalog``) with the
databroker idioms the NSLS-II profiles use:

* ``db[-1]`` the latest run, ``db[-2]`` the one before (by start time);
* ``db[42]`` the run whose ``scan_id`` is 42 (a scan id shared by several runs,
  as in catalogs written before scan ids persisted, is refused with their uids);
* ``db["3f2a9c"]`` a run by uid or unique uid prefix;
* ``db.search(plan="sxdm_map", sample="nmc622", since="2026-11-30", until=...)``
  another :class:`Runs` over the matching runs (newest first when iterated).

The same lookup serves the shell's ``db``, :func:`load_run` and the command line's
run names (:func:`load_run_from_text`).
"""

from __future__ import annotations

import datetime as _dt
import math

import numpy as np
from tiled.queries import Key, Like

from braggscope.core.errors import ArgumentError, InputError, UserError

__all__ = ["AmbiguousRunError", "RunNotFound", "Runs", "find_runs", "load_run", "load_run_from_text"]


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


def load_run(client, key):
    """One run of ``client`` by index (< 0), scan id (>= 0) or uid (prefix); see :class:`Runs`.

    Raises
    ------
    RunNotFound
        No such run (a ``KeyError`` and a ``UserError``).
    AmbiguousRunError
        Several runs share the scan id or the uid prefix (their uids are listed).
    """
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
    matches = client.search(Like("start.uid", f"{key}%")).values().head(11)  # one query, a uid or a prefix
    if not matches:
        raise RunNotFound(f"no run with uid {key!r} (or starting with it) in the catalog")
    if len(matches) > 1:
        uids = [_start(r).get("uid", "?") for r in matches[:10]]
        raise AmbiguousRunError(f"uid prefix {key!r} names {'more than 10' if len(matches) > 10 else len(matches)} "
                                f"runs: {', '.join(uids)}{' ...' if len(matches) > 10 else ''}")
    return matches[0]


def load_run_from_text(client, text: str):
    """A run named on a command line: ``"42"`` (scan id), ``"-1"`` (latest) or a uid prefix.

    An all-digit uid prefix is tried as a uid when no run has that scan id.
    """
    text = str(text).strip()
    if text.lstrip("-").isdigit():
        try:
            return load_run(client, int(text))
        except RunNotFound:
            if text.startswith("-"):
                raise
    return load_run(client, text)


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
        return load_run(self.client, key)

    def __len__(self) -> int:
        return len(self.client)

    def __iter__(self):
        """Runs, newest first (paged by the catalog, not read all at once)."""
        return iter(_newest(self.client).values())

    def search(self, plan: str | None = None, sample: str | None = None, since=None, until=None,
               **md) -> Runs:
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


def find_runs(client, **md) -> list:
    """Runs whose start document has every ``key=value`` given, newest first.

    >>> find_runs(client, plan_name="sxdm_map", sample="nmc622")  # doctest: +SKIP
    """
    return list(Runs(client).search(**md))
