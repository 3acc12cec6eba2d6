"""Runs left open by a writer that died: found, and closed with a stop document.

A writer process that exits normally closes its open runs (``storage.background``,
at interpreter exit); one killed with SIGKILL, or by the machine going down,
cannot. Its run's journal, when it kept one, completes the run
(``storage.journal``); for a run without one, this module is the fallback.
The catalog writer records who writes each run in its start document
(``braggscope_writer``: host, pid and the process's start time,
``storage.catalog_writer``). Whenever a braggscope process opens the catalog
(``storage.catalog.open_catalog``), the runs of this host without a stop
document are looked up (one query) and each whose writer is provably gone
(its pid no longer runs, or now runs a process started at another time: the
pid was reused) gets a stop document ``exit_status = "fail"`` with the reason
and the number of events that reached the catalog, all of which are kept.
A run whose writer still runs, or was written on another host, is left alone.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid

from braggscope.core.processes import pid_alive

__all__ = ["close_dead_writer_runs", "process_start_ticks", "writer_identity", "writer_is_dead"]

#: Start-document key naming the process that writes the run (set by ``storage.catalog_writer``).
WRITER_KEY = "braggscope_writer"


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat``); None where unknown.

    With the pid it names one process for the life of the machine: a pid reused
    by another program has another start time.
    """
    try:
        with open(f"/proc/{int(pid)}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def writer_identity() -> dict:
    """``{"host", "pid", "start_ticks"}`` of this process."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid())}


def writer_is_dead(writer: dict) -> bool:
    """Whether the process a run's ``braggscope_writer`` names is provably gone (on this host).

    Parameters
    ----------
    writer : dict
        ``{"host", "pid", "start_ticks"}`` from the run's start document.
    """
    if writer.get("host") != socket.gethostname():
        return False  # another machine's process: nothing can be proved from here
    try:
        pid = int(writer["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    if not pid_alive(pid):
        return True
    started, now = writer.get("start_ticks"), process_start_ticks(pid)
    return started is not None and now is not None and int(started) != now  # the pid was reused


def close_dead_writer_runs(client, *, echo=None) -> list[str]:
    """Close every run of this host that has no stop document and whose writer died.

    Parameters
    ----------
    client : tiled client of the catalog (writable)
    echo : callable, optional
        Called with one line per run closed (default: print to stderr).

    Returns
    -------
    list of str
        The uids of the runs closed.
    """
    from tiled.queries import Key, KeyPresent

    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    found = client.search(KeyPresent("stop", exists=False)).search(
        Key(f"start.{WRITER_KEY}.host") == socket.gethostname())
    closed = []
    for run in list(found.values()):
        start = run.metadata.get("start") or {}
        writer = start.get(WRITER_KEY) or {}
        if run.metadata.get("stop") or not writer_is_dead(writer):
            continue
        events = _events(run)
        reason = (f"writer process {writer['pid']} on {writer['host']} died with the run open (killed?); run "
                  f"closed by braggscope process {os.getpid()} on opening the catalog; the "
                  f"{sum(events.values())} events that reached the catalog are kept")
        stop = {"uid": str(uuid.uuid4()), "run_start": start.get("uid", run.item["id"]), "time": time.time(),
                "exit_status": "fail", "reason": reason, "num_events": events}
        run.update_metadata(metadata={"stop": stop}, drop_revision=True)
        closed.append(stop["run_start"])
        echo(f"catalog: closed run {stop['run_start']} (scan {start.get('scan_id', '?')}): {reason}")
    return closed


def _events(run) -> dict[str, int]:
    """Events per stream of a run, as stored in the catalog (its table rows)."""
    counts = {}
    for name in run:
        try:
            table = run[name].base["internal"]
            counts[name] = len(table.read(["seq_num"]))
        except (KeyError, ValueError):  # a stream with no row yet
            counts[name] = 0
    return counts
