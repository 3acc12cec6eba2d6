"""Processes a braggscope application starts: starting them detached, are they still ours, stopping them.

:func:`spawn_detached` starts a server (the simulator, the local catalog
server, the services of ``braggscope serve``) in its own session with its
output in a log file, and waits until it says it is ready. A state file then
names its pid and port. Before anything reports or kills that pid, its command
line and its port are checked here, so a pid reused by another program is
never mistaken for ours. Bottom layer: standard library only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["SpawnError", "SpawnExited", "SpawnTimeout", "spawn_detached", "pid_alive", "command_line",
           "port_answers", "terminate", "free_port"]


class SpawnError(Exception):
    """A process from :func:`spawn_detached` did not become ready; the caller words the error.

    Attributes
    ----------
    process : subprocess.Popen
        The process (exited, or stopped by ``stop``).
    log_path : pathlib.Path
        Its log file (stdout and stderr).
    """

    def __init__(self, message: str, process: subprocess.Popen, log_path: Path):
        super().__init__(message)
        self.process = process
        self.log_path = log_path


class SpawnExited(SpawnError):
    """The process exited before it was ready (``process.returncode`` says how)."""


class SpawnTimeout(SpawnError):
    """The process was not ready within the timeout; it has been stopped."""


def spawn_detached(command: Sequence[str], log_path: str | os.PathLike, ready: Callable, timeout: float, *,
                   env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None,
                   started: Callable | None = None, stop: Callable | None = None, poll_s: float = 0.05):
    """Start ``command`` detached (own session, no stdin, output appended to ``log_path``); wait until ready.

    Parameters
    ----------
    command : sequence of str
    log_path : path-like
        Log file, appended to (stdout and stderr).
    ready : callable
        ``ready(process)`` is asked every ``poll_s`` while the process runs;
        anything but None or False means ready and is returned.
    timeout : float
        Seconds to wait for ``ready``.
    env : mapping, optional
        The whole environment of the process (default: this process's).
    cwd : path-like, optional
        Its working directory.
    started : callable, optional
        ``started(process)`` right after the start, before the wait (to
        track the process even when the wait is interrupted).
    stop : callable, optional
        ``stop(process)`` when it is not ready in time (default: SIGTERM,
        then SIGKILL after 10 s).
    poll_s : float
        Seconds between two ``ready`` calls.

    Returns
    -------
    (subprocess.Popen, object)
        The process and what ``ready`` returned.

    Raises
    ------
    SpawnExited
        It exited before it was ready.
    SpawnTimeout
        It was not ready within ``timeout`` s (and has been stopped).
    """
    log_path = Path(log_path)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(list(command), env=None if env is None else dict(env), cwd=cwd,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True)
    if started is not None:
        started(process)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise SpawnExited(f"exited with code {process.returncode} during start-up", process, log_path)
        value = ready(process)
        if value is not None and value is not False:
            return process, value
        if time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    if stop is None:
        terminate(process.pid, process)
    else:
        stop(process)
    raise SpawnTimeout(f"not ready within {timeout:g} s", process, log_path)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def command_line(pid: int, *, wait_s: float = 0.5) -> str | None:
    """The command line of process ``pid`` (None when it cannot be read).

    A process caught between fork and exec shows an empty command line for a
    moment: it is read again for up to ``wait_s`` before giving up (None).
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                text = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except FileNotFoundError:
            return None
        except OSError:
            break  # no /proc (macOS): ask ps
        if text:
            return text
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)
    try:
        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def port_answers(port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP server accepts connections on 127.0.0.1:``port`` (the CA server's circuit port)."""
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def terminate(pid: int, process: subprocess.Popen | None = None, *, timeout: float = 10.0) -> bool:
    """SIGTERM ``pid`` (or ``process``), SIGKILL after ``timeout`` s; False when it was not running."""
    if process is not None and process.poll() is not None:
        return False
    if process is None and not pid_alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                return True
        elif not pid_alive(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    if process is not None:
        process.wait(5)
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port number free for both TCP and UDP on ``host`` (CA uses both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
        return port
    raise RuntimeError(f"no free TCP+UDP port found on {host}")
