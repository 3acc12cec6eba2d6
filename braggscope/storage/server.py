"""The local catalog server: one Tiled server per user catalog, shared by every braggscope process.

The embedded catalog (a SQLite + DuckDB file opened inside one process) admits
one process at a time. With ``storage.catalog_server = "auto"`` (the default)
and no ``storage.tiled_uri``, :func:`ensure_server` instead starts, on demand,
a Tiled server on 127.0.0.1 and a free port over the same catalog files
(``<storage.data_dir>/catalog``), so the shell can write while ``braggscope
reduce``, a second shell or a notebook read. Every braggscope process of the
user finds it through a state file (``catalog_server.json``: pid, port, URI),
trusted only when the pid is alive, runs this module and its port answers (as
the simulator's). The API key is generated once and kept in a user-only file
(``catalog_server.key``, mode 600); it is passed to the server through its
environment, never its command line.

The server process holds the catalog's one-writer lock
(``storage.locks``), so a process that opens the same catalog embedded
is refused while the server runs. ``braggscope catalog stop|status`` (``braggscope.app.cli.catalog``)
stop and show it; it otherwise runs until stopped, and exits by itself when its state
file or its catalog file disappears (a removed data directory leaves no server).

Server process: ``python -m braggscope.storage.server --root DIR --port N
--state-file FILE [--read DIR ...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import sys
import threading
import time
from pathlib import Path

from braggscope.core.errors import ServerUnreachableError, UserError
from braggscope.core.processes import SpawnExited, SpawnTimeout, free_port, spawn_detached
from braggscope.core.processes import command_line as _command_line
from braggscope.core.processes import pid_alive as _pid_alive
from braggscope.core.processes import port_answers as _port_answers
from braggscope.core.processes import terminate as _terminate
from braggscope.storage.adapter import catalog_adapter
from braggscope.storage.locks import acquire_writer_lock, creation_lock

__all__ = ["ensure_server", "server_paths", "server_status", "stop_server"]

RUNNER_MODULE = "braggscope.storage.server"
START_TIMEOUT_S = 60.0


def server_paths(cfg) -> dict[str, Path]:
    """State, key, lock and log files of the local catalog server (in ``storage.data_dir``)."""
    data_dir = cfg.expand_path("storage.data_dir")
    return {"data_dir": data_dir, "root": data_dir / "catalog", "state": data_dir / "catalog_server.json",
            "key": data_dir / "catalog_server.key", "lock": data_dir / "catalog_server.lock",
            "log": data_dir / "catalog_server.log", "port": data_dir / "catalog_server.port"}


def wanted(cfg) -> bool:
    """Whether this configuration's catalog is the local server (not a ``tiled_uri``, not embedded).

    ``$BRAGGSCOPE_CATALOG_SERVER`` (``auto``/``off``) overrides ``storage.catalog_server``.
    """
    if (cfg.get("storage.tiled_uri") or "").strip():
        return False
    mode = os.environ.get("BRAGGSCOPE_CATALOG_SERVER") or cfg.get("storage.catalog_server", "auto")
    if mode not in ("auto", "off"):
        raise UserError(f"storage.catalog_server (or $BRAGGSCOPE_CATALOG_SERVER) must be 'auto' or 'off', "
                        f"got {mode!r}")
    return mode == "auto"


def server_status(cfg) -> tuple[dict | None, str]:
    """``(state, "")`` for a live server of this catalog, else ``(None, why not)``."""
    path = server_paths(cfg)["state"]
    try:
        state = json.loads(path.read_text())
        pid, port = int(state["pid"]), int(state["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, "no readable state file"
    if not _pid_alive(pid):
        return None, f"stale state file: pid {pid} is not running"
    command = _command_line(pid)
    if command is not None and RUNNER_MODULE not in command:
        return None, f"stale state file: pid {pid} is another program ({command[:80]!r})"
    if not _port_answers(port):
        return None, f"pid {pid} does not answer on 127.0.0.1:{port}"
    return state, ""


def _key(path: Path) -> str:
    """The server's API key: read from ``path``, or generated and written there with mode 600."""
    with contextlib.suppress(OSError):
        key = path.read_text().strip()
        if key:
            return key
    key = secrets.token_hex(24)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    os.chmod(path.with_suffix(".tmp"), 0o600)
    os.replace(path.with_suffix(".tmp"), path)
    return key


