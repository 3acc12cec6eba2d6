"""``braggscope reduce sxdm|bcdi``: offline reductions from the command line.

The commands themselves live with the analysis they run
(``braggscope.analysis.sxdm_cli`` and ``braggscope.analysis.bcdi_cli``).
"""

from __future__ import annotations

import importlib


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("reduce", help="reduce an SXDM map or a BCDI rocking scan")
    sub = parser.add_subparsers(dest="reduce_kind", metavar="KIND")
    for name in ("braggscope.analysis.sxdm_cli", "braggscope.analysis.bcdi_cli"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_parser(sub)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
