"""``braggscope sim start|status|stop`` round trip and the simctl Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from braggscope.app.beamline.simulator import client_env, read_state, scratch_config, start_simulator
from braggscope.core.processes import pid_alive

pytestmark = [pytest.mark.ioc, pytest.mark.timeout(120)]


def _cli(*args, config):
    return subprocess.run([sys.executable, "-m", "braggscope", "--config", str(config), "sim", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def cli_config(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(f'[storage]\ndata_dir = "{tmp_path}"\n[pv]\npiezo = "CLI:"\n'
                    f'diffractometer = "CLI:"\nenergy = "CLI:energy"\ndetector = "CLI:mpx1x4:"\n')
    return path


def test_cli_round_trip_leaves_no_process(cli_config, tmp_path):
    assert _cli("status", config=cli_config).returncode == 1
    started = _cli("start", "--no-detector", config=cli_config)
    assert started.returncode == 0, started.stderr
    state = json.loads((tmp_path / "simulator.json").read_text())
    pid, port = state["pid"], state["port"]
    try:
        assert f"export EPICS_CA_ADDR_LIST=127.0.0.1:{port}" in started.stdout
        assert "CLI:pix" in started.stdout
        # a second start is refused while one runs
        again = _cli("start", config=cli_config)
        assert again.returncode != 0 and "already runs" in again.stderr
        status = _cli("status", config=cli_config)
        assert status.returncode == 0 and f"pid {pid}" in status.stdout
        # it serves CA on loopback: a foreign client reads a motor
        env = dict(os.environ, **client_env(port))
        got = subprocess.run(["caproto-get", "--no-repeater", "-n", "CLI:eta.RBV"], capture_output=True,
                             text=True, timeout=20, env=env)
        assert got.returncode == 0 and "CLI:eta.RBV" in got.stdout, got.stderr
    finally:
        stopped = _cli("stop", config=cli_config)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)
    assert not (tmp_path / "simulator.json").exists()
    assert _cli("status", config=cli_config).returncode == 1


def test_api_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="port"):
        start_simulator(port=-1, state_file=tmp_path / "s.json")
    with pytest.raises(ValueError, match="timeout"):
        start_simulator(timeout=0, state_file=tmp_path / "s.json")
    with pytest.raises(ValueError, match="port"):
        client_env(0)
    assert read_state(tmp_path / "missing.json") is None


def test_a_simulator_dying_at_start_up_is_reported_with_its_log(tmp_path):
    import socket

    from braggscope.core.config import load_config

    cfg = load_config()
    cfg.set("storage.data_dir", str(tmp_path))
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        port = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", port))  # the CA port taken: the server cannot bind it and exits
        with pytest.raises(RuntimeError, match=r"simulator exited with code [1-9]\d* during start-up; see .*s\.log"):
            start_simulator(cfg, port=port, state_file=tmp_path / "s.json", set_env=False, timeout=60)
    assert read_state(tmp_path / "s.json") is None and (tmp_path / "s.log").stat().st_size > 0


def test_scratch_config_puts_everything_under_root_and_renames_every_prefix(tmp_path):
    cfg = scratch_config(tmp_path / "run", frame_size=64, pv_prefix="BSTWO:")
    assert (tmp_path / "run" / "detector").is_dir()
    assert cfg["detector.write_path"] == cfg["detector.read_path"] == str(tmp_path / "run" / "detector")
    assert cfg["storage.data_dir"] == str(tmp_path / "run")
    assert cfg["detector.shape"] == [64, 64] and cfg["detector.cch"] == [32.0, 32.0]
    assert cfg["pv.detector"] == "BSTWO:mpx1x4:" and cfg["pv.energy"] == "BSTWO:energy"
    assert all(value.startswith("BSTWO:") for value in cfg["pv"].values() if value)
    plain = scratch_config(tmp_path / "plain")
    assert plain["pv.piezo"] == "BSSIM:" and plain["detector.shape"] == [512, 512]
