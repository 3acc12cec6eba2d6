"""``braggscope serve``: the whole stack from one command, its state file checks, and its errors.

The full-stack test starts the caproto simulator, tiled (SQLite catalog), the queue server with
braggscope's profile on the simulator's PVs, the HTTP server and, when NATS answers on
127.0.0.1:4222, ``braggscope live``; runs a map through the HTTP server; and checks that
``serve stop`` leaves nothing behind. Needs Redis (skipped, saying why, without it).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid

import pytest

from tests.service_helpers import assert_no_process_left, free_port, listening_addresses, redis_or_skip

pytestmark = pytest.mark.services

REDIS_DB = 3


def _config(tmp_path, services, **extra):
    from braggscope.core.config import load_config, save_config

    cfg = load_config()
    values = {"storage.data_dir": str(tmp_path / "data"), "detector.read_path": str(tmp_path / "data" / "det"),
              "detector.write_path": str(tmp_path / "data" / "det"), "serve.state_dir": str(tmp_path / "serve"),
              "serve.services": services, "queue.redis": f"127.0.0.1:6379/{REDIS_DB}",
              "queue.redis_prefix": f"braggscope_test_{uuid.uuid4().hex[:8]}", "bus.url": "",
              **{f"serve.{p}": free_port() for p in ("tiled_port", "queue_control_port", "queue_info_port",
                                                     "http_port")}, **extra}
    for key, value in values.items():
        cfg.set(key, value)
    path = tmp_path / "beamline.toml"
    save_config(cfg, path)
    return cfg, path


def _serve(path, *args, timeout=400):
    return subprocess.run([sys.executable, "-m", "braggscope.app.cli", "--config", str(path), "serve", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_state_file_naming_another_program_is_never_trusted(tmp_path):
    cfg, path = _config(tmp_path, ["http"])
    other = subprocess.Popen(["sleep", "60"])  # a live pid that is not ours
    try:
        state_dir = tmp_path / "serve"
        state_dir.mkdir()
        (state_dir / "serve.json").write_text(json.dumps({"http": {
            "pid": other.pid, "command": ["start-bluesky-httpserver"], "marker": "start-bluesky-httpserver",
            "port": cfg["serve.http_port"], "host": "127.0.0.1", "log": "x"}}))
        status = _serve(path, "status", timeout=60)
        assert status.returncode == 1 and "DOWN" in status.stdout and "another program" in status.stdout
        stop = _serve(path, "stop", timeout=60)
        assert stop.returncode == 0 and "not running" in stop.stdout
        assert other.poll() is None  # not killed
        assert not (state_dir / "serve.json").exists()
    finally:
        other.kill()
        other.wait()


def test_bad_requests_are_one_line_errors_and_start_nothing(tmp_path):
    cfg, path = _config(tmp_path, ["http"])
    unknown = _serve(path, "--services", "tiled,coffee", timeout=60)
    assert unknown.returncode == 2 and "coffee" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    with socket.socket() as busy:  # another program holds the HTTP port
        busy.bind(("127.0.0.1", cfg["serve.http_port"]))
        busy.listen()
        taken = _serve(path, timeout=120)
    assert taken.returncode == 2 and "already in use" in taken.stderr, taken.stderr
    assert len(taken.stderr.strip().splitlines()) == 1
    assert_no_process_left(str(tmp_path / "serve"), ports=[cfg["serve.http_port"]])
    from braggscope.core.config import load_config
    from braggscope.core.errors import ConfigError

    bad = tmp_path / "bad.toml"
    bad.write_text('[serve]\nservices = ["tiled", "coffee"]\n')
    with pytest.raises(ConfigError, match="services"):
        load_config(bad)


@pytest.mark.slow
def test_serve_runs_the_whole_stack_and_stop_leaves_nothing(tmp_path):
    redis = redis_or_skip(REDIS_DB)
    services = ["simulator", "tiled", "queue", "http"]
    extra = {}
    if _nats_answers():
        services.append("live")
        extra = {"bus.url": "nats://127.0.0.1:4222", "bus.stream": f"BRAGGSCOPE_TEST_{uuid.uuid4().hex[:8]}",
                 "bus.subject": f"braggscope.test-{uuid.uuid4().hex[:8]}.documents",
                 "bus.spill_dir": str(tmp_path / "spill")}
    cfg, path = _config(tmp_path, services, **{"simulator.realtime": False, **extra})
    ports = [cfg[f"serve.{p}"] for p in ("tiled_port", "queue_control_port", "queue_info_port", "http_port")]
    try:
        started = _serve(path)
        assert started.returncode == 0, started.stdout + started.stderr
        for name in services:
            assert f"{name}: started" in started.stdout
        for port in ports:
            assert listening_addresses(port) == {"127.0.0.1"}
        status = _serve(path, "status", timeout=60)
        assert status.returncode == 0 and status.stdout.count(" ok ") == len(services), status.stdout
        keys = tmp_path / "serve" / "keys.json"
        assert oct(keys.stat().st_mode & 0o777) == "0o600"
        _run_a_map_through_the_queue(tmp_path, "live" in services)
    finally:
        stopped = _serve(path, "stop", timeout=120)
        for k in redis.scan_iter(f"{cfg['queue.redis_prefix']}*"):
            redis.delete(k)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert_no_process_left(str(tmp_path / "serve"), str(tmp_path / "data"), ports=ports)
    after = _serve(path, "status", timeout=60)
    assert after.returncode == 1


def _run_a_map_through_the_queue(tmp_path, with_live):
    from braggscope import storage
    from braggscope.app.serve.queue_client import QueueClient
    from braggscope.core.config import load_config

    effective = load_config(tmp_path / "serve" / "config.toml")  # what serve gives its clients
    queue = QueueClient.from_config(effective, timeout=30)
    queue.add("sxdm_map", ["mpx1x4"], "pix", [0, 2, 4], "piy", [0, 1, 3], "eta", [9.0, 9.1], sample="served")
    queue.start()
    queue.wait(timeout=300)
    result = queue.history()[-1]["result"]
    assert result["exit_status"] == "completed", result["msg"]
    uid = result["run_uids"][0]
    run = storage.load_run(storage.open_catalog(effective), uid)  # over HTTP, with the key
    assert run.metadata["stop"]["num_events"]["primary"] == 4 * 3 * 2
    assert storage.sxdm_stack(run).shape == (2, 3, 4)
    # the served catalog's root is a catalog of runs: bluesky-tiled-plugins' indexing from a fresh client
    from tiled.client import from_uri

    fresh = from_uri(effective["storage.tiled_uri"], api_key=effective["storage.api_key"])
    assert type(fresh).__name__ == "CatalogOfBlueskyRuns"
    for key in (-1, uid[:8], run.metadata["start"]["scan_id"]):
        assert fresh[key].metadata["start"]["uid"] == uid, key
    if with_live:
        out = effective.expand_path("storage.data_dir") / "live"
        deadline = time.monotonic() + 120
        while not list(out.glob(f"*_{uid[:8]}_live_maps.h5")):
            assert time.monotonic() < deadline, f"no live maps file for {uid} in {out}"
            time.sleep(0.5)


def _nats_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1):
            return True
    except OSError:
        return False
