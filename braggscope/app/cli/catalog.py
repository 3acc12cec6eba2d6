"""``braggscope catalog status|stop``: the local catalog server (``braggscope.storage.server``)."""

from __future__ import annotations

from braggscope.core.config import load_config
from braggscope.storage.server import server_paths, server_status, stop_server

__all__ = ["configure"]


def configure(parser) -> None:
    """Add ``status`` and ``stop`` to the ``catalog`` parser."""
    actions = parser.add_subparsers(dest="catalog_command", metavar="ACTION")
    actions.add_parser("status", help="show whether the local catalog server runs").set_defaults(func=_status)
    actions.add_parser("stop", help="stop the local catalog server").set_defaults(func=_stop)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _status(args) -> int:
    cfg = load_config(args.config)
    state, why = server_status(cfg)
    if state is None:
        print(f"catalog server: not running ({why})")
        return 1
    print(f"catalog server: running, pid {state['pid']}, {state['uri']} (catalog {state.get('root', '?')}; "
          f"API key in {server_paths(cfg)['key']})")
    return 0


def _stop(args) -> int:
    pid = stop_server(load_config(args.config))
    print("catalog server: not running" if pid is None else f"catalog server stopped (pid {pid})")
    return 0
