"""The local catalog server: shared by several processes, stopped cleanly, and survived by a writer.

Every test starts its own server on 127.0.0.1 (its own data directory) and
stops it at the end (no process left behind).
"""

import json
import os
import subprocess
import sys
import time

import pytest

from braggscope import storage
from braggscope.core.config import load_config
from braggscope.storage import server as catalog_server
from braggscope.storage.locks import CatalogBusyError
from tests.service_helpers import catalog_server_config

pytestmark = pytest.mark.slow


@pytest.fixture
def server_cfg(tmp_path, monkeypatch):
    monkeypatch.delenv("BRAGGSCOPE_CATALOG_SERVER", raising=False)
    path = catalog_server_config(tmp_path)
    cfg = load_config(path)
    yield cfg, path
    catalog_server.stop_server(cfg)
    assert catalog_server.server_status(cfg)[0] is None


def _child_env():
    env = dict(os.environ)
    env.pop("BRAGGSCOPE_CATALOG_SERVER", None)
    return env


CHILD = """
import json, sys
from bluesky import RunEngine
from bluesky.plans import count
from ophyd.sim import det
from braggscope import storage
from braggscope.core.config import load_config
from braggscope.storage.runs import Runs
from braggscope.storage.scan_ids import install_scan_ids

cfg = load_config(sys.argv[1])
client = storage.open_catalog(cfg)
db = Runs(client)
out = {"before": [db[-1].metadata["start"]["uid"], db[1].metadata["start"]["uid"]] if len(db) else []}
if sys.argv[2] == "write":
    RE = RunEngine()
    storage.subscribe_writer(RE, client)
    install_scan_ids(RE, cfg, client)
    out["uid"] = RE(count([det], num=2), sample="child")[0]
    out["scan_id"] = db[-1].metadata["start"]["scan_id"]
print("RESULT " + json.dumps(out))
"""


def _child(path, mode):
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], capture_output=True, text=True,
                          timeout=300, env=_child_env())
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[7:]), done.stderr


def test_two_processes_share_the_catalog_and_scan_ids(server_cfg):
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import det

    from braggscope.storage.runs import Runs
    from braggscope.storage.scan_ids import install_scan_ids

    cfg, path = server_cfg
    client = storage.open_catalog(cfg)
    state, why = catalog_server.server_status(cfg)
    assert state is not None, why
    key_file = catalog_server.server_paths(cfg)["key"]
    assert key_file.stat().st_mode & 0o077 == 0  # the API key is readable by the user only
    RE = RunEngine()
    storage.subscribe_writer(RE, client)  # the shell's writer stays subscribed while the child writes
    install_scan_ids(RE, cfg, client)
    (first,) = RE(count([det], num=3), sample="parent")

    # a second process reads the run the first one wrote, and writes its own while the first is open
    child, stderr = _child(path, "write")
    assert child["before"] == [first, first]  # db[-1] and db[1] (scan id 1) from the other process
    assert child["scan_id"] == 2
    assert "started the local catalog server" not in stderr  # it found the running server

    (third,) = RE(count([det], num=1))
    db = Runs(client)
    assert [db[i].metadata["start"]["scan_id"] for i in (1, 2, 3)] == [1, 2, 3]
    assert db[-1].metadata["start"]["uid"] == third and db[2].metadata["start"]["uid"] == child["uid"]
    assert db[first[:8]].metadata["start"]["sample"] == "parent"
    assert [r.metadata["start"]["uid"] for r in db.search(sample="child")] == [child["uid"]]

    # the embedded catalog of the same files is refused a writer while the server holds them
    os.environ["BRAGGSCOPE_CATALOG_SERVER"] = "off"
    try:
        embedded = storage.open_catalog(cfg)
        with pytest.raises(CatalogBusyError):
            storage.subscribe_writer(RunEngine(), embedded)
    finally:
        del os.environ["BRAGGSCOPE_CATALOG_SERVER"]

    # stopped cleanly from the command line
    done = subprocess.run([sys.executable, "-m", "braggscope.app.cli", "--config", str(path), "catalog", "stop"],
                          capture_output=True, text=True, timeout=120, env=_child_env())
    assert done.returncode == 0 and f"stopped (pid {state['pid']})" in done.stdout
    assert catalog_server.server_status(cfg)[0] is None


