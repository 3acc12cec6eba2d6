"""The ``braggscope`` command line.

Each command group has a module of its own here (``sim``, ``catalog``, ``shell``, ``demo``,
``reduce``, ``live``, ``serve``) that configures its sub-parser (``configure(parser)``) and runs
it. Only the module of the command named on the command line is imported: ``braggscope --help``
lists the commands from :data:`COMMANDS` and imports none of them.

Errors are handled here, once for every command:

- an expected error (a :class:`~braggscope.core.errors.UserError`: bad file,
  missing source, bad data, bad argument or configuration, unreachable
  server), or a file that cannot be written (no space, no permission), is
  printed as ONE line on stderr, ``braggscope <command>: <message>``, and the
  exit status is 2; a command writes its outputs only once its inputs are
  validated, and atomically, so nothing partial is left;
- a bad command-line argument: one line, exit 2 (argparse's usage block is
  left to ``--help``);
- Ctrl-C: ``interrupted``, exit 130;
- anything else is a bug and keeps its traceback (exit 1).

A run is quiet: deprecation warnings of the libraries are not shown, other
warnings take one line (``braggscope <command>: warning: ...``), the
embedded catalog server's start-up banner is dropped; Channel Access clients
get a CA repeater in the process (``braggscope.devices.factory.make_devices``
calls :func:`braggscope.devices.ca_client.ensure_repeater`), so libca does not
complain that it cannot find or contact one.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import sys
import warnings

from braggscope import __version__
from braggscope.core.errors import EXIT_USER_ERROR, UserError

#: command -> (the module that configures and runs it, its one-line help)
COMMANDS = {
    "sim": ("braggscope.app.cli.sim", "EPICS simulator (caproto IOCs on 127.0.0.1)"),
    "catalog": ("braggscope.app.cli.catalog", "the local catalog server (status, stop)"),
    "shell": ("braggscope.app.cli.shell", "IPython session with devices, plans, RunEngine and catalog"),
    "demo": ("braggscope.app.cli.demo", "run the SXDM or BCDI demonstration on the simulator"),
    "reduce": ("braggscope.app.cli.reduce", "reduce an SXDM map or a BCDI rocking scan"),
    "live": ("braggscope.app.cli.live", "live SXDM maps from the document bus (can run on another host)"),
    "serve": ("braggscope.app.cli.serve", "start/stop/check the beamline services (simulator, tiled, queue, "
                                          "HTTP server, live maps)"),
}

#: errno values of an output that cannot be written: the user's to fix, reported in one line.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT, errno.ENOENT, errno.EISDIR,
                 errno.ENOTDIR}

#: Sub-command destinations, in order, that name the command in messages.
_COMMAND_DESTS = ("command", "reduce_kind", "sim_command", "kind")


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (exit 2); sub-parsers inherit it."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The ``braggscope`` parser.

    Parameters
    ----------
    commands : iterable of str, optional
        The commands whose own parsers are built (their modules imported); the others are only
        listed with their help. Default: every command.
    """
    parser = OneLineParser(
        prog="braggscope",
        description="Acquisition, control and analysis for nano-focused Bragg diffraction imaging.",
    )
    parser.add_argument("--version", action="version", version=f"braggscope {__version__}")
    parser.add_argument("--config", help="beamline TOML file (default: $BRAGGSCOPE_CONFIG or the simulator)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    built = set(COMMANDS if commands is None else commands)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if name in built:
            importlib.import_module(module).configure(command)
    return parser


def named_command(argv=None) -> str | None:
    """The command ``argv`` names (None when it names none: ``--help``, ``--version``, nothing)."""
    pre = OneLineParser(prog="braggscope", add_help=False)
    pre.add_argument("--config")
    pre.add_argument("command", nargs="?")
    known, _ = pre.parse_known_args(argv)
    return known.command if known.command in COMMANDS else None


def main(argv=None) -> int:
    """Run ``braggscope``; returns the exit status (0 success, 2 expected error, 130 interrupted)."""
    try:
        parser = build_parser([named] if (named := named_command(argv)) else [])
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad argument (already printed on one line)
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    prog = " ".join(["braggscope"] + [str(v) for d in _COMMAND_DESTS if isinstance(v := getattr(args, d, None), str)])
    with quiet_runtime(prog):
        try:
            return int(args.func(args) or 0)
        except UserError as exc:
            return _fail(prog, exc)
        except OSError as exc:
            if exc.errno in _WRITE_ERRNOS and exc.filename:
                return _fail(prog, f"{exc.filename}: {exc.strerror}")
            raise
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


def _fail(prog, exc) -> int:
    print(f"{prog}: {one_line(exc)}", file=sys.stderr)
    return EXIT_USER_ERROR


def one_line(message) -> str:
    """A message on one line (line breaks become '; ')."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


@contextlib.contextmanager
def quiet_runtime(prog: str = "braggscope"):
    """Warnings and library logging as a command-line run shows them (restored on exit).

    Deprecation, future and resource warnings are hidden (they are for
    developers); any other warning is one line, ``<prog>: warning: <message>``;
    the embedded Tiled server's INFO messages (its version banner) are dropped.
    """
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {one_line(message)}", file=sys.stderr if file is None else file)

    tiled_log = logging.getLogger("tiled.server.app")
    banner_filter = _BelowWarning()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        # ResourceWarning too: "subprocess N is still running" is the shared catalog server, detached by design
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("ignore", message=r".*[Dd]eprecat")  # libraries' own *DeprecationWarning classes
        warnings.showwarning = show
        tiled_log.addFilter(banner_filter)
        try:
            yield
        finally:
            tiled_log.removeFilter(banner_filter)


class _BelowWarning(logging.Filter):
    def filter(self, record):
        return record.levelno >= logging.WARNING

