"""A writer killed with SIGKILL mid-run: the next process that opens the catalog closes its run.

The run keeps every event that reached the catalog, each with its own frame, and its stop document
says what happened (``exit_status = "fail"``, the reason naming the dead writer's pid)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from braggscope import storage
from braggscope.core.config import load_config
from braggscope.storage.recovery import close_dead_writer_runs, writer_identity, writer_is_dead

from .conftest import assert_frames_where_events_say

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_killed_writers_run_is_closed_by_the_next_process(tmp_path):
    data, det, marker = tmp_path / "data", tmp_path / "det", tmp_path / "hanging"
    child = subprocess.Popen([sys.executable, "-m", "tests.faults.writer_child", "hang", str(data), str(det),
                              str(marker)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), child.communicate(timeout=10)[0][-3000:] if child.poll() is not None else "timeout"
        os.kill(child.pid, signal.SIGKILL)  # mid-run, during the 4th exposure
    finally:
        child.kill()
        child.wait(30)
    cfg = load_config()
    cfg.set("storage.data_dir", str(data))
    cfg.set("storage.catalog_server", "off")
    cfg.set("detector.read_path", str(det))
    client = storage.open_catalog(cfg)  # opening closes the dead writer's run
    (run,) = storage.find_runs(client, sample="killed-writer")
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "fail"
    assert stop["reason"].startswith(f"writer process {child.pid} on ") and "died" in stop["reason"]
    assert stop["num_events"] == {"primary": 3}
    assert run.metadata["start"]["braggscope_writer"]["pid"] == child.pid
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
