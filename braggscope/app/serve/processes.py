"""Processes of ``braggscope serve``: process groups, ports, console scripts, private files.

Small helpers of :mod:`braggscope.app.serve.services`, kept apart so that module reads as the services.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from braggscope.core import processes

__all__ = ["connect_host", "console_script", "http_status", "port_answers", "terminate_group", "write_private"]


def http_status(host: str, port: int, path: str, key: str | None, timeout: float = 5.0):
    """HTTP status of GET ``path`` with the API key (tiled and bluesky-httpserver read ``Authorization: ApiKey``)."""
    request = urllib.request.Request(f"http://{host}:{port}{path}", headers={"Authorization": f"ApiKey {key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return f"no answer ({exc})"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable and writable by its owner only (mode 600 from creation)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def terminate_group(pid: int, timeout: float) -> None:
    """SIGINT the process group (a clean shutdown), then SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _group_alive(pid):
                _reap(pid)
                return
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return processes.pid_alive(pgid) or any(_pgid_of(p) == pgid for p in _pids())


def _pids():
    try:
        return [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []


def _pgid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().split(")")[-1].split()
        return None if fields[0] == "Z" else int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def console_script(name: str) -> str:
    """The console script ``name`` of this Python environment."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def connect_host(host: str) -> str:
    """The address a client on this computer uses for a service bound to ``host`` (a wildcard: loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "*", "", "::") else host


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP server accepts connections on ``host:port`` within ``timeout`` seconds."""
    if host == "127.0.0.1":
        return processes.port_answers(port, timeout)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False
