"""A writer killed with SIGKILL mid-run: the next process that opens the catalog closes its run.

The run keeps every event that reached the catalog, each with its own frame, and its stop document
says what happened (``exit_status = "fail"``, the reason naming the dead writer's pid)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from braggscope import storage
from braggscope.core.config import load_config
from braggscope.storage.recovery import close_dead_writer_runs, writer_identity, writer_is_dead

from .conftest import assert_frames_where_events_say, kill_a_writer_mid_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_killed_writers_run_is_closed_by_the_next_process(tmp_path):
    data, det, pid = kill_a_writer_mid_run(tmp_path)
    cfg = load_config()
    cfg.set("storage.data_dir", str(data))
    cfg.set("storage.catalog_server", "off")
    cfg.set("detector.read_path", str(det))
    client = storage.open_catalog(cfg)  # opening closes the dead writer's run
    (run,) = storage.find_runs(client, sample="killed-writer")
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "fail"
    assert stop["reason"].startswith(f"writer process {pid} on ") and "died" in stop["reason"]
    assert stop["num_events"] == {"primary": 3}
    assert run.metadata["start"]["braggscope_writer"]["pid"] == pid
    report = assert_frames_where_events_say(run)  # the 3 events kept, each with its own frame
    assert report["events"] == 3
    assert close_dead_writer_runs(client) == []  # closed once


def test_a_live_or_foreign_writer_is_not_declared_dead():
    me = writer_identity()
    assert not writer_is_dead(me)
    assert writer_is_dead(dict(me, start_ticks=me["start_ticks"] + 1))  # our pid, another start: reused
    assert not writer_is_dead(dict(me, host=me["host"] + "-elsewhere"))  # another host: cannot tell
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert writer_is_dead(dict(me, pid=gone.pid, start_ticks=None))
