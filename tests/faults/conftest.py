"""Fixtures of the fault-injection suite: an embedded catalog and in-process devices whose frames
encode where the motors were (an independent truth for "every frame is where its event says")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from bluesky import RunEngine

from braggscope import storage
from braggscope.core.config import load_config
from braggscope.simulators.inprocess import HDF5ImageDetector, LimitedSynAxis

ROOT = Path(__file__).resolve().parents[2]

SHAPE = (8, 10)


class EncodingDevices:
    """pix, piy, eta and a detector whose frame [0, :3] holds pix, piy, eta x 1000 at exposure time."""

    def __init__(self, write_dir):
        self.pix = LimitedSynAxis(name="pix", limits=(0, 100))
        self.piy = LimitedSynAxis(name="piy", limits=(0, 100))
        self.eta = LimitedSynAxis(name="eta", limits=(-5, 120))
        self.count = 0
        self.det = HDF5ImageDetector(render=self.render, write_dir=write_dir, shape=SHAPE)

    def render(self):
        self.count += 1
        frame = np.random.default_rng(self.count).poisson(3.0, SHAPE).astype(np.uint32)
        frame[0, 0] = int(round(self.pix.position * 1000))
        frame[0, 1] = int(round(self.piy.position * 1000))
        frame[0, 2] = int(round(self.eta.position * 1000))
        return frame


@pytest.fixture(scope="session")
def fault_catalog(tmp_path_factory):
    """(cfg, client, detector directory) of an embedded catalog shared by the suite."""
    root = tmp_path_factory.mktemp("faults")
    cfg = load_config()
    cfg.set("storage.data_dir", str(root / "data"))
    cfg.set("detector.read_path", str(root / "detector"))
    cfg.set("detector.write_path", str(root / "detector"))
    return cfg, storage.open_catalog(cfg), root / "detector"


@pytest.fixture()
def inprocess(fault_catalog):
    """(RE, client, devices, docs): a fresh RunEngine writing to the suite's catalog."""
    _, client, det_dir = fault_catalog
    RE = RunEngine(call_returns_result=True)
    storage.subscribe_writer(RE, client)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return RE, client, EncodingDevices(det_dir), docs


def interrupt_at(RE, command, obj=None, nth=1, action=None):
    """Call ``action()`` (default: an immediate pause, Ctrl-C twice) from another thread when the
    RunEngine processes the ``nth`` message ``command`` (on ``obj`` if given).

    The hook holds the RunEngine for 0.2 s so the request lands during that message.
    """
    seen = {"n": 0}
    action = action or (lambda: RE.request_pause(defer=False))

    def hook(msg):
        if msg.command != command or (obj is not None and msg.obj is not obj):
            return
        seen["n"] += 1
        if seen["n"] == nth:
            threading.Thread(target=action, daemon=True).start()
            time.sleep(0.2)

    RE.msg_hook = hook
    return seen


def assert_frames_where_events_say(run, devices=None):
    """Each event's frame (as the readers pair them) encodes the event's recorded motor positions,
    and its sum is the total the detector recorded with the event."""
    report = storage.verify_frames(run)
    table = run["primary"].read(["pix", "piy"])
    frames = np.asarray(storage.event_frames(run))
    np.testing.assert_array_equal(frames[:, 0, 0], np.round(np.asarray(table["pix"]) * 1000))
    np.testing.assert_array_equal(frames[:, 0, 1], np.round(np.asarray(table["piy"]) * 1000))
    return report


def frames_match_events(docs, total_key) -> dict:
    """Pair each emitted event with its frame by unique id in the detector file (independently of
    braggscope's readers) and compare the frame's sum with the total recorded with the event."""
    from pathlib import Path

    import h5py

    from braggscope.storage.frames import UNIQUE_ID_DATASET

    events = [doc for name, doc in docs if name == "event"]
    resources = [doc for name, doc in docs if name == "resource"]
    if not events:
        return {"paired": 0, "frames_ok": True}
    res = resources[0]
    with h5py.File(Path(res["root"]) / res["resource_path"], "r", swmr=True) as f:
        ids = [int(u) for u in f[UNIQUE_ID_DATASET][()]]
        frames = f["/entry/data/data"]
        ok = True
        for ev in events:
            uid = int(ev["data"]["mpx1x4_unique_id"])
            ok &= uid in ids and float(frames[ids.index(uid)].sum(dtype=np.float64)) == float(ev["data"][total_key])
        return {"paired": len(events), "frames_in_file": len(ids), "frames_ok": bool(ok)}


def kill_a_writer_mid_run(tmp_path, *, journal: bool = False):
    """Start a writer child (``writer_child hang``) and SIGKILL it during its map's 4th exposure.

    Returns ``(data_dir, detector_dir, pid)`` of the killed writer.
    """
    data, det, marker = tmp_path / "data", tmp_path / "det", tmp_path / "hanging"
    child = subprocess.Popen([sys.executable, "-m", "tests.faults.writer_child", "hang", str(data), str(det),
                              str(marker)] + (["journal"] if journal else []), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), child.communicate(timeout=10)[0][-3000:] if child.poll() is not None else "timeout"
        os.kill(child.pid, signal.SIGKILL)  # mid-run, during the 4th exposure
    finally:
        child.kill()
        child.wait(30)
    return data, det, child.pid
