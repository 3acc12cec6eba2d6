"""Processes a braggscope application started: are they still ours, and how to stop them.

A state file (the simulator's, the local catalog server's, ``braggscope
serve``'s) names a pid and a port. Before anything reports or kills that pid,
its command line and its port are checked here, so a pid reused by another
program is never mistaken for ours. Bottom layer: standard library only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

__all__ = ["pid_alive", "command_line", "port_answers", "terminate", "free_port"]


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
