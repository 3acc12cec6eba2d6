"""Production storage: a real ``tiled serve catalog postgresql+asyncpg://...`` on 127.0.0.1 with an API key.

Needs the local PostgreSQL (127.0.0.1:5432, user postgres, trust auth); a fresh
database is created for the session and dropped at the end. Skipped, with the
reason, when PostgreSQL is unreachable.
"""

import os
import shutil
import socket
import subprocess
import time
import uuid

import numpy as np
import pytest

pytestmark = pytest.mark.postgres


def _psql(sql):
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", sql], capture_output=True,
                          text=True, timeout=30)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiled_server(tmp_path_factory):
    if shutil.which("psql") is None:
        pytest.skip("psql not installed: PostgreSQL unavailable")
    probe = _psql("select 1")
    if probe.returncode != 0:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 unreachable: {probe.stderr.strip()[:200]}")
    db = f"braggscope_test_{uuid.uuid4().hex[:10]}"
    created = _psql(f"CREATE DATABASE {db}")
    assert created.returncode == 0, created.stderr
    root = tmp_path_factory.mktemp("tiled-server")
    (root / "data").mkdir()
    (root / "detector").mkdir()
    port, key = _free_port(), uuid.uuid4().hex
    cmd = ["tiled", "serve", "catalog", f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}", "--init",
           "--write", str(root / "data"), "--write", f"duckdb:///{root / 'tables.duckdb'}",
           "--read", str(root / "detector"), "--api-key", key, "--host", "127.0.0.1", "--port", str(port)]
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tiled server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("tiled server did not start in 90 s") from None
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", key, root
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        _psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_production_round_trip(tiled_server, monkeypatch):
    import h5py
    from bluesky import RunEngine

    from braggscope.core import storage
    from braggscope.core.config import load_config
    from braggscope.plans import sxdm_map
    from braggscope.simulators.inprocess import HDF5ImageDetector, LimitedSynAxis

    uri, key, root = tiled_server
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
    frames, meta = storage.sxdm_stack(run)
    with h5py.File(det.last_path, "r") as f:
        written = f["/entry/data/data"][()]
    got = frames.compute()
    np.testing.assert_array_equal(got[0, 0], written[:3])
    np.testing.assert_array_equal(got[1, 1, ::-1], written[9:12])
    assert [r.metadata["start"]["uid"] for r in storage.find_runs(client, sample="pg")] == [uid]
    # a wrong key is refused by the server
    cfg.set("storage.api_key", "not-the-key")
    monkeypatch.delenv("TILED_API_KEY")
    with pytest.raises(Exception):
        list(storage.open_catalog(cfg).keys())
