"""Every document of a run kept in a file until the catalog confirms the run, and replayed otherwise.

A writer process appends each document of the runs it writes to ``<spool>/braggscope-run-<uid>.jsonl``
as the RunEngine emits it (:class:`RunJournal`), holding an exclusive lock on the file, and removes the
file once the catalog has stored the run's stop document. A journal left behind (the catalog lost until
the process ended, the process killed) is unlocked; the next braggscope process that opens the catalog
writes the run from it (:func:`replay_journals`) before anything else: a run already in the catalog in
part is written again whole, a run that never got its stop document is closed ``fail`` with a reason
saying so, and every event keeps its frames. A journal that cannot be read is moved aside
(``*.jsonl.bad``) with one line, never replayed for ever.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

__all__ = ["RunJournal", "journal_path", "replay_journals"]

PREFIX = "braggscope-run-"


def journal_path(spool_dir, uid: str) -> Path:
    """The journal file of run ``uid`` under ``spool_dir``."""
    return Path(spool_dir) / f"{PREFIX}{uid}.jsonl"


class RunJournal:
    """The documents of the runs one writer writes, each run in its own locked file.

    Parameters
    ----------
    spool_dir : path-like
        Where the journals live (``<storage.data_dir>/spool``).
    """

    def __init__(self, spool_dir):
        self.spool_dir = Path(spool_dir)
        self._files: dict[str, object] = {}  # run uid -> open file (locked)
        self._owner: dict[str, str] = {}  # descriptor, resource and stream resource uid -> run uid

    def record(self, name: str, doc: dict) -> None:
        """Append one document to its run's journal (the write reaches the OS before this returns)."""
        uid = self._run_of(name, doc)
        handle = self._open(uid) if name == "start" else self._files.get(uid)
        if handle is None:
            return  # a document of a run this writer did not see start
        handle.write(json.dumps([name, doc], default=_json_default) + "\n")
        handle.flush()

    def path(self, uid: str) -> Path:
        return journal_path(self.spool_dir, uid)

    def confirmed(self, uid: str) -> None:
        """The catalog stored run ``uid`` whole: its journal goes."""
        handle = self._files.pop(uid, None)
        if handle is not None:
            self.path(uid).unlink(missing_ok=True)
            handle.close()
        self._owner = {k: v for k, v in self._owner.items() if v != uid}

    def kept(self) -> list[Path]:
        """The journals of runs not confirmed yet."""
        return [self.path(uid) for uid in self._files]

    def _open(self, uid: str):
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.path(uid), "a")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when this process ends
        self._files[uid] = handle
        return handle

    def _run_of(self, name: str, doc: dict) -> str | None:
        if name == "start":
            return doc["uid"]
        if name in ("descriptor", "resource", "stream_resource", "stop"):
            if name != "stop":
                self._owner[doc["uid"]] = doc.get("run_start")
            return doc.get("run_start")
        key = {"event": "descriptor", "event_page": "descriptor", "datum": "resource",
               "datum_page": "resource", "stream_datum": "stream_resource"}.get(name)
        return self._owner.get(doc.get(key)) if key else None


def replay_journals(client, spool_dir, *, writer_factory, echo=None) -> list[str]:
    """Write to the catalog every run whose journal a finished writer left in ``spool_dir``.

    Parameters
    ----------
    client : tiled client (writable)
    spool_dir : path-like
    writer_factory : callable
        ``writer_factory(client)`` returns a document callback writing to the catalog
        (``storage.catalog_writer.CatalogWriter``).
    echo : callable, optional
        One line per run written or journal set aside (default: stderr).

    Returns
    -------
    list of str
        The uids of the runs written.
    """
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    written = []
    for path in sorted(Path(spool_dir).glob(f"{PREFIX}*.jsonl")) if Path(spool_dir).is_dir() else []:
        with open(path, "r+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive (or another process replays it now)
            try:
                docs = _read(handle, path)
            except ValueError as exc:
                _set_aside(path, f"{exc}", echo)
                continue
            uid = docs[0][1]["uid"]
            try:
                status = _write_run(client, docs, path, writer_factory)
            except Exception as exc:  # noqa: BLE001 - e.g. a read-only key: the journal waits for the next open
                echo(f"catalog: run {uid} not written from its journal {path} ({type(exc).__name__}: {exc}); "
                     "kept for the next process that opens the catalog")
                continue
            path.unlink(missing_ok=True)
        written.append(uid)
        echo(f"catalog: run {uid} written from its journal {path} ({len(docs)} documents, {status})")
    return written


def _read(handle, path) -> list:
    docs = []
    for number, line in enumerate(handle, 1):
        if not line.endswith("\n"):
            break  # the last line of a writer killed while writing it
        try:
            name, doc = json.loads(line)
        except (ValueError, TypeError):
            raise ValueError(f"line {number} is not a document") from None
        docs.append((name, doc))
    if not docs or docs[0][0] != "start":
        raise ValueError("it does not begin with a start document")
    return docs


def _set_aside(path: Path, why: str, echo) -> None:
    bad = path.with_name(path.name + ".bad")
    os.replace(path, bad)
    echo(f"catalog: journal {path} cannot be replayed ({why}); moved to {bad}")


def _write_run(client, docs, path, writer_factory) -> str:
    """Write the journal's run (whole, replacing a partial copy); returns how the run ended."""
    uid = docs[0][1]["uid"]
    if uid in client:
        stored = client[uid].metadata.get("stop")
        if stored and stored.get("num_events") == _events(docs):
            return f"exit status {stored.get('exit_status')!r}, already complete in the catalog"
        client.delete_contents(uid, recursive=True, external_only=False)  # rewritten whole from the journal
    if docs[-1][0] != "stop":
        docs = docs + [("stop", {"uid": str(uuid.uuid4()), "run_start": uid, "time": time.time(),
                                 "exit_status": "fail", "num_events": _events(docs),
                                 "reason": f"the process writing this run ended before the run did (killed?); "
                                           f"the {sum(_events(docs).values())} events it emitted were written "
                                           f"from its journal {path}"})]
    writer = writer_factory(client)
    for name, doc in docs:
        writer(name, doc)
    return f"exit status {docs[-1][1].get('exit_status')!r}"


def _events(docs) -> dict[str, int]:
    """Events per stream name of a journal's documents."""
    streams = {doc["uid"]: doc.get("name", "primary") for name, doc in docs if name == "descriptor"}
    counts = dict.fromkeys(streams.values(), 0)
    for name, doc in docs:
        if name == "event":
            counts[streams[doc["descriptor"]]] += 1
        elif name == "event_page":
            counts[streams[doc["descriptor"]]] += len(doc["seq_num"])
    return counts


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
