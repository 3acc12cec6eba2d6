"""A run the catalog did not get whole is written from its journal by the next process that opens it.

- the catalog server lost mid-run and back only after the writing process has exited: the run says so at
  its stop (one line naming the journal), and the next process completes it (every event, each frame);
- a writer killed mid-run: its run is written whole from the journal, closed ``fail`` with the reason;
- a journal that cannot be read is moved aside with one line, not replayed at every open.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from braggscope import storage
from braggscope.core.config import load_config
from braggscope.storage import server as catalog_server
from braggscope.storage.journal import PREFIX
from braggscope.storage.locks import holds_writer_lock
from tests.service_helpers import catalog_server_config

from .conftest import assert_frames_where_events_say, kill_a_writer_mid_run

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

CHILD = """
import sys
from bluesky import RunEngine
from braggscope import storage
from braggscope.core.config import load_config
from braggscope.core.setup import ScanSetup
from braggscope.plans import sxdm_map
from braggscope.storage import server as catalog_server
from tests.faults.conftest import SHAPE, EncodingDevices

cfg = load_config(sys.argv[1])
client = storage.open_catalog(cfg)
RE = RunEngine(call_returns_result=True)
storage.subscribe_writer(RE, client, batch_size=1)
d = EncodingDevices(sys.argv[2])

def lose(name, doc):  # the server goes away after the 3rd point, for good (this process exits without it)
    if name == "event" and doc["seq_num"] == 3:
        catalog_server.stop_server(cfg)

RE.subscribe(lose)
setup = ScanSetup(energy_kev=8.33, distance_m=0.5, pixel_m=55e-6, cch=(4, 5), detector_shape=SHAPE, delta=18.0)
result = RE(sxdm_map([d.det], d.pix, (10, 14, 3), d.piy, (20, 22, 3), d.eta, [10.0], sample="lost-catalog",
                     setup=setup))
print("RESULT", result.exit_status, result.run_start_uids[0], flush=True)
"""


def test_a_run_the_catalog_lost_is_completed_by_the_next_process(tmp_path, monkeypatch):
    monkeypatch.delenv("BRAGGSCOPE_CATALOG_SERVER", raising=False)
    path = catalog_server_config(tmp_path)
    cfg = load_config(path)
    env = {**os.environ, "TILED_RETRY_TIMEOUT": "2"}
    env.pop("BRAGGSCOPE_CATALOG_SERVER", None)
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(tmp_path / "det")], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        status, uid = done.stdout.split("RESULT ")[1].split()
        assert status == "success"
        journal = cfg.expand_path("storage.data_dir") / "spool" / f"{PREFIX}{uid}.jsonl"
        assert journal.is_file()
        said = [line for line in done.stderr.splitlines() if "not confirmed by the catalog" in line]
        assert len(said) == 1 and str(journal) in said[0], done.stderr[-3000:]
        assert catalog_server.server_status(cfg)[0] is None  # still down when the session ended

        client = storage.open_catalog(cfg)  # a new process's open: starts the server, replays the journal
        assert not journal.exists()
        run = storage.load_run(client, uid)
        assert run.metadata["stop"]["exit_status"] == "success"
        assert run.metadata["stop"]["num_events"]["primary"] == 9
        report = assert_frames_where_events_say(run)  # all 9 events, each with its own frame
        assert report["events"] == 9
        assert storage.sxdm_stack(run).shape == (1, 3, 3)
        assert not list(journal.parent.glob("*.jsonl"))
    finally:
        catalog_server.stop_server(cfg)
        assert catalog_server.server_status(cfg)[0] is None


def test_a_killed_writers_run_is_written_whole_from_its_journal(tmp_path):
    data, det, _ = kill_a_writer_mid_run(tmp_path, journal=True)
    journals = list((data / "spool").glob(f"{PREFIX}*.jsonl"))
    assert len(journals) == 1
    cfg = load_config()
    cfg.set("storage.data_dir", str(data))
    cfg.set("storage.catalog_server", "off")
    cfg.set("detector.read_path", str(det))
    client = storage.open_catalog(cfg)
    (run,) = storage.find_runs(client, sample="killed-writer")
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "fail" and str(journals[0]) in stop["reason"]
    assert "ended before the run did" in stop["reason"] and stop["num_events"] == {"primary": 3}
    assert assert_frames_where_events_say(run)["events"] == 3
    assert not journals[0].exists()
    assert not holds_writer_lock(storage.catalog_handle(client).writer_lock)  # the replay gave it back


def test_an_unreadable_journal_is_set_aside_once(tmp_path, capfd):
    cfg = load_config()
    cfg.set("storage.data_dir", str(tmp_path / "data"))
    cfg.set("storage.catalog_server", "off")
    cfg.set("detector.read_path", str(tmp_path / "det"))
    spool = tmp_path / "data" / "spool"
    spool.mkdir(parents=True)
    bad = spool / f"{PREFIX}0000.jsonl"
    bad.write_text('["descriptor", {"uid": "d"}]\n')
    storage.open_catalog(cfg)
    err = capfd.readouterr().err
    assert f"journal {bad} cannot be replayed (it does not begin with a start document)" in err
    assert not bad.exists() and bad.with_name(bad.name + ".bad").exists()
    storage.open_catalog(cfg)
    assert "cannot be replayed" not in capfd.readouterr().err  # said once, not at every open
