"""The simulator of a simulated beamline: start, stop and find its server process.

The simulator is one caproto server process (motors, Maxipix and fluorescence detectors, see
``braggscope.simulators.ioc_run``) listening on 127.0.0.1 on a free port. It
runs detached; a JSON state file in the data directory records its pid, port
and PV prefixes, so ``status`` and ``stop`` find it from another shell.

``braggscope sim start|stop|status`` (:mod:`braggscope.app.cli.sim`) is its command line; from
Python (tests, demos)::

    handle = start_simulator(cfg)      # also sets EPICS_CA_ADDR_LIST etc. here
    ...
    stop_simulator(handle)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from braggscope.core.config import load_config, save_config
from braggscope.core.errors import ConfigError, UserError
from braggscope.core.processes import (
    SpawnExited,
    SpawnTimeout,
    command_line,
    pid_alive,
    port_answers,
    spawn_detached,
    terminate,
)
from braggscope.simulators.samples import SAMPLE_NAMES

__all__ = [
    "SimulatorHandle", "SampleMismatchError", "apply_client_env", "check_sample", "client_env",
    "checked_state", "read_state", "scratch_config", "start_simulator", "state_file_for", "stop_simulator",
]

STATE_NAME = "simulator.json"
#: The module the simulator process runs (checked in its command line before it is trusted).
RUNNER_MODULE = "braggscope.simulators.ioc_run"


@dataclass
class SimulatorHandle:
    """A running simulator.

    Attributes
    ----------
    pid : int
        Server process id.
    port : int
        Channel Access port (TCP server and UDP search) on 127.0.0.1.
    state_file : pathlib.Path
        JSON file describing the server (deleted when it stops).
    info : dict
        The state file's content (PV prefixes under ``motors`` / ``detector``).
    process : subprocess.Popen or None
        Set when started by this process.
    """

    pid: int
    port: int
    state_file: Path
    info: dict = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def sample(self) -> str | None:
        """The sample preset the simulator serves (None: motors only, or a simulator too old to say)."""
        return self.info.get("sample")

    @property
    def addr_list(self) -> str:
        """Value for ``EPICS_CA_ADDR_LIST``."""
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        """Whether the server process still runs."""
        if self.process is not None:
            return self.process.poll() is None
        return pid_alive(self.pid)


class SampleMismatchError(UserError):
    """The running simulator serves another sample than the one asked for."""


def check_sample(handle: SimulatorHandle, sample: str, *, needed_by: str = "this") -> None:
    """Refuse (one line) a running simulator that does not serve ``sample``.

    Raises
    ------
    SampleMismatchError
        The simulator serves another preset (or cannot say which): the message
        names both and the commands that fix it.
    """
    served = handle.sample
    if served != sample:
        what = f"serves sample {served!r}" if served else "does not say which sample it serves"
        raise SampleMismatchError(
            f"the running simulator (pid {handle.pid}, port {handle.port}) {what} but {needed_by} needs "
            f"{sample!r}: braggscope sim stop, then braggscope sim start --sample {sample})")


def client_env(port: int) -> dict[str, str]:
    """Channel Access client environment for a loopback simulator on ``port``."""
    if not (isinstance(port, int) and 0 < port < 65536):
        raise ValueError(f"port must be an int in 1..65535, got {port!r}")
    return {
        "EPICS_CA_ADDR_LIST": f"127.0.0.1:{port}",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_MAX_ARRAY_BYTES": str(64 * 1024 * 1024),
    }


def apply_client_env(port: int) -> dict[str, str]:
    """Set the CA client environment in this process (before any CA connection)."""
    env = client_env(port)
    os.environ.update(env)
    return env


def state_file_for(cfg) -> Path:
    """Where the simulator's state file lives: ``<storage.data_dir>/simulator.json``."""
    return cfg.expand_path("storage.data_dir") / STATE_NAME


def read_state(state_file: str | os.PathLike) -> SimulatorHandle | None:
    """The simulator described by ``state_file``, or None if absent, dead or not ours.

    The state file is only trusted when the process it names is alive, runs
    our IOC runner (its command line) and its port answers on 127.0.0.1: a
    stale file whose PID was reused by another program is ignored (and never
    leads ``sim stop`` to kill that program).
    """
    return checked_state(state_file)[0]


def checked_state(state_file) -> tuple[SimulatorHandle | None, str]:
    """``(handle or None, why not)`` for a state file (see :func:`read_state`)."""
    path = Path(state_file).resolve()
    try:
        info = json.loads(path.read_text())
        handle = SimulatorHandle(int(info["pid"]), int(info["port"]), path, info)
    except (OSError, ValueError, KeyError, TypeError):
        return None, "no readable state file"
    if not handle.alive():
        return None, f"stale state file: pid {handle.pid} is not running"
    command = command_line(handle.pid)
    if command is not None and RUNNER_MODULE not in command:
        return None, f"stale state file: pid {handle.pid} is another program ({command[:80]!r})"
    if command is not None and f"--state-file {path}" not in command:
        theirs = command.partition("--state-file ")[2].split(" ")[0] or "none"
        return None, (f"stale state file: pid {handle.pid} is the simulator of another data directory "
                      f"(its state file: {theirs})")
    if not port_answers(handle.port):
        return None, f"pid {handle.pid} does not answer on 127.0.0.1:{handle.port}"
    return handle, ""


