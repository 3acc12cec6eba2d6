"""Helpers of the tests that start real services on loopback (test_queue, test_serve, test_storage_postgres)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
import time

import pytest


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_or_skip(db: int):
    """A Redis client of database ``db`` on 127.0.0.1:6379, or skip saying why."""
    try:
        import redis
    except ImportError:
        pytest.skip("the redis Python package is not installed")
    client = redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=5)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"Redis at 127.0.0.1:6379 does not answer: {exc}")
    return client


def psql(sql: str, database: str = "postgres") -> subprocess.CompletedProcess:
    """Run one SQL statement as user postgres on 127.0.0.1:5432."""
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-tAc", sql],
                          capture_output=True, text=True, timeout=30)


def postgres_or_skip() -> None:
    """Skip, saying why, unless PostgreSQL answers on 127.0.0.1:5432."""
    if shutil.which("psql") is None:
        pytest.skip("psql not installed: PostgreSQL unavailable")
    probe = psql("select 1")
    if probe.returncode != 0:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 unreachable: {probe.stderr.strip()[:200]}")


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (IPv4 dotted, IPv6 as '::' or hex)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) != port or fields[3] != "0A":  # 0A = LISTEN
                continue
            if len(address) == 8:
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
            else:
                found.add("::" if set(address) == {"0"} else address)
    return found


def processes_with(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose command line contains ``marker``."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if marker in command and int(pid) != os.getpid():
            found.append((int(pid), command))
    return found


def assert_no_process_left(*markers: str, ports=(), timeout: float = 10.0) -> None:
    """No process runs with any of ``markers`` in its command line, and nothing listens on ``ports``."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for m in markers for p in processes_with(m)]
        listening = [p for p in ports if listening_addresses(p)]
        if not left and not listening:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: processes {left}, listening ports {listening}")
        time.sleep(0.2)


def newest_child(pid: int) -> int:
    """The child process of ``pid`` started last (from /proc)."""
    children = []
    for entry in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields[1]: ppid; fields[19]: start time in clock ticks
            children.append((int(fields[19]), int(entry)))
    if not children:
        raise LookupError(f"process {pid} has no child")
    return max(children)[1]


def catalog_server_config(tmp_path):
    """A configuration file under ``tmp_path`` whose catalog is the local catalog server (``auto``)."""
    path = tmp_path / "braggscope.toml"
    path.write_text(textwrap.dedent(f"""
        [storage]
        data_dir = "{tmp_path / 'data'}"
        catalog_server = "auto"
        [detector]
        read_path = "{tmp_path / 'det'}"
    """))
    return path


def live_intensities(frames):
    """What the live maps count for each frame (the default ``background="constant"``): its counts less
    its background level (``frame_backgrounds``) over every pixel. ``frames``: (..., rows, cols)."""
    import numpy as np

    from braggscope.analysis.live.callback import frame_backgrounds

    frames = np.asarray(frames)
    flat = frames.reshape(-1, frames.shape[-2] * frames.shape[-1]).astype(np.float32)
    level, _ = frame_backgrounds(flat)
    out = flat.sum(axis=1, dtype=np.float64) - level.astype(np.float64) * flat.shape[1]
    return out.reshape(frames.shape[:-2])
