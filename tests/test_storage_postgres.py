"""Production storage: a real ``tiled serve config`` server on a PostgreSQL catalog, 127.0.0.1, with an API key.

The server runs from the configuration file braggscope writes for it
(:func:`braggscope.storage.adapter.write_server_config`): its root is a bluesky catalog of runs,
indexed by bluesky-tiled-plugins from a fresh tiled client.

Needs the local PostgreSQL (127.0.0.1:5432, user postgres, trust auth); a fresh
database is created for the module and dropped at the end. Skipped, with the
reason, when PostgreSQL is unreachable. The server is started, killed and
restarted by the tests; nothing is left running (checked at the end).
"""

import os
import signal
import subprocess
import threading
import time
import uuid

import numpy as np
import pytest

from braggscope.storage.adapter import write_server_config
from tests.service_helpers import assert_no_process_left, free_port, listening_addresses, postgres_or_skip, psql

pytestmark = [pytest.mark.postgres, pytest.mark.services]


class TiledServer:
    """``tiled serve config`` of a PostgreSQL catalog, restartable on the same port and database."""

    def __init__(self, db, root):
        self.db, self.root = db, root
        self.port, self.key = free_port(), uuid.uuid4().hex
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log = open(root / "server.log", "ab")

    def start(self, timeout=120):
        database = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.db}"
        config = write_server_config(self.root / "config.yml", database,
                                     writable_storage=[self.root / "data", f"duckdb:///{self.root / 'tables.duckdb'}"],
                                     readable_storage=[self.root / "detector"])
        cmd = ["tiled", "serve", "config", str(config), "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "TILED_SINGLE_USER_API_KEY": self.key})
        deadline = time.monotonic() + timeout
        while not listening_addresses(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"tiled server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"tiled server did not start in {timeout} s")
            time.sleep(0.2)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def tiled_server(tmp_path_factory):
    postgres_or_skip()
    db = f"braggscope_test_{uuid.uuid4().hex[:10]}"
    created = psql(f"CREATE DATABASE {db}")
    assert created.returncode == 0, created.stderr
    root = tmp_path_factory.mktemp("tiled-server")
    (root / "data").mkdir()
    (root / "detector").mkdir()
    server = TiledServer(db, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        server.log.close()
        psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        assert_no_process_left(db, ports=[server.port])


def _catalog(server, monkeypatch):
    from braggscope import storage
    from braggscope.core.config import load_config

    cfg = load_config()
    cfg.set("storage.data_dir", str(server.root / "client"))  # the writers' journals: the test's own
    cfg.set("storage.tiled_uri", server.uri)
    cfg.set("storage.api_key", server.key)
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    return cfg, storage.open_catalog(cfg)


def _devices(cfg, root, shape=(32, 40)):
    """In-process beamline devices whose detector writes small frames into the server's readable directory."""
    from braggscope.simulators.beamline import SimulatedBeamline
    from braggscope.simulators.inprocess import make_inprocess_devices

    cfg.set("detector.shape", list(shape))
    cfg.set("detector.cch", [shape[0] / 2, shape[1] / 2])
    return make_inprocess_devices(SimulatedBeamline.from_config(cfg), root / "detector", limits=cfg["limits"])


def _run_engine(client, devices):
    from bluesky import RunEngine

    from braggscope import storage
    from braggscope.app.beamline.runengine import install_baseline

    RE = RunEngine(call_returns_result=True)
    install_baseline(RE, devices)
    storage.subscribe_writer(RE, client)
    return RE


def test_production_round_trip(tiled_server, monkeypatch):
    import h5py
    from bluesky import RunEngine

    from braggscope import storage
    from braggscope.core.config import load_config
    from braggscope.plans import sxdm_map
    from braggscope.simulators.inprocess import HDF5ImageDetector, LimitedSynAxis

    uri, key, root = tiled_server.uri, tiled_server.key, tiled_server.root
    assert listening_addresses(tiled_server.port) == {"127.0.0.1"}  # loopback only
    cfg = load_config()
    cfg.set("storage.tiled_uri", uri)
    cfg.set("storage.api_key", "")
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    with pytest.raises(ValueError, match="storage.api_key"):
        storage.open_catalog(cfg)
    monkeypatch.setenv("TILED_API_KEY", key)
    client = storage.open_catalog(cfg)
    pix, piy, eta = (LimitedSynAxis(name=n, limits=(-10, 120)) for n in ("pix", "piy", "eta"))
    rng = np.random.default_rng(0)
    det = HDF5ImageDetector(render=lambda: rng.poisson(5, (8, 10)).astype(np.uint32), write_dir=root / "detector",
                            shape=(8, 10))
    RE = RunEngine(call_returns_result=True)
    storage.subscribe_writer(RE, client)
    uid = RE(sxdm_map([det], pix, (0, 2, 3), piy, (0, 1, 2), eta, [1.0, 2.0], sample="pg")).run_start_uids[0]
    run = storage.load_run(client, uid)
    assert run.metadata["stop"]["exit_status"] == "success"
    frames = storage.sxdm_stack(run).frames
    with h5py.File(det.last_path, "r") as f:
        written = f["/entry/data/data"][()]
    got = frames.compute()
    np.testing.assert_array_equal(got[0, 0], written[:3])
    np.testing.assert_array_equal(got[1, 1, ::-1], written[9:12])
    assert [r.metadata["start"]["uid"] for r in storage.find_runs(client, sample="pg")] == [uid]
    # a fresh tiled client sees a bluesky catalog of runs: bluesky-tiled-plugins' own indexing
    from bluesky_tiled_plugins.queries import ScanID, TimeRange
    from tiled.client import from_uri

    fresh = from_uri(uri, api_key=key)
    assert type(fresh).__name__ == "CatalogOfBlueskyRuns" and "CatalogOfBlueskyRuns" in str(fresh.specs)
    scan_id = run.metadata["start"]["scan_id"]
    for key_ in (-1, uid[:8], uid):
        assert fresh[key_].metadata["start"]["uid"] == uid, key_
    assert fresh[scan_id].metadata["start"]["uid"] == uid
    assert uid in list(fresh.search(ScanID(scan_id)))
    started = run.metadata["start"]["time"]
    assert uid in list(fresh.search(TimeRange(since=started - 1)))
    assert uid not in list(fresh.search(TimeRange(until=started - 1)))
    # requests without a valid key are refused by the server
    import httpx

    for headers in ({}, {"Authorization": "Apikey not-the-key"}):
        assert httpx.get(f"{uri}/api/v1/metadata/", headers=headers, timeout=10).status_code == 401
    assert httpx.get(f"{uri}/api/v1/metadata/", headers={"Authorization": f"Apikey {key}"},
                     timeout=10).status_code == 200
    cfg.set("storage.api_key", "not-the-key")
    monkeypatch.delenv("TILED_API_KEY")
    with pytest.raises(Exception, match="401|[Uu]nauthori[sz]ed|[Ii]nvalid|requires API key"):
        list(storage.open_catalog(cfg).keys())


def test_a_notebook_reads_the_run_while_it_is_written(tiled_server, monkeypatch):
    """A second client (a notebook) sees the events arrive during the run, and the whole map at its end."""
    from braggscope import storage
    from braggscope.plans import sxdm_map

    cfg, client = _catalog(tiled_server, monkeypatch)
    devices = _devices(cfg, tiled_server.root)
    RE = _run_engine(client, devices)
    reader = storage.open_catalog(cfg)  # another client: another connection, as a notebook would have
    sample = f"during-{uuid.uuid4().hex[:6]}"
    plan = sxdm_map([devices["mpx1x4"]], devices["pix"], (0, 4, 10), devices["piy"], (0, 4, 10), devices["eta"],
                    [9.0, 9.1], sample=sample)
    seen, done = [], threading.Event()

    def notebook():  # reads while the RunEngine (main thread) acquires
        while not done.is_set():
            runs = storage.find_runs(reader, sample=sample)
            if runs and "primary" in runs[0] and not runs[0].metadata.get("stop"):
                try:
                    seen.append(len(runs[0]["primary"].read(variables=["pix"])["pix"]))
                except KeyError:  # the stream is described, its first events not written yet
                    pass
            time.sleep(0.2)

    watcher = threading.Thread(target=notebook)
    watcher.start()
    try:
        result = {"r": RE(plan)}
    finally:
        done.set()
        watcher.join()
    assert any(0 < n < 200 for n in seen), seen  # partial runs were readable while they were written
    run = storage.load_run(reader, result["r"].run_start_uids[0])
    assert storage.sxdm_stack(run).shape == (2, 10, 10)


def test_reduce_cli_sends_the_reduction_to_the_configured_dask_cluster(tiled_server, monkeypatch, tmp_path):
    """``[analysis] dask_scheduler`` takes ``braggscope reduce sxdm`` of a catalog run to a distributed cluster."""
    distributed = pytest.importorskip("distributed")

    from braggscope.analysis.sxdm.files import load_maps
    from braggscope.app.cli.main import main
    from braggscope.core.config import save_config
    from braggscope.plans import sxdm_map

    cfg, client = _catalog(tiled_server, monkeypatch)
    devices = _devices(cfg, tiled_server.root)
    RE = _run_engine(client, devices)
    uid = RE(sxdm_map([devices["mpx1x4"]], devices["pix"], (0, 2, 4), devices["piy"], (0, 2, 3), devices["eta"],
                      [9.0, 9.05, 9.1], sample="dask")).run_start_uids[0]
    local = tmp_path / "local.toml"
    save_config(cfg, local)
    assert main(["--config", str(local), "reduce", "sxdm", uid, "--out", str(tmp_path / "threads.h5"),
                 "--quiet"]) == 0
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        cfg.set("analysis.dask_scheduler", cluster.scheduler_address)
        remote = tmp_path / "remote.toml"
        save_config(cfg, remote)
        with distributed.Client(cluster) as watcher:
            prefixes = watcher.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
            assert "reduce_block" not in prefixes
            assert main(["--config", str(remote), "reduce", "sxdm", uid, "--out", str(tmp_path / "dask.h5"),
                         "--quiet"]) == 0
            prefixes = watcher.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert "reduce_block" in prefixes  # the reduction's block tasks ran on the cluster
    threads, dask_maps = load_maps(tmp_path / "threads.h5"), load_maps(tmp_path / "dask.h5")
    for name in ("intensity", "d_spacing", "strain", "tilt_altitude"):
        np.testing.assert_allclose(dask_maps[name].values, threads[name].values, equal_nan=True, rtol=1e-6)
    cfg.set("analysis.dask_scheduler", "not-an-address")
    save_config(cfg, remote)
    assert main(["--config", str(remote), "reduce", "sxdm", uid, "--out", str(tmp_path / "x.h5")]) == 2
    assert not (tmp_path / "x.h5").exists()


def _stored_run(cfg, uid, timeout=120.0):
    """The run once the catalog has its stop: documents kept during an outage are delivered when the
    server answers, which may be after the RunEngine returned."""
    from braggscope import storage

    deadline = time.monotonic() + timeout
    while True:
        try:
            run = storage.load_run(storage.open_catalog(cfg), uid)
            if run.metadata.get("stop") is not None:
                return run
        except KeyError:
            pass
        assert time.monotonic() < deadline, f"run {uid} not stopped in the catalog within {timeout} s"
        time.sleep(0.5)


def test_killing_the_catalog_server_mid_scan_loses_no_event(tiled_server, monkeypatch):
    """SIGKILL the tiled server during a map and start it again: the RunEngine never waits, the writer's
    requests are retried until the server is back, the run completes and the catalog holds every event."""
    import h5py

    from braggscope import storage
    from braggscope.plans import sxdm_map

    monkeypatch.setenv("TILED_RETRY_TIMEOUT", "120")  # the outage below lasts a few seconds
    monkeypatch.setenv("TILED_RETRY_ATTEMPTS", "100")
    cfg, client = _catalog(tiled_server, monkeypatch)
    devices = _devices(cfg, tiled_server.root)
    RE = _run_engine(client, devices)
    emitted = []
    RE.subscribe(lambda name, doc: emitted.append(name))
    killed, back = threading.Event(), threading.Event()

    def outage():  # kill once the run is well under way, restart a few seconds later
        while emitted.count("event") < 60:
            time.sleep(0.01)
        tiled_server.kill()
        killed.set()
        time.sleep(3.0)
        tiled_server.start()
        back.set()

    helper = threading.Thread(target=outage)
    helper.start()
    try:
        uid = RE(sxdm_map([devices["mpx1x4"]], devices["pix"], (0, 4, 12), devices["piy"], (0, 4, 10),
                          devices["eta"], [9.0, 9.1], sample="outage")).run_start_uids[0]
    finally:
        helper.join(180)
    assert killed.is_set() and back.is_set()
    assert emitted.count("event") > 60 + 10  # the RunEngine went on during the outage
    run = _stored_run(cfg, uid)
    assert run.metadata["stop"]["exit_status"] == "success"
    n_points = 2 * 10 * 12
    assert run.metadata["stop"]["num_events"]["primary"] == n_points
    assert len(run["primary"].read(variables=["pix"])["pix"]) == n_points  # every event row is there
    frames = storage.sxdm_stack(run).frames
    with h5py.File(devices["mpx1x4"].last_path, "r") as f:
        written = f["/entry/data/data"][()]
    np.testing.assert_array_equal(frames[1, 9, ::-1].compute(), written[-12:])  # the last row, snake undone


def test_a_batch_stored_by_a_server_killed_before_it_answered_is_not_written_twice(tiled_server, monkeypatch):
    """The window that made the kill test above fail now and then: the server commits a batch of event
    rows and is SIGKILLed before its answer leaves. The writer's retry must not append the batch again
    (it did: 290 rows for 240 events)."""
    import httpx
    from tiled.client.dataframe import DataFrameClient

    from braggscope.plans import sxdm_map

    monkeypatch.setenv("TILED_RETRY_TIMEOUT", "120")
    monkeypatch.setenv("TILED_RETRY_ATTEMPTS", "100")
    cfg, client = _catalog(tiled_server, monkeypatch)
    devices = _devices(cfg, tiled_server.root)
    RE = _run_engine(client, devices)
    append, calls, restart = DataFrameClient.append_partition, [], []

    def stored_then_killed(self, *args, **kwargs):
        out = append(self, *args, **kwargs)  # committed by the server
        calls.append(1)
        if len(calls) == 2:  # the second batch: the server dies before answering
            tiled_server.kill()
            restart.append(threading.Thread(target=lambda: (time.sleep(2.0), tiled_server.start())))
            restart[0].start()
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return out

    monkeypatch.setattr(DataFrameClient, "append_partition", stored_then_killed)
    try:
        uid = RE(sxdm_map([devices["mpx1x4"]], devices["pix"], (0, 4, 12), devices["piy"], (0, 4, 10),
                          devices["eta"], [9.0, 9.1], sample="answer-lost")).run_start_uids[0]
    finally:
        for thread in restart:
            thread.join(180)
    run = _stored_run(cfg, uid)
    monkeypatch.setattr(DataFrameClient, "append_partition", append)
    assert len(calls) > 2 and restart  # the kill happened, later batches were appended
    assert run.metadata["stop"]["exit_status"] == "success"
    rows = run["primary"].read(variables=["pix"])["pix"]
    assert len(rows) == 2 * 10 * 12  # every event once
