"""Catalog faults: concurrent writers, concurrent creation, a writer that exits with a run open,
stale lock files, a full disk for the detector files and for the catalog, missing and truncated
detector files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from braggscope import storage
from braggscope.core.setup import ScanSetup
from braggscope.plans import sxdm_map
from braggscope.storage.locks import CatalogBusyError, acquire_writer_lock, release_writer_lock

from .conftest import SHAPE, assert_frames_where_events_say, frames_match_events
from .disk import tmpfs

ROOT = Path(__file__).resolve().parents[2]
SETUP = ScanSetup(energy_kev=8.33, distance_m=0.5, pixel_m=55e-6, cch=(4, 5), detector_shape=SHAPE, delta=18.0)


def _map(d, sample, det=None, n_x=3):
    return sxdm_map([det or d.det], d.pix, (10, 14, n_x), d.piy, (20, 22, 2), d.eta, [10.0], sample=sample,
                    setup=SETUP)


# -- concurrent writers, stale locks -------------------------------------------------------------
def test_writer_lock_refuses_a_live_holder_and_ignores_a_stale_file(tmp_path):
    root = tmp_path / "catalog"
    root.mkdir()
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from braggscope.storage.locks import acquire_writer_lock; "
                               f"acquire_writer_lock({str(root)!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CatalogBusyError, match=rf"another process \(pid {holder.pid}: "):
            acquire_writer_lock(root)
    finally:
        holder.kill()
        holder.wait(10)
    # the holder died: its lock file (with its dead pid) is stale and blocks no one
    assert str(holder.pid) in (root / "writer.lock").read_text()
    acquire_writer_lock(root)
    assert json.loads((root / "writer.lock").read_text())["pid"] == os.getpid()
    release_writer_lock(root)


@pytest.mark.slow
def test_two_processes_on_one_new_catalog(tmp_path):
    """Both create the catalog at once (no DatabaseInitializationError); the second writer is refused
    with a clear message; the first exits with its run open and paused: the run still gets a stop
    document (exit status abort, the reason saying so)."""
    data, det = tmp_path / "data", tmp_path / "det"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.faults.writer_child", str(data), str(det),
                               str(tmp_path / f"child{i}.json"), str(tmp_path / f"child{1 - i}.json")], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outputs)
    results = [json.loads((tmp_path / f"child{i}.json").read_text()) for i in range(2)]
    assert not any("open_error" in r for r in results), results
    refused = [r for r in results if "refused" in r]
    wrote = [r for r in results if "run" in r]
    assert len(refused) == 1 and len(wrote) == 1, results
    assert "is being written by another process (pid " in refused[0]["refused"]
    assert wrote[0]["state"] == "paused"
    from braggscope.core.config import load_config

    cfg = load_config()
    cfg.set("storage.data_dir", str(data))
    cfg.set("detector.read_path", str(det))
    run = storage.open_catalog(cfg)[wrote[0]["run"]]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "abort" and "exited while the run was open" in stop["reason"]
    assert stop["num_events"]["primary"] == 2
    assert_frames_where_events_say(run)


# -- full disk -------------------------------------------------------------------------------
@pytest.fixture()
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only; skipped where mounting is not permitted)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    with tmpfs(mnt, "1m"):
        yield mnt


def _disk_child(which, small, tmp_path):
    out = tmp_path / f"{which}.json"
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "tests.faults.disk_child", which, str(small), str(work), str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_full_disk_for_the_detector_files(small_disk, tmp_path):
    result = _disk_child("detector", small_disk, tmp_path)
    # the run says what happened: it failed, naming the device, the point and the disk
    assert result["exit_status"] == "fail"
    assert result["reason"].startswith("mpx1x4 failed at point ") and "No space left on device" in result["reason"]
    assert 1 <= result["events"] < 20
    # every frame written before the disk filled is where its event says
    check = frames_match_events(result["docs"], "mpx1x4_total")
    assert check["paired"] == result["events"] and check["frames_ok"]


@pytest.mark.slow
def test_full_disk_for_the_catalog(small_disk, tmp_path):
    result = _disk_child("catalog", small_disk, tmp_path)
    if "open_error" in result:  # the empty catalog itself did not fit: refused at once
        assert "space" in result["open_error"].lower() or "full" in result["open_error"].lower()
        return
    assert "catalog writer failed" in result["error"] and "full" in result["error"].lower(), result["error"]
    # the frames of the failed run are on their own disk, each where its event says
    check = frames_match_events(result["docs"], "mpx1x4_total")
    assert check["frames_ok"] and check["paired"] >= 2
    # the stop document, when the writer's error let it reach the other callbacks, says so too
    assert result["exit_status"] in (None, "fail") and "full" in (result["reason"] or "full").lower()


# -- missing and truncated detector files ------------------------------------------------------
def test_missing_and_truncated_detector_files_are_named(inprocess, tmp_path):
    RE, client, d, docs = inprocess
    RE(_map(d, "to-be-damaged"))
    (run,) = storage.find_runs(client, sample="to-be-damaged")
    path = Path(d.det.last_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(Exception) as info:
        np.asarray(storage.event_frames(run))
    assert path.name in str(info.value)  # the file is named, and nothing is sliced
    assert isinstance(info.value, (ValueError, OSError))
    path.unlink()  # missing
    with pytest.raises(Exception) as info:
        np.asarray(storage.event_frames(run))
    assert path.name in str(info.value) and isinstance(info.value, OSError)
