"""The session log and the terminal of a ``braggscope`` command.

Every command run writes a log file of its own under ``<storage.data_dir>/logs`` (or
``$BRAGGSCOPE_LOG_DIR``; ``BRAGGSCOPE_LOG_DIR=""``: none): the command line, the configuration,
braggscope's messages at INFO (DEBUG with ``--log-level debug``), every library warning, and each
error with its traceback. The terminal shows messages at ``--log-level`` (default ``warning``) as one
line each, ``braggscope <command>: <level>: <message>``; the log holds the rest.

Progress bars (tqdm) written to something that is not a terminal (a file, a pipe, CI) are refreshed
every 30 s instead of ten times a second, one line per refresh, so a long reduction writes a few
lines instead of thousands.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from pathlib import Path

__all__ = ["LEVELS", "LOGS_KEPT", "BarLines", "bars_as_lines", "file_only", "log_dir", "session_log"]

#: the levels ``--log-level`` takes
LEVELS = ("debug", "info", "warning", "error")
#: session logs kept in the log directory (the oldest are removed)
LOGS_KEPT = 200
#: seconds between two refreshes of a progress bar that is not on a terminal
BAR_INTERVAL_OFF_TERMINAL_S = 30

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
log = logging.getLogger("braggscope")


def log_dir(cfg) -> Path | None:
    """Where the session logs go: ``$BRAGGSCOPE_LOG_DIR`` if set ("" = no log), else ``<data_dir>/logs``."""
    if "BRAGGSCOPE_LOG_DIR" in os.environ:
        value = os.environ["BRAGGSCOPE_LOG_DIR"].strip()
        return Path(os.path.expanduser(value)) if value else None
    return None if cfg is None else cfg.expand_path("storage.data_dir") / "logs"


@contextlib.contextmanager
def session_log(prog: str, level: str, directory: Path | None):
    """Route logging while a command runs: the terminal at ``level`` (one line each), a new log file in
    ``directory`` (yielded; None when ``directory`` is None or cannot be written). Restored on exit."""
    root = logging.getLogger()
    saved_level = root.level
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(getattr(logging, level.upper()))
    terminal.setFormatter(_OneLine(prog))
    terminal.addFilter(_NotFileOnly())
    handlers = [terminal]
    path = _new_log_file(prog, directory)
    detail = logging.DEBUG if level == "debug" else logging.INFO
    if path is not None:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setLevel(detail)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.addFilter(_OursOrWarnings(detail))
        handlers.append(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(min(detail, terminal.level))
    try:
        yield path
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved_level)


def file_only(message: str, *args, exc_info=None, level=logging.ERROR) -> None:
    """Log to the session file only (the terminal already showed its one line)."""
    log.log(level, message, *args, exc_info=exc_info, extra={"file_only": True})


def _new_log_file(prog: str, directory: Path | None) -> Path | None:
    if directory is None:
        return None
    name = "-".join(["braggscope", *prog.split()[1:3]]).replace(os.sep, "_")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        for n in range(1000):  # one file per run, even two runs of one process in one second
            path = directory / f"{stamp}{f'.{n}' if n else ''}-{name}.log"
            try:
                path.touch(exist_ok=False)
                break
            except FileExistsError:
                continue
        _prune(directory)
    except OSError:
        return None
    return path


def _prune(directory: Path) -> None:
    """Keep the :data:`LOGS_KEPT` newest session logs."""
    logs = sorted(directory.glob("*-braggscope*.log"))
    for old in logs[:-LOGS_KEPT]:
        try:
            old.unlink()
        except OSError:
            pass


class _OneLine(logging.Formatter):
    """``braggscope <command>: <level>: <message>`` on one line, without the traceback."""

    def __init__(self, prog):
        super().__init__()
        self.prog = prog

    def format(self, record):
        text = "; ".join(p.strip() for p in record.getMessage().splitlines() if p.strip())
        return f"{self.prog}: {record.levelname.lower()}: {text}"


class _NotFileOnly(logging.Filter):
    def filter(self, record):
        return not getattr(record, "file_only", False)


class _OursOrWarnings(logging.Filter):
    """braggscope's records at the log's level; the libraries' from WARNING (their INFO is chatter)."""

    def __init__(self, level):
        super().__init__()
        self.level = level

    def filter(self, record):
        ours = record.name == "braggscope" or record.name.startswith("braggscope.")
        return ours or record.levelno >= logging.WARNING or self.level <= logging.DEBUG


class BarLines(io.TextIOBase):
    """A text stream for progress bars off a terminal: each ``\\r`` refresh becomes a line of its own."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream
        self._after_bar = False

    def write(self, text: str) -> int:
        if text.startswith("\r"):
            line = text.strip("\r").rstrip()
            if line:
                self.stream.write(line + "\n")
                self._after_bar = True
            return len(text)
        if text == "\n" and self._after_bar:  # a bar closing: its last refresh already ended the line
            self._after_bar = False
            return len(text)
        self._after_bar = False
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False

    def writable(self):
        return True

    def fileno(self):
        return self.stream.fileno()


@contextlib.contextmanager
def bars_as_lines():
    """While a command runs, progress bars written off a terminal are refreshed every
    :data:`BAR_INTERVAL_OFF_TERMINAL_S` s, one line each (stdout and stderr checked apart).

    tqdm reads ``TQDM_MININTERVAL`` when it is first imported, so this is entered before any command
    module is imported; a value the user set is kept.
    """
    saved = sys.stdout, sys.stderr, os.environ.get("TQDM_MININTERVAL")
    if not (_is_terminal(sys.stdout) and _is_terminal(sys.stderr)):
        os.environ.setdefault("TQDM_MININTERVAL", str(BAR_INTERVAL_OFF_TERMINAL_S))
    if not _is_terminal(sys.stdout):
        sys.stdout = BarLines(sys.stdout)
    if not _is_terminal(sys.stderr):
        sys.stderr = BarLines(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved[:2]
        if saved[2] is None:
            os.environ.pop("TQDM_MININTERVAL", None)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
