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
- a command whose extra is not installed (``braggscope sim`` without ``[beamline]``): one line
  naming the extra to install, exit 2;
- anything else is a bug: one line naming the exception and the log file, exit 1.

Every run writes a session log (:mod:`braggscope.app.cli.logs`): the command line, warnings, and
each error with its traceback; ``--log-level`` sets what the terminal shows besides.

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
import os
import platform
import shlex
import signal
import sys
import warnings

from braggscope import __version__
from braggscope.app.cli.logs import LEVELS, bars_as_lines, file_only, log_dir, session_log
from braggscope.core.errors import EXIT_USER_ERROR, UserError
from braggscope.core.extras import extra_hint, require_extra

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
    "completion": ("braggscope.app.cli.completion", "print a shell completion script (bash)"),
}

#: command -> the optional packages it cannot start without (their extras: braggscope.core.extras)
NEEDS = {
    "sim": ("caproto", "ophyd"),
    "shell": ("bluesky", "ophyd", "IPython"),
    "demo": ("bluesky", "ophyd", "caproto"),
    "live": ("bluesky", "nats"),
    "serve": ("bluesky", "bluesky_queueserver", "bluesky_httpserver"),
}

#: the exit status of a bug (an unexpected exception)
EXIT_BUG = 1

log = logging.getLogger("braggscope")

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
    parser.add_argument("--log-level", choices=LEVELS, default="warning",
                        help="what the terminal shows besides the command's own lines (default: warning); "
                             "the session log under <storage.data_dir>/logs keeps info and every traceback")
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
    pre.add_argument("--log-level")
    pre.add_argument("command", nargs="?")
    known, _ = pre.parse_known_args(argv)
    return known.command if known.command in COMMANDS else None


def main(argv=None) -> int:
    """Run ``braggscope``; returns the exit status (0 success, 1 a bug, 2 expected error, 130 interrupted)."""
    with bars_as_lines():  # before any command module imports tqdm
        try:
            if named := named_command(argv):
                require_extra(f"braggscope {named}", *NEEDS.get(named, ()))
            parser = build_parser([named] if named else [])
            args = parser.parse_args(argv)
        except UserError as exc:  # an extra that is not installed: its message names the command
            print(one_line(exc), file=sys.stderr)
            return EXIT_USER_ERROR
        except SystemExit as exc:  # --help, --version, or a bad argument (already printed on one line)
            return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USER_ERROR
        prog = " ".join(["braggscope"] + [str(v) for d in _COMMAND_DESTS
                                          if isinstance(v := getattr(args, d, None), str)])
        with quiet_runtime(prog), session_log(prog, args.log_level, _log_dir(args)) as log_file:
            log.info("run: %s", shlex.join(["braggscope", *(sys.argv[1:] if argv is None else argv)]))
            log.info("braggscope %s, Python %s, config %s", __version__, platform.python_version(),
                     args.config or "$BRAGGSCOPE_CONFIG or the packaged simulator configuration")
            return _run(prog, args, log_file)


def _run(prog, args, log_file) -> int:
    """``args.func(args)``; each error shown on one line, its traceback kept in ``log_file``."""
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is met below and not at interpreter exit
        log.info("exit status %d", status)
        return status
    except BrokenPipeError:  # `braggscope sim status | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 128 + signal.SIGPIPE
    except UserError as exc:
        return _fail(prog, exc, logged=True)
    except ModuleNotFoundError as exc:
        if (hint := extra_hint(exc)) is None:
            return _bug(prog, exc, log_file)
        return _fail(prog, hint, logged=True)
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS and exc.filename:
            return _fail(prog, f"{exc.filename}: {exc.strerror}", logged=True)
        return _bug(prog, exc, log_file)
    except KeyboardInterrupt:
        file_only("interrupted", exc_info=True, level=logging.WARNING)
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return _bug(prog, exc, log_file)


def _log_dir(args):
    """The session logs' directory; from the environment alone when the configuration cannot be read."""
    from braggscope.core.config import load_config  # pydantic: only once a command runs

    try:
        return log_dir(load_config(args.config))
    except UserError:
        return log_dir(None)


def _bug(prog, exc, log_file) -> int:
    """An unexpected exception: one line naming it and the log; the traceback in the log (or here without one)."""
    file_only("unexpected error", exc_info=True)
    if log_file is None:
        raise exc
    print(f"{prog}: error: {type(exc).__name__}: {one_line(exc)} (a bug; the traceback is in {log_file})",
          file=sys.stderr)
    return EXIT_BUG


def _fail(prog, exc, logged=False) -> int:
    if logged:
        file_only("%s", one_line(exc), exc_info=isinstance(exc, BaseException) or None)
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
        file_only("%s (%s, %s:%s)", one_line(message), category.__name__, filename, lineno, level=logging.WARNING)

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

