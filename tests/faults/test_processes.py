"""Processes and files that cannot be confused: stale simulator state files, CA confined to loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from braggscope.app.beamline.simulator import checked_state, read_state, stop_simulator
from braggscope.core.processes import SpawnExited, SpawnTimeout, spawn_detached
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
    handle, why = checked_state(path)
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
    assert "is not running" in checked_state(path)[1]
    # our runner's command line, but nothing answers on its port (hung, or the port was never bound)
    silent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "braggscope.simulators.ioc_run",
                               "--state-file", str(path.resolve())])
    try:
        port = free_port()
        _write_state(path, silent.pid, port)
        handle, why = checked_state(path)
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


# ---------------------------------------------------------------------- spawn_detached
def _child(code):
    return [sys.executable, "-c", code]


def test_spawn_detached_returns_what_ready_saw_from_a_detached_process(tmp_path):
    flag = tmp_path / "ready.txt"
    code = ("import os, sys, time; sys.stderr.write('to the log\\n'); sys.stderr.flush(); time.sleep(0.3); "
            f"open({str(flag)!r}, 'w').write(os.environ['SPAWN_PROBE'] + '|' + repr(sys.stdin.read()) + '|' "
            "+ os.getcwd()); "
            "time.sleep(60)")
    seen = []
    process, value = spawn_detached(_child(code), tmp_path / "child.log",
                                    lambda p: flag.read_text() if flag.exists() and flag.read_text() else None,
                                    timeout=30, env={**os.environ, "SPAWN_PROBE": "probe-42"}, cwd=tmp_path,
                                    started=seen.append)
    try:
        assert seen == [process]
        assert value == f"probe-42|''|{tmp_path}"  # its environment, an empty stdin, its directory
        assert process.poll() is None and os.getsid(process.pid) == process.pid  # its own session
        assert "to the log" in (tmp_path / "child.log").read_text()
    finally:
        process.kill()
        process.wait(10)


def test_spawn_detached_reports_an_early_exit_with_its_code(tmp_path):
    log = tmp_path / "child.log"
    log.write_text("earlier run\n")
    with pytest.raises(SpawnExited) as info:
        spawn_detached(_child("import sys; print('bad option', file=sys.stderr); sys.exit(3)"), log,
                       lambda p: None, timeout=30)
    assert info.value.process.returncode == 3 and info.value.log_path == log
    assert log.read_text() == "earlier run\nbad option\n"  # appended, not truncated


def test_spawn_detached_stops_a_process_that_is_never_ready(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(SpawnTimeout) as info:
        spawn_detached(_child("import time; time.sleep(60)"), tmp_path / "a.log", lambda p: False, timeout=0.5)
    assert info.value.process.poll() is not None  # terminated by the default stop
    assert time.monotonic() - t0 < 15
    stopped = []

    def stop(p):
        stopped.append(p.pid)
        p.kill()
        p.wait(10)

    with pytest.raises(SpawnTimeout) as info:
        spawn_detached(_child("import time; time.sleep(60)"), tmp_path / "b.log", lambda p: None, timeout=0.3,
                       stop=stop)
    assert stopped == [info.value.process.pid] and info.value.process.poll() is not None


def test_a_catalog_server_failing_at_start_up_is_one_error_naming_its_log(tmp_path):
    from braggscope.core.config import load_config
    from braggscope.core.errors import ServerUnreachableError
    from braggscope.storage import server as catalog_server
    from braggscope.storage.locks import acquire_writer_lock, release_writer_lock

    cfg = load_config()
    cfg.set("storage.data_dir", str(tmp_path))
    paths = catalog_server.server_paths(cfg)
    acquire_writer_lock(paths["root"])  # this process writes the catalog: the server cannot, and exits
    try:
        with pytest.raises(ServerUnreachableError, match=r"exited with code [1-9]\d* during start-up; see "
                                                          r".*catalog_server\.log"):
            catalog_server.ensure_server(cfg, echo=lambda line: None)
    finally:
        release_writer_lock(paths["root"])
    assert "being written by another process" in paths["log"].read_text()
    # not ready in time: stopped, nothing left to find
    with pytest.raises(ServerUnreachableError, match=r"did not answer within 0\.2 s; see .*catalog_server\.log"):
        catalog_server.ensure_server(cfg, timeout=0.2, echo=lambda line: None)
    assert catalog_server.server_status(cfg)[0] is None and not paths["state"].exists()
