"""``braggscope serve [start|stop|status]``: the beamline's services (:mod:`braggscope.app.serve.services`)."""

from __future__ import annotations

from braggscope.app.serve.services import (
    ORDER,
    START_TIMEOUT_S,
    serve_paths,
    service_status,
    start_services,
    stop_services,
)
from braggscope.core.config import load_config
from braggscope.core.errors import UserError

__all__ = ["configure"]


def configure(parser) -> None:
    """Add the action and options of ``braggscope serve``."""
    parser.add_argument("action", nargs="?", choices=("start", "stop", "status"), default="start")
    parser.add_argument("--services",
                        help=f"comma-separated subset of {','.join(ORDER)} (default: [serve] services)")
    parser.add_argument("--timeout", type=float, default=START_TIMEOUT_S, help="seconds each service has to answer")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    cfg = load_config(args.config)
    services = None if not args.services else [s.strip() for s in args.services.split(",") if s.strip()]
    if not (0 < args.timeout < float("inf")):
        raise UserError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.action == "stop":
        print(f"stopped: {', '.join(stop_services(cfg, services)) or 'nothing'}")
        return 0
    if args.action == "status":
        return _print_status(service_status(cfg))
    start_services(cfg, services, timeout=args.timeout)
    paths = serve_paths(cfg)
    print(f"API keys: {paths['keys']} unless given in the configuration or environment; "
          f"client configuration: {paths['config']}")
    return 0


def _print_status(status: dict) -> int:
    """One line per service; 0 when every service runs, else 1."""
    for name in ORDER:
        if name in status:
            print(f"{name:9s} {'ok  ' if status[name][0] else 'DOWN'} {status[name][1]}")
    if not status:
        print("no service started by braggscope serve")
    return 0 if status and all(ok for ok, _ in status.values()) else 1
