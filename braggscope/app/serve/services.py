"""``braggscope serve``: start, stop and check the services of a beamline with one command.

The services, in start order (``[serve] services`` picks which run here):

========== ========================================================= =====================
service    process                                                   listens on
========== ========================================================= =====================
simulator  the caproto simulator (only when ``[beamline] simulated``) CA port, 127.0.0.1
tiled      ``tiled serve catalog`` (SQLite or PostgreSQL catalog)    ``host:tiled_port``
queue      the queue server (``start-re-manager``) with the         ``host:queue_*_port``
           braggscope profile, its worker in an IPython kernel
           (``qserver-console`` attaches), refusing NaN at its door
           (:mod:`braggscope.app.serve.manager`)
http       bluesky-httpserver in front of the queue, no keys in      ``host:http_port``
           URLs (:mod:`braggscope.app.serve.http_server`)
live       ``braggscope live`` (maps from the document bus)          (no port)
web        the beamline's page (:mod:`braggscope.app.web`)           ``host:web_port``
========== ========================================================= =====================

Every service binds only to ``[serve] host`` (127.0.0.1 by default) and
writes its log to ``<state_dir>/<service>.log``. The tiled server, the HTTP
server and the page require an API key: ``[storage] api_key`` / ``$TILED_API_KEY``;
the queue's operator key ``[queue] api_key`` / ``$BRAGGSCOPE_QUEUE_API_KEY`` and its
read-only key ``[queue] observer_key`` / ``$BRAGGSCOPE_QUEUE_OBSERVER_KEY``
(:mod:`braggscope.app.serve.http_auth`). A key that is not given is generated once
and kept in ``<state_dir>/keys.json`` (mode 600). The processes get an effective
configuration, ``<state_dir>/config.toml`` (mode 600), that points the queue's
RunEngine at this tiled server and carries the keys.

``<state_dir>/serve.json`` records each service's pid, command line and port.
``status`` and ``stop`` trust an entry only when that pid is alive, runs the
recorded program (its command line) and, for a service with a port, the
port answers: a stale file never leads to killing another program.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from braggscope.app.beamline.simulator import read_state, start_simulator, state_file_for, stop_simulator
from braggscope.app.serve.http_auth import write_http_auth
from braggscope.app.serve.processes import (
    connect_host,
    console_script,
    http_status,
    port_answers,
    terminate_group,
    write_private,
)
from braggscope.app.serve.queue_startup import write_startup_dir
from braggscope.core.atomic import atomic_path
from braggscope.core.config import save_config
from braggscope.core.errors import ConfigError, UserError
from braggscope.core.processes import SpawnExited, SpawnTimeout, command_line, pid_alive, spawn_detached
from braggscope.storage.adapter import write_server_config

__all__ = ["start_services", "stop_services", "service_status", "serve_paths", "ORDER"]

ORDER = ("simulator", "tiled", "queue", "http", "live", "web")
STATE_NAME = "serve.json"
#: Seconds a service has to start answering.
START_TIMEOUT_S = 120.0
#: Seconds the queue's catalog writer retries a request while the catalog server is away.
CATALOG_RETRY_S = 600.0
#: The service processes started here (kept: they outlive this command, and need no reaping warning).
_CHILDREN: list[subprocess.Popen] = []


def serve_paths(cfg) -> dict[str, Path]:
    """The files of ``braggscope serve`` under ``[serve] state_dir``."""
    root = cfg.expand_path("serve.state_dir")
    return {"root": root, "state": root / STATE_NAME, "keys": root / "keys.json", "config": root / "config.toml",
            # an IPython profile's startup directory: the worker runs in an IPython kernel
            "startup": root / "ipython" / "profile_braggscope" / "startup", "tiled": root / "tiled"}


def start_services(cfg, services=None, *, timeout: float = START_TIMEOUT_S, open_environment: bool = True,
                   echo=print) -> dict:
    """Start the services (those of ``[serve] services`` by default) that do not run yet.

    Parameters
    ----------
    cfg : braggscope.core.config.Config
    services : sequence of str, optional
        Names among :data:`ORDER`.
    timeout : float
        Seconds each service has to answer.
    open_environment : bool
        Open the queue's RunEngine environment (devices connected) once it runs.
    echo : callable
        Where progress lines go.

    Returns
    -------
    dict
        The state: service -> entry (pid, command, port, log).
    """
    services = _checked_services(cfg, services)
    paths = serve_paths(cfg)
    paths["root"].mkdir(parents=True, exist_ok=True)
    keys = _keys(cfg, paths["keys"])
    effective = _effective_config(cfg, keys, paths["config"])
    state = {name: entry for name, entry in _read_state(paths["state"]).items() if _check(entry)[0]}
    started = []
    try:
        for name in ORDER:
            if name in services and _wanted(name, cfg, state, echo):
                state[name] = _START[name](effective, paths, keys, timeout)
                started.append(name)
                _write_state(paths["state"], state)
                where = f" on {state[name]['host']}:{state[name]['port']}" if state[name].get("port") else ""
                echo(f"{name}: started (pid {state[name]['pid']}){where}, log {state[name]['log']}")
        if open_environment and "queue" in state and "queue" in services:
            _open_environment(effective, timeout)
            echo("queue: RunEngine environment open")
    except BaseException:
        stop_services(cfg, started, echo=lambda line: None)  # nothing half-started is left behind
        raise
    return state


def _wanted(name, cfg, state, echo) -> bool:
    """Whether to start service ``name`` now (not running yet, and meaningful for this configuration)."""
    if name in state:
        echo(f"{name}: already running (pid {state[name]['pid']})")
        return False
    if name == "live" and not cfg.get("bus.url"):  # (the page shows the queue and the catalog without one)
        echo("live: not started ([bus] url is empty: no document bus to follow)")
        return False
    if name == "simulator" and not cfg.get("beamline.simulated", False):
        echo("simulator: not started ([beamline] simulated = false: the real PVs are used)")
        return False
    return True


def stop_services(cfg, services=None, *, timeout: float = 15.0, echo=print) -> list[str]:
    """Stop the services this state file says run (all by default); returns the names stopped."""
    paths = serve_paths(cfg)
    state = _read_state(paths["state"])
    names = [n for n in reversed(ORDER) if n in state and (services is None or n in services)]
    stopped = []
    for name in names:
        entry = state.pop(name)
        ok, why = _check(entry, need_port=False)
        if not ok:
            echo(f"{name}: not running ({why})")
        elif name == "simulator":
            if entry.get("external"):
                echo("simulator: left running (it was running before braggscope serve started)")
                continue
            stop_simulator(entry["state_file"], timeout=timeout)
            stopped.append(name)
            echo(f"simulator: stopped (pid {entry['pid']})")
        else:
            terminate_group(entry["pid"], timeout)
            stopped.append(name)
            echo(f"{name}: stopped (pid {entry['pid']})")
        _write_state(paths["state"], state)
    if not state:
        paths["state"].unlink(missing_ok=True)
    return stopped


def service_status(cfg) -> dict[str, tuple[bool, str]]:
    """service -> (healthy, one line) for each service the state file names."""
    keys = _keys(cfg, serve_paths(cfg)["keys"], create=False)
    return {name: _check(entry, keys=keys) for name, entry in _read_state(serve_paths(cfg)["state"]).items()}


# --------------------------------------------------------------------------- services
def _start_simulator(cfg, paths, keys, timeout):
    handle = read_state(state_file_for(cfg))
    external = handle is not None
    if handle is None:
        handle = start_simulator(cfg, port=int(cfg.get("simulator.ca_server_port", 0) or 0), set_env=False,
                                 timeout=timeout)
    return {"pid": handle.pid, "port": handle.port, "host": "127.0.0.1", "marker": "braggscope.simulators.ioc_run",
            "state_file": str(handle.state_file), "log": str(handle.state_file.with_suffix(".log")),
            "external": external}


def _start_tiled(cfg, paths, keys, timeout):
    host, port = cfg["serve.host"], cfg["serve.tiled_port"]
    root = paths["tiled"]
    (root / "data").mkdir(parents=True, exist_ok=True)
    catalog = cfg.get("serve.tiled_catalog") or f"sqlite+aiosqlite:///{root / 'catalog.db'}"
    readable = [Path(p).expanduser() for p in [cfg.expand_path("detector.read_path"),
                                               *cfg.get("storage.readable_paths", [])]]
    for path in readable:
        path.mkdir(parents=True, exist_ok=True)
    # a config file: its catalog's root is a bluesky catalog of runs (the command line cannot give specs)
    config = write_server_config(root / "config.yml", catalog, readable_storage=readable,
                                 writable_storage=[root / "data", f"duckdb:///{root / 'tables.duckdb'}"])
    command = [console_script("tiled"), "serve", "config", str(config), "--host", host, "--port", str(port)]
    env = {"TILED_SINGLE_USER_API_KEY": keys["tiled"]}  # not on the command line (ps shows it), nor in the file
    entry = _launch("tiled", command, env, paths, (host, port), timeout, marker="serve config")
    return {**entry, "health": "/api/v1/", "key": "tiled"}


def _start_queue(cfg, paths, keys, timeout):
    host = cfg["serve.host"]
    control, info = cfg["serve.queue_control_port"], cfg["serve.queue_info_port"]
    startup = write_startup_dir(paths["startup"])
    (paths["root"] / "kernel").mkdir(mode=0o700, exist_ok=True)  # the kernel's connection file holds its key
    command = [sys.executable, "-m", "braggscope.app.serve.manager", "--startup-dir", str(startup),
               "--zmq-control-addr", f"tcp://{host}:{control}", "--zmq-info-addr", f"tcp://{host}:{info}",
               "--zmq-publish-console", "ON", "--redis-addr", cfg["queue.redis"],
               "--redis-name-prefix", cfg["queue.redis_prefix"],
               # the worker in an IPython kernel: `qserver-console` attaches to its namespace
               "--use-ipython-kernel", "ON", "--ipython-kernel-ip", connect_host(host),
               "--ipython-connection-dir", str(paths["root"] / "kernel")]
    env = {"BRAGGSCOPE_CONFIG": str(paths["config"]), "TILED_API_KEY": keys["tiled"],
           # a catalog outage during a run: the writer's requests are retried (the RunEngine does not wait)
           "TILED_RETRY_TIMEOUT": os.environ.get("TILED_RETRY_TIMEOUT", str(CATALOG_RETRY_S)),
           "TILED_RETRY_ATTEMPTS": os.environ.get("TILED_RETRY_ATTEMPTS", "1000")}
    return _launch("queue", command, env, paths, (host, control), timeout, marker="braggscope.app.serve.manager")


def _start_http(cfg, paths, keys, timeout):
    host, port = cfg["serve.host"], cfg["serve.http_port"]
    peer = connect_host(host)
    command = [sys.executable, "-m", "braggscope.app.serve.http_server", "--host", host, "--port", str(port)]
    env = {"QSERVER_HTTP_SERVER_CONFIG": str(write_http_auth(paths["root"], keys)),  # keys and roles
           "QSERVER_ZMQ_CONTROL_ADDRESS": f"tcp://{peer}:{cfg['serve.queue_control_port']}",
           "QSERVER_ZMQ_INFO_ADDRESS": f"tcp://{peer}:{cfg['serve.queue_info_port']}"}
    entry = _launch("http", command, env, paths, (host, port), timeout, marker="braggscope.app.serve.http_server")
    return {**entry, "health": "/api/status", "key": "queue"}


def _start_live(cfg, paths, keys, timeout):
    command = [sys.executable, "-m", "braggscope.app.cli", "--config", str(paths["config"]), "live"]
    return _launch("live", command, {}, paths, None, timeout, marker="braggscope.app.cli")


def _start_web(cfg, paths, keys, timeout):
    host, port = cfg["serve.host"], cfg["serve.web_port"]
    command = [sys.executable, "-m", "braggscope.app.web", "--config", str(paths["config"]), "--host", host,
               "--port", str(port)]
    entry = _launch("web", command, {}, paths, (host, port), timeout, marker="braggscope.app.web")
    return {**entry, "health": "/api/whoami", "key": "observer"}


_START = {"simulator": _start_simulator, "tiled": _start_tiled, "queue": _start_queue, "http": _start_http,
          "live": _start_live, "web": _start_web}


def _launch(name, command, env, paths, address, timeout, *, marker) -> dict:
    """Start ``command`` in its own process group with its log; wait until ``address`` (host, port) answers.

    A service without a port (``address`` None) must still run 2 s after its start.
    """
    host, port = (None, None) if address is None else (connect_host(address[0]), address[1])
    if port is not None and port_answers(host, port):
        raise UserError(f"{name}: port {port} on {host} is already in use by another program "
                        f"(choose another port in [serve])")
    log_path = paths["root"] / f"{name}.log"
    start, launched = time.monotonic(), time.time()

    def ready(process):
        if port is not None:
            return port_answers(host, port)
        return time.monotonic() - start > 2.0 and process.poll() is None

    try:
        process, _ = spawn_detached(command, log_path, ready, timeout, env={**os.environ, **env}, cwd=paths["root"],
                                    started=_CHILDREN.append, stop=lambda p: terminate_group(p.pid, 5.0), poll_s=0.2)
    except SpawnExited as exc:
        raise UserError(f"{name} exited with code {exc.process.returncode} during start-up; see {log_path}") from None
    except SpawnTimeout:
        raise UserError(f"{name} did not answer on {host}:{port} within {timeout} s; see {log_path}") from None
    return {"pid": process.pid, "command": command, "marker": marker, "port": port, "host": host,
            "log": str(log_path), "started": launched}


def _open_environment(cfg, timeout):
    # the queue server's client: slow to import, only where the queue starts
    from bluesky_queueserver_api.zmq import REManagerAPI

    peer = connect_host(cfg["serve.host"])
    api = REManagerAPI(zmq_control_addr=f"tcp://{peer}:{cfg['serve.queue_control_port']}",
                       zmq_info_addr=f"tcp://{peer}:{cfg['serve.queue_info_port']}")
    try:
        if not api.status()["worker_environment_exists"]:
            api.environment_open()
            api.wait_for_idle(timeout=timeout)
        if not api.status()["worker_environment_exists"]:
            raise UserError("queue: the RunEngine environment did not open; see queue.log in the state directory")
    finally:
        api.close()


# --------------------------------------------------------------------------- checks and state
def _check(entry: dict, *, need_port: bool = True, keys: dict | None = None) -> tuple[bool, str]:
    """Whether a recorded service is ours and healthy: (ok, one line)."""
    pid = int(entry.get("pid", 0))
    if pid <= 0 or not pid_alive(pid):
        return False, f"pid {pid} is not running"
    command = command_line(pid)
    if command is not None and entry.get("marker", "") not in command:
        return False, f"pid {pid} is another program ({command[:60]!r})"
    port = entry.get("port")
    if need_port and port and not port_answers(entry.get("host", "127.0.0.1"), port):
        return False, f"pid {pid} runs but {entry.get('host')}:{port} does not answer"
    if need_port and keys and entry.get("health"):
        code = http_status(entry["host"], port, entry["health"], keys.get(entry.get("key")))
        if code != 200:
            return False, f"pid {pid} runs but GET {entry['health']} with the API key answers {code}"
    where = f", {entry.get('host')}:{port}" if port else ""
    return True, f"running, pid {pid}{where}, log {entry.get('log')}"


def _read_state(path: Path) -> dict:
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(state, indent=1))


def _keys(cfg, path: Path, *, create: bool = True) -> dict:
    """API keys of tiled and of the queue (operator, observer): configuration/environment, else generated
    once (mode 600)."""
    stored = _read_state(path)
    keys = {"tiled": cfg.get("storage.api_key") or os.environ.get("TILED_API_KEY") or stored.get("tiled"),
            "queue": cfg.get("queue.api_key") or os.environ.get("BRAGGSCOPE_QUEUE_API_KEY") or stored.get("queue"),
            "observer": (cfg.get("queue.observer_key") or os.environ.get("BRAGGSCOPE_QUEUE_OBSERVER_KEY")
                         or stored.get("observer"))}
    if create and not all(keys.values()):
        keys = {k: v or secrets.token_hex(24) for k, v in keys.items()}
        write_private(path, json.dumps({k: v for k, v in keys.items()}))
    return keys


def _effective_config(cfg, keys: dict, path: Path):
    """The configuration the services run with (tiled URI, keys, queue URL), written with mode 600."""
    effective = copy.deepcopy(cfg)
    peer = connect_host(cfg["serve.host"])
    if "tiled" in cfg["serve.services"]:
        effective.set("storage.tiled_uri", f"http://{peer}:{cfg['serve.tiled_port']}")
        effective.set("storage.api_key", keys["tiled"])
    effective.set("queue.url", f"http://{peer}:{cfg['serve.http_port']}")
    effective.set("queue.api_key", keys["queue"])
    effective.set("queue.observer_key", keys["observer"])
    save_config(effective, path)
    os.chmod(path, 0o600)
    return effective


def _checked_services(cfg, services) -> list[str]:
    services = list(cfg["serve.services"] if services is None else services)
    unknown = sorted(set(services) - set(ORDER))
    if unknown:
        raise ConfigError(f"unknown service(s) {unknown}: choose among {', '.join(ORDER)}")
    return services