@contextlib.contextmanager
def _start_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_server(cfg, *, readable_paths=(), timeout: float = START_TIMEOUT_S, echo=None) -> tuple[str, str]:
    """The local catalog server's ``(uri, api_key)``, starting it if none serves this catalog.

    Two processes asking at once start one server (a lock file serialises the
    start). The server reuses its previous port when that port is free, so
    clients that lost it find it again at the same address after a restart.

    Parameters
    ----------
    cfg : braggscope.core.config.Config
    readable_paths : sequence of path-like
        Extra directories of detector files the catalog may read in place.
    timeout : float
        Seconds to wait for a new server to answer.
    echo : callable, optional
        Called with one line when a server is started (default: print to stderr).
    """

    paths = server_paths(cfg)
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    with _start_lock(paths["lock"]):
        key = _key(paths["key"])
        state, _ = server_status(cfg)
        if state is not None:
            return state["uri"], key
        port = _previous_port(paths["port"])
        if port is None or _port_answers(port):
            port = free_port()
        paths["port"].write_text(f"{port}\n")  # a restarted server comes back at the same address
        readable = [cfg.expand_path("detector.read_path"),
                    *[Path(os.path.expandvars(os.path.expanduser(str(p))))
                      for p in cfg.get("storage.readable_paths", []) or []], *map(Path, readable_paths)]
        command = [sys.executable, "-m", RUNNER_MODULE, "--root", str(paths["root"]), "--port", str(port),
                   "--state-file", str(paths["state"])]
        for path in readable:
            Path(path).expanduser().mkdir(parents=True, exist_ok=True)  # as the embedded catalog does
            command += ["--read", str(Path(path).expanduser())]
        paths["state"].unlink(missing_ok=True)

        def ready(process):
            state, _ = server_status(cfg)
            return state if state is not None and state["pid"] == process.pid else None

        try:
            process, state = spawn_detached(command, paths["log"], ready, timeout, poll_s=0.1,
                                            env={**os.environ, "BRAGGSCOPE_CATALOG_KEY": key})
        except SpawnExited as exc:
            raise ServerUnreachableError(f"the local catalog server exited with code {exc.process.returncode} "
                                         f"during start-up; see {paths['log']}") from None
        except SpawnTimeout:
            raise ServerUnreachableError(f"the local catalog server did not answer within {timeout:g} s; "
                                         f"see {paths['log']}") from None
        echo(f"catalog: started the local catalog server on 127.0.0.1:{port} (pid {process.pid}; "
             f"braggscope catalog stop)")
        return state["uri"], key


def _previous_port(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        port = int(path.read_text().strip())
        return port if 0 < port < 65536 else None
    return None


def stop_server(cfg, *, timeout: float = 10.0) -> int | None:
    """Stop this catalog's local server (SIGTERM, then SIGKILL); its pid, or None if none ran."""
    paths = server_paths(cfg)
    state, _ = server_status(cfg)
    if state is None:
        paths["state"].unlink(missing_ok=True)
        return None
    _terminate(int(state["pid"]), None, timeout=timeout)
    paths["state"].unlink(missing_ok=True)
    return int(state["pid"])


# ---------------------------------------------------------------------- server process
def _serve(args) -> int:
    import uvicorn
    from tiled.config import Authentication
    from tiled.server.app import build_app

    key = os.environ.pop("BRAGGSCOPE_CATALOG_KEY", "")
    if not key:
        print("catalog server: no API key in $BRAGGSCOPE_CATALOG_KEY", file=sys.stderr)
        return 2
    root = Path(args.root)
    acquire_writer_lock(root)  # the one writer of these files while it serves
    with creation_lock(root):
        catalog = catalog_adapter(root, args.read)
    app = build_app(catalog, Authentication(single_user_api_key=key))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning"))
    state_file = Path(args.state_file)

    def announce():  # the state file appears once the port listens; the server watches it then
        while not server.should_exit:
            if server.started:
                state = {"pid": os.getpid(), "port": args.port, "uri": f"http://127.0.0.1:{args.port}",
                         "root": str(root), "since": time.time()}
                tmp = state_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(state))
                os.replace(tmp, state_file)
                break
            time.sleep(0.05)
        while not server.should_exit:  # orphaned (data directory removed, or another server took over): exit
            time.sleep(2.0)
            try:
                ours = json.loads(state_file.read_text()).get("pid") == os.getpid()
            except (OSError, ValueError, AttributeError):
                ours = False
            if not ours or not (root / "catalog.db").exists():
                print("catalog server: state file or catalog gone; exiting", file=sys.stderr, flush=True)
                server.should_exit = True

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run()
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state_file.read_text()).get("pid") == os.getpid():
                state_file.unlink()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="braggscope local catalog server (Tiled, 127.0.0.1 only)")
    parser.add_argument("--root", required=True, help="catalog directory (storage.data_dir/catalog)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-file", required=True)
    parser.add_argument("--read", action="append", default=[], help="readable detector-file directory")
    return _serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
