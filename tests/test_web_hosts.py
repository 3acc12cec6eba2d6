"""Two users on different hosts: an observer's page and an operator's shell, and a second operator.

Three network namespaces stand for three computers, joined by veth pairs whose addresses exist only
inside them (the bus test's way): ``srv`` (the beamline's control computer: Redis, tiled, the queue
server, the HTTP server and the page's server, all bound to its address), ``obs`` (an observer's
Chromium on the page, and a second operator's shell) and ``op`` (the operator's
``braggscope shell --queue``). The operator's scan runs; the observer sees it run and end, as the
queue has it; the second operator's move, sent while the scan runs, is refused naming it and never
runs. Skipped, saying why, where namespaces cannot be made. Everything in them is killed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")
pytestmark = [pytest.mark.services, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SRV_OBS = ("10.213.78.1", "10.213.78.2")  # srv <-> obs, a private /30
SRV_OP = ("10.213.79.1", "10.213.79.2")  # srv <-> op
PROMPT = r"In \[\d+\]: "


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def three_hosts():
    """Namespaces srv, obs and op; obs and op each reach srv's two addresses, not each other."""
    for tool in ("ip", "redis-server", "/usr/bin/chromium"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    tag = f"{os.getpid() % 100000}"
    names = {role: f"bs{role}{tag}" for role in ("srv", "obs", "op")}
    if _ip("netns", "add", names["srv"], check=False).returncode != 0:
        pytest.skip("'ip netns add' is not permitted here")
    try:
        for role in ("obs", "op"):
            _ip("netns", "add", names[role])
        for role, (srv_addr, addr) in (("obs", SRV_OBS), ("op", SRV_OP)):
            a, b = f"bsv{role[1]}a{tag}", f"bsv{role[1]}b{tag}"
            _ip("link", "add", a, "type", "veth", "peer", "name", b)
            _ip("link", "set", a, "netns", names["srv"])
            _ip("link", "set", b, "netns", names[role])
            for ns, dev, address in ((names["srv"], a, srv_addr), (names[role], b, addr)):
                _ip("-n", ns, "addr", "add", f"{address}/30", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
            other = SRV_OP[0] if role == "obs" else SRV_OBS[0]  # srv's other address, through this link
            _ip("-n", names[role], "route", "add", f"{other}/32", "via", srv_addr)
        yield names
    finally:
        for ns in names.values():  # removing a namespace removes its ends of the veth pairs
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _ip("netns", "del", ns, check=False)


def in_ns(ns, *command):
    return ["ip", "netns", "exec", ns, *command]


def braggscope(ns, config, *args, timeout=600):
    return subprocess.run(in_ns(ns, sys.executable, "-m", "braggscope.app.cli", "--config", str(config), *args),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def shell(ns, config, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "BRAGGSCOPE_CONFIG")}
    env.update(IPY_TEST_SIMPLE_PROMPT="1", MPLBACKEND="Agg", TERM="dumb", COLUMNS="200", PYTHONUNBUFFERED="1")
    child = pexpect.spawn("ip", in_ns(ns, sys.executable, "-m", "braggscope.app.cli", "--config", str(config), "shell",
                                      "--queue")[1:], env=env, cwd=str(tmp_path), encoding="utf-8", timeout=600,
                          dimensions=(50, 200))
    return child


def ready(child):
    """Wait for a shell's first prompt."""
    child.expect(PROMPT, timeout=300)
    assert "braggscope session: queue at" in child.before, child.before


def seen(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_an_observers_page_and_operators_shells_on_three_hosts(three_hosts, tmp_path):
    from braggscope.core.config import load_config, save_config
    from tests.service_helpers import free_port

    srv, obs, op = three_hosts["srv"], three_hosts["obs"], three_hosts["op"]
    host = SRV_OBS[0]
    redis = subprocess.Popen(in_ns(srv, "redis-server", "--bind", "127.0.0.1", "--port", "6379", "--save", "",
                                   "--appendonly", "no", "--dir", str(tmp_path)), stdout=subprocess.DEVNULL)
    keys = {"queue": uuid.uuid4().hex, "observer": uuid.uuid4().hex}
    cfg = load_config()
    for name, value in {"serve.host": host, "serve.services": ["tiled", "queue", "http", "web"],
                        "serve.state_dir": str(tmp_path / "serve"), "queue.devices": "inprocess",
                        "queue.api_key": keys["queue"], "queue.observer_key": keys["observer"],
                        "storage.data_dir": str(tmp_path / "data"), "simulator.realtime": True,
                        "detector.read_path": str(tmp_path / "data" / "det"),
                        "detector.write_path": str(tmp_path / "data" / "det"), "bus.url": "",
                        **{f"serve.{p}": free_port() for p in ("tiled_port", "queue_control_port",
                                                              "queue_info_port", "http_port", "web_port")}}.items():
        cfg.set(name, value)
    save_config(cfg, tmp_path / "beamline.toml")
    client_config = tmp_path / "serve" / "config.toml"  # serve's clients' configuration: the URLs, the keys
    observer = operator = second = None
    log = tmp_path / "seen.jsonl"
    try:
        started = braggscope(srv, tmp_path / "beamline.toml", "serve", timeout=600)
        assert started.returncode == 0, started.stdout + started.stderr
        observer = subprocess.Popen(in_ns(obs, sys.executable, str(REPO / "tests" / "web_observer.py"), "--url",
                                          f"http://{host}:{cfg['serve.web_port']}", "--key", keys["observer"],
                                          "--out", str(log), "--screenshot", str(tmp_path / "observer.png")),
                                    cwd=REPO, stderr=subprocess.PIPE, text=True)
        _wait(lambda: log.exists() and any(s["connected"] for s in seen(log)), 120, observer)
        operator = shell(op, client_config, tmp_path)
        second = shell(obs, client_config, tmp_path)  # a second operator, on the observer's host
        ready(operator)  # (both shells start at once)
        ready(second)
        operator.sendline("ascan(pix, 45, 55, 100, 0.05)")
        _wait(lambda: any((s["running"] or {}).get("name") == "ascan" for s in seen(log)), 120, observer)
        second.sendline("mv(pix, 10)")
        second.expect(PROMPT, timeout=300)
        refusal = second.before
        operator.expect(PROMPT, timeout=600)
        scanned = operator.before
        operator.sendline("wm(pix)")
        operator.expect(PROMPT, timeout=120)
        _wait(lambda: any(h["name"] == "ascan" for h in seen(log)[-1]["history"]), 60, observer)
        Path(str(log.with_suffix(".stop"))).touch()
        observer.wait(60)
    finally:
        for child in (operator, second):
            if child is not None and child.isalive():
                child.terminate(force=True)
        if observer is not None and observer.poll() is None:
            observer.kill()
        braggscope(srv, tmp_path / "beamline.toml", "serve", "stop", timeout=300)
        redis.terminate()
        redis.wait(30)
    assert "UserError: mv not run: the beamline is busy with ascan" in refusal, refusal
    assert "Traceback" not in scanned and "'exit_status': 'success'" in scanned, scanned
    states = seen(log)
    assert all(s["role"] == "observer" for s in states if s["connected"])
    running = [s["running"] for s in states if (s["running"] or {}).get("name") == "ascan"]
    assert running and running[0]["meta"]["operator"]  # the page names who runs it
    history = states[-1]["history"]
    assert history[0]["name"] == "ascan" and history[0]["exit"] == "completed"
    assert history[0]["uid"] == running[0]["item_uid"]  # the same item the operator's shell ran
    assert not any(h["name"] == "mv" for h in history)  # the refused move never ran
    # the observer's host reaches only srv's address: its own loopback serves nothing of the beamline
    probe = subprocess.run(in_ns(obs, sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', "
                                 f"{cfg['serve.web_port']}), 1)"), capture_output=True)
    assert probe.returncode != 0


def _wait(condition, timeout, process):
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the observer exited: {process.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