def scratch_config(root, *, frame_size: int | None = None, pv_prefix: str | None = None):
    """The packaged configuration with a simulator's files under ``root``: detector files in
    ``root/detector`` (created), the catalog and data in ``root``.

    Parameters
    ----------
    root : path-like
    frame_size : int, optional
        Square detector frames of this many pixels a side, the direct beam at their centre.
    pv_prefix : str, optional
        Replaces the IOC prefix (the part up to the first ``:``, included) of every ``pv.*``
        key, e.g. ``"BSFLYT:"``: a second simulator beside one with the packaged prefix.
    """
    root = Path(root)
    (root / "detector").mkdir(parents=True, exist_ok=True)
    cfg = load_config()
    for key in ("detector.write_path", "detector.read_path"):
        cfg.set(key, str(root / "detector"))
    cfg.set("storage.data_dir", str(root))
    if frame_size is not None:
        cfg.set("detector.shape", [int(frame_size), int(frame_size)])
        cfg.set("detector.cch", [frame_size / 2.0, frame_size / 2.0])
    if pv_prefix is not None:
        for key, value in cfg["pv"].items():
            if value:  # "" means no such hardware
                cfg.set(f"pv.{key}", pv_prefix + value.partition(":")[2])
    return cfg


def start_simulator(cfg=None, *, port: int = 0, state_file: str | os.PathLike | None = None,
                    with_detector: bool = True, nodelay: bool = True, timeout: float = 60.0,
                    set_env: bool = True, exit_with_parent: bool = False) -> SimulatorHandle:
    """Launch the simulator server in the background and wait until it serves.

    Parameters
    ----------
    cfg : braggscope.core.config.Config, optional
        Configuration (default: ``load_config()``); it is passed to the server
        as a TOML file, so in-memory edits are honoured.
    port : int
        CA port, 0 to pick a free one.
    state_file : path-like, optional
        Default: ``state_file_for(cfg)``. Refused if a live simulator owns it.
    with_detector : bool
        Serve the Maxipix and fluorescence detectors as well as the motors.
    nodelay : bool
        Apply the TCP_NODELAY fix (False only for benchmarks).
    timeout : float
        Seconds to wait for the server to come up.
    set_env : bool
        Also set the CA client environment of this process (``apply_client_env``).
    exit_with_parent : bool
        The server exits by itself when this process ends (tests, demo);
        False for ``braggscope sim start``, whose server outlives the command.

    Returns
    -------
    SimulatorHandle
    """
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise ValueError(f"port must be an int in 0..65535, got {port!r}")
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 s, got {timeout!r}")
    cfg = load_config() if cfg is None else cfg
    sample = cfg.get("simulator.sample")
    if sample not in SAMPLE_NAMES:  # before a process is started: the key is named, not a log to read
        raise ConfigError(f"[simulator] sample = {sample!r} (in {cfg.path}) is not a simulated sample; "
                          f"choose one of {', '.join(SAMPLE_NAMES)}")
    state_file = Path(state_file) if state_file is not None else state_file_for(cfg)
    running = read_state(state_file)
    if running is not None:
        raise RuntimeError(f"a simulator already runs (pid {running.pid}, port {running.port}); "
                           f"stop it first: braggscope sim stop  (state file {state_file})")
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.unlink(missing_ok=True)
    fd, cfg_path = tempfile.mkstemp(prefix="braggscope-sim-", suffix=".toml", dir=state_file.parent)
    os.close(fd)
    save_config(cfg, cfg_path)
    command = [sys.executable, "-m", RUNNER_MODULE, "--config", cfg_path,
               "--state-file", str(state_file.resolve()), "--port", str(port)]
    if not with_detector:
        command.append("--no-detector")
    if not nodelay:
        command.append("--no-nodelay")
    if exit_with_parent:
        command += ["--exit-with-parent", str(os.getpid())]
    log_path = state_file.with_suffix(".log")

    def ready(process):
        handle = read_state(state_file)
        return handle if handle is not None and handle.pid == process.pid else None

    try:
        process, handle = spawn_detached(command, log_path, ready, timeout)
    except SpawnExited as exc:
        raise RuntimeError(f"simulator exited with code {exc.process.returncode} during start-up; "
                           f"see {log_path}:\n{_tail(log_path)}") from None
    except SpawnTimeout:
        raise TimeoutError(f"simulator did not come up within {timeout} s; see {log_path}") from None
    handle.process = process
    if set_env:
        apply_client_env(handle.port)
    return handle


def stop_simulator(handle: SimulatorHandle | str | os.PathLike, *, timeout: float = 10.0) -> bool:
    """Stop a simulator (SIGTERM, then SIGKILL after ``timeout`` s).

    Parameters
    ----------
    handle : SimulatorHandle or path-like
        A handle from :func:`start_simulator` or a state file.

    Returns
    -------
    bool
        True if a running simulator was stopped.
    """
    if not isinstance(handle, SimulatorHandle):
        found = read_state(handle)
        if found is None:
            Path(handle).unlink(missing_ok=True)
            return False
        handle = found
    if handle.process is None:  # a handle read earlier: the pid may have been reused since
        command = command_line(handle.pid)
        if command is not None and RUNNER_MODULE not in command:
            handle.state_file.unlink(missing_ok=True)
            return False
    stopped = terminate(handle.pid, handle.process, timeout=timeout)
    handle.state_file.unlink(missing_ok=True)
    cfg_file = handle.info.get("config_file")
    if cfg_file and Path(cfg_file).name.startswith("braggscope-sim-"):  # ours, written at start
        Path(cfg_file).unlink(missing_ok=True)
    return stopped


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
