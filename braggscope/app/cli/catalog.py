"""``braggscope catalog status|stop``: the local catalog server (``braggscope.storage.server``)."""

from __future__ import annotations

from braggscope.storage.server import server_paths, server_status, stop_server
from braggscope.core.config import load_config

__all__ = ["add_parser"]


def add_parser(subparsers) -> None:
    """Add ``catalog status|stop`` to the ``braggscope`` command line."""
    p = subparsers.add_parser("catalog", help="the local catalog server (status, stop)")
    sub = p.add_subparsers(dest="catalog_command", metavar="ACTION")
    sub.add_parser("status", help="show whether the local catalog server runs").set_defaults(func=_cmd_status)
    sub.add_parser("stop", help="stop the local catalog server").set_defaults(func=_cmd_stop)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _cmd_status(args) -> int:
    cfg = load_config(args.config)
    state, why = server_status(cfg)
    if state is None:
        print(f"catalog server: not running ({why})")
        return 1
    print(f"catalog server: running, pid {state['pid']}, {state['uri']} (catalog {state.get('root', '?')}; "
          f"API key in {server_paths(cfg)['key']})")
    return 0


def _cmd_stop(args) -> int:
    pid = stop_server(load_config(args.config))
    print("catalog server: not running" if pid is None else f"catalog server stopped (pid {pid})")
    return 0
