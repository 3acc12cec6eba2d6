"""Expected errors: what a user can fix, reported as one line.

Every error a user can cause and fix (a bad file, a missing detector file, a
bad argument, an unreachable server, a bad configuration) is raised as a
subclass of :class:`UserError`. The ``braggscope`` command line prints such an
error as one line on stderr, ``braggscope <command>: <message>``, and exits
with status 2; any other exception is a bug and keeps its traceback.

Each class also derives from the built-in exception a caller would expect
(``ValueError``, ``FileNotFoundError``, ``ConnectionError``), so code that
catches those keeps working.

Examples
--------
>>> try:
...     raise SourceMissingError("scan.h5: 1.1/instrument/mpx1x4/image reads mpx1x4_0000.h5, which is missing")
... except FileNotFoundError as exc:
...     isinstance(exc, UserError)
True
"""

from __future__ import annotations

__all__ = [
    "UserError",
    "ArgumentError",
    "ConfigError",
    "InputError",
    "SourceMissingError",
    "BadDataError",
    "ServerUnreachableError",
    "NotConnectedError",
    "DataWarning",
    "EXIT_USER_ERROR",
]

#: Exit status of a command that failed on an expected error.
EXIT_USER_ERROR = 2


class UserError(Exception):
    """Base of every expected error: the message names the problem and what to change."""


class ArgumentError(UserError, ValueError):
    """A command-line or function argument that cannot be used (names the argument)."""


class ConfigError(UserError, ValueError):
    """A configuration file or key that cannot be used (names the file and the key)."""


class InputError(UserError, ValueError):
    """An input file that cannot be read: not HDF5, truncated, or a layout not understood (names the file)."""


class SourceMissingError(UserError, FileNotFoundError):
    """An input file, or a file it points to (virtual-dataset source, external link), is absent (names it)."""


class BadDataError(UserError, ValueError):
    """Frames that cannot be reduced: all zero, NaN or infinite, complex or negative (names the file)."""


class ServerUnreachableError(UserError, ConnectionError):
    """A server (catalog, simulator, IOC) that does not answer (names its address)."""


class NotConnectedError(ServerUnreachableError, TimeoutError):
    """Devices whose PVs did not connect in time (names the PVs and the CA address list)."""


class DataWarning(UserWarning):
    """Input the reduction repaired (e.g. negative values masked): stated once, on one line."""
