"""The ``braggscope`` command line.

Each command group lives in its own module, which adds its sub-parser through
``add_parser(subparsers)`` and imports its heavy dependencies only when run,
so ``braggscope --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module -> owner of a command group; each defines add_parser(subparsers)
COMMAND_MODULES = (
    "braggscope.app.simctl",     # braggscope sim start|stop|status
    "braggscope.app.session",    # braggscope shell
    "braggscope.app.demo",       # braggscope demo sxdm|bcdi
    "braggscope.app.reduce",     # braggscope reduce sxdm|bcdi
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="braggscope",
        description="Acquisition, control and analysis for nano-focused Bragg diffraction imaging.",
    )
    parser.add_argument("--config", help="beamline TOML file (default: $BRAGGSCOPE_CONFIG or the simulator)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_command_groups(sub, COMMAND_MODULES)
    return parser


def add_command_groups(subparsers, module_names) -> None:
    """Let each module that is installed add its sub-parser.

    A module that is absent is skipped; an import error *inside* a present
    module is raised, so a broken command is never silently hidden.
    """
    for name in module_names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_parser(subparsers)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
