"""Processes and files that cannot be confused: stale simulator state files, CA confined to loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from braggscope.app.simctl import _checked_state, read_state, stop_simulator
from braggscope.devices.factory import confine_ca_to_loopback
from braggscope.simulators.ioc_run import free_port


def _write_state(path, pid, port):
    path.write_text(json.dumps({"pid": pid, "port": port, "motors": {}}))
    return path


@pytest.fixture()
def stranger():
    """An unrelated live process (what a reused pid points at)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait(10)


def test_state_file_naming_another_program_is_neither_reported_nor_killed(tmp_path, stranger):
    path = _write_state(tmp_path / "simulator.json", stranger.pid, free_port())
    handle, why = _checked_state(path)
    assert handle is None and read_state(path) is None
    assert f"pid {stranger.pid} is another program" in why
    assert stop_simulator(path) is False
    time.sleep(0.2)
    assert stranger.poll() is None  # still running: sim stop did not kill it
    assert not path.exists()  # the stale file is gone


def test_state_file_of_a_dead_or_silent_runner(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    path = _write_state(tmp_path / "simulator.json", dead.pid, free_port())
    assert "is not running" in _checked_state(path)[1]
    # our runner's command line, but nothing answers on its port (hung, or the port was never bound)
    silent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "braggscope.simulators.ioc_run"])
    try:
        port = free_port()
        _write_state(path, silent.pid, port)
        handle, why = _checked_state(path)
        assert handle is None and f"does not answer on 127.0.0.1:{port}" in why
    finally:
        silent.kill()
        silent.wait(10)


def test_cli_status_says_why(tmp_path, stranger):
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path}"\n')
    _write_state(tmp_path / "simulator.json", stranger.pid, free_port())
    out = subprocess.run([sys.executable, "-m", "braggscope", "--config", str(cfg), "sim", "status"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "not running (stale state file" in out.stdout, out.stdout + out.stderr
    assert stranger.poll() is None


class _Cfg(dict):
    def get(self, key, default=None):
        return super().get(key, default)


@pytest.mark.parametrize("env_list, port, expected", [
    ("10.1.255.255 127.0.0.1:5999", 0, "127.0.0.1:5999"),
    ("192.168.1.255", 6064, "127.0.0.1:6064"),
    ("", 0, "127.0.0.1"),
])
def test_simulated_configuration_confines_ca_to_loopback(monkeypatch, env_list, port, expected):
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", env_list)
    monkeypatch.setenv("EPICS_CA_AUTO_ADDR_LIST", "YES")
    confine_ca_to_loopback(_Cfg({"beamline.simulated": True, "simulator.ca_server_port": port}))
    import os

    assert os.environ["EPICS_CA_ADDR_LIST"] == expected
    assert os.environ["EPICS_CA_AUTO_ADDR_LIST"] == "NO"


def test_real_beamline_configuration_keeps_the_environment(monkeypatch):
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", "10.1.255.255")
    monkeypatch.setenv("EPICS_CA_AUTO_ADDR_LIST", "YES")
    confine_ca_to_loopback(_Cfg({"beamline.simulated": False}))
    import os

    assert os.environ["EPICS_CA_ADDR_LIST"] == "10.1.255.255" and os.environ["EPICS_CA_AUTO_ADDR_LIST"] == "YES"
