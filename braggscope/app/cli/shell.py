"""``braggscope shell``: the operator's IPython session (:mod:`braggscope.app.session`).

The namespace comes from :func:`~braggscope.app.session.namespace.make_session` (devices, RunEngine,
catalog, commands), or with ``--queue`` from :func:`~braggscope.app.serve.queue_shell.queue_namespace`
(the same commands, run by a queue server's worker: no RunEngine here). IPython starts with braggscope's
magics and, where a display exists, a GUI event loop and the live maps' window.
"""

from __future__ import annotations

from IPython import start_ipython
from traitlets.config import Config

from braggscope.app.serve.queue_shell import queue_namespace
from braggscope.app.session.display import has_display
from braggscope.core.config import load_config

__all__ = ["configure", "start_shell"]

#: the session's IPython extension: %wa %mv %ct ..., and no /bin/mv alias
MAGICS = "braggscope.app.session.magics"
#: each cell and each error's traceback in the session log
CELL_LOG = "braggscope.app.session.cell_log"
LIVE_WINDOW = ("from braggscope.app.session.live_figures import show_live_maps as _s; "
               "live_window = _s(live); del _s")


def configure(parser) -> None:
    """Add the options of ``braggscope shell``."""
    parser.add_argument("--inprocess", action="store_true",
                        help="in-process simulated devices (no EPICS, no simulator process)")
    parser.add_argument("--no-live", action="store_true", help="do not subscribe the live SXDM maps")
    parser.add_argument("--queue", nargs="?", const="", metavar="URL",
                        help="the commands run by a queue server's worker (braggscope serve) instead of a "
                             "RunEngine of its own, and a `queue` client (URL default: [queue] url; key: "
                             "[queue] api_key or $BRAGGSCOPE_QUEUE_API_KEY)")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    cfg = load_config(args.config)
    if args.queue is not None:
        ns = queue_namespace(cfg, args.queue or None)
    else:
        # slow to import (bluesky, ophyd, the plans): not for a queue client
        from braggscope.app.session.namespace import make_session

        ns = make_session(cfg, inprocess=args.inprocess, live=not args.no_live)
    start_shell(ns)
    return 0


def start_shell(ns: dict) -> None:
    """IPython on the namespace ``ns`` (its ``__banner__`` shown); ``ns["__cleanup__"]()`` when it exits."""
    config = Config()
    config.TerminalInteractiveShell.banner1 = ""  # no Python/IPython version banner: ours says what matters
    config.TerminalInteractiveShell.banner2 = ns["__banner__"]
    # a GUI event loop for figures where a display exists; headless, matplotlib picks Agg by itself
    # (and "%matplotlib agg" would print "No event loop hook running." under the banner)
    config.InteractiveShellApp.exec_lines = ["%matplotlib"] if has_display() else []
    config.InteractiveShellApp.extensions = [MAGICS, CELL_LOG]
    if has_display() and ns.get("live") is not None:  # the live SXDM maps in a window (GUI timer)
        config.InteractiveShellApp.exec_lines.append(LIVE_WINDOW)
    cleanup = ns["__cleanup__"]
    try:
        start_ipython(argv=[], user_ns=ns, config=config)
    finally:
        cleanup()
