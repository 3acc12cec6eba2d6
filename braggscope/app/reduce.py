"""``braggscope reduce sxdm|bcdi``: offline reductions from the command line.

The commands themselves live with the analysis they run
(``braggscope.analysis.sxdm.cli`` and ``braggscope.analysis.bcdi.cli``).
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    from braggscope.app.cli import add_command_groups

    parser = subparsers.add_parser("reduce", help="reduce an SXDM map or a BCDI rocking scan")
    sub = parser.add_subparsers(dest="reduce_kind", metavar="KIND")
    add_command_groups(sub, ("braggscope.analysis.sxdm.cli", "braggscope.analysis.bcdi.cli"))
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