def test_writer_keeps_documents_while_the_catalog_is_lost(server_cfg, capfd):
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import det

    from braggscope.storage.runs import Runs

    cfg, _ = server_cfg
    client = storage.open_catalog(cfg)
    port = catalog_server.server_status(cfg)[0]["port"]
    RE = RunEngine()
    storage.subscribe_writer(RE, client, batch_size=1)

    def lose(name, doc):  # the server goes away after point 2
        if name == "event" and doc["seq_num"] == 2:
            assert catalog_server.stop_server(cfg) is not None

    RE.subscribe(lose)
    (uid,) = RE(count([det], num=8))  # the scan goes on and ends
    spool = cfg.expand_path("storage.data_dir") / "spool"
    assert len(list(spool.glob("*.jsonl"))) == 1  # the documents are kept in a file as well as in memory
    said = capfd.readouterr().err
    assert f"catalog: run {uid} not confirmed by the catalog" in said, said  # said at the stop, in one line
    deadline = time.monotonic() + 60
    while "catalog: unreachable" not in said and time.monotonic() < deadline:
        time.sleep(0.5)
        said += capfd.readouterr().err
    assert "catalog: unreachable" in said
    assert catalog_server.server_status(cfg)[0] is None
    catalog_server.ensure_server(cfg)  # the catalog returns, at the same address
    assert catalog_server.server_status(cfg)[0]["port"] == port
    deadline = time.monotonic() + 120
    while list(spool.glob("*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not list(spool.glob("*.jsonl")), "the kept documents were not delivered"
    assert "catalog: answering again; delivered" in capfd.readouterr().err
    run = Runs(client)[-1]
    assert run.metadata["start"]["uid"] == uid
    assert run.metadata["stop"]["exit_status"] == "success"
    seq = list(run["primary"].base["internal"].read()["seq_num"])
    assert seq == list(range(1, 9))  # every point of the scan reached the catalog, once


def test_a_server_whose_state_file_is_gone_exits(server_cfg):
    from braggscope.core.processes import pid_alive

    cfg, _ = server_cfg
    catalog_server.ensure_server(cfg)
    state, why = catalog_server.server_status(cfg)
    assert state is not None, why
    catalog_server.server_paths(cfg)["state"].unlink()  # e.g. the data directory removed by hand
    deadline = time.monotonic() + 30
    while pid_alive(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(state["pid"]), "an orphaned catalog server kept running"


def test_the_catalog_is_a_bluesky_catalog_of_runs(server_cfg):
    """Any Tiled client indexes the local catalog server the bluesky way (bluesky-tiled-plugins' own
    CatalogOfBlueskyRuns), and braggscope's lookups agree with it."""
    from bluesky import RunEngine
    from bluesky.plans import count
    from bluesky_tiled_plugins.clients.catalog_of_bluesky_runs import CatalogOfBlueskyRuns
    from bluesky_tiled_plugins.queries import ScanIDRange, TimeRange
    from ophyd.sim import det
    from tiled.client import from_uri

    from braggscope.storage.runs import AmbiguousRunError, Runs
    from braggscope.storage.scan_ids import install_scan_ids

    cfg, _ = server_cfg
    client = storage.open_catalog(cfg)
    RE = RunEngine()
    storage.subscribe_writer(RE, client)
    install_scan_ids(RE, cfg, client)
    t0 = time.time()
    uids = [RE(count([det], num=1), sample=f"s{i}")[0] for i in range(3)]
    uri, key = catalog_server.ensure_server(cfg)
    fresh = from_uri(uri, api_key=key)  # a plain tiled client, not braggscope's
    assert isinstance(fresh, CatalogOfBlueskyRuns) and isinstance(client, CatalogOfBlueskyRuns)
    scan_ids = [fresh[u].metadata["start"]["scan_id"] for u in uids]
    assert fresh[-1].metadata["start"]["uid"] == uids[-1]
    assert fresh[scan_ids[1]].metadata["start"]["uid"] == uids[1]
    assert fresh[uids[0][:8]].metadata["start"]["uid"] == uids[0]
    assert len(fresh.search(TimeRange(since=t0 - 1))) == 3
    assert len(fresh.search(ScanIDRange(scan_ids[0], scan_ids[2]))) == 2
    db = Runs(client)  # the shell's db: the same answers
    assert db[-1].metadata["start"]["uid"] == uids[-1] and db[scan_ids[1]].metadata["start"]["uid"] == uids[1]
    assert db[uids[0][:8]].metadata["start"]["uid"] == uids[0] and db[uids[0]].metadata["start"]["uid"] == uids[0]
    RE.scan_id_source = lambda md: scan_ids[2]  # a run reusing the last scan id: ambiguous for db, named
    RE(count([det], num=1))
    with pytest.raises(AmbiguousRunError, match=f"scan id {scan_ids[2]} names 2 runs"):
        db[scan_ids[2]]
