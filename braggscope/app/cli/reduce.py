"""``braggscope reduce sxdm|bcdi|series``: offline reductions from the command line.

The commands themselves live with the analysis they run
(``braggscope.analysis.sxdm.cli`` and ``braggscope.analysis.bcdi.cli``).
A disk that fills while they write is reported on one line naming the file
and the space left (their outputs are atomic: nothing of the run is kept).
"""

from __future__ import annotations

import errno
import functools
import importlib
import shutil
from pathlib import Path

from braggscope.core.errors import UserError

#: errno values of a disk that cannot take the outputs.
_FULL_DISK = {errno.ENOSPC, errno.EDQUOT}

#: the modules of the reductions (each defines ``add_parser(subparsers)``)
REDUCTIONS = ("braggscope.analysis.sxdm.cli", "braggscope.analysis.bcdi.cli", "braggscope.analysis.operando.cli")

__all__ = ["configure", "add_command_groups"]


def configure(parser) -> None:
    """Add the reductions (``sxdm``, ``bcdi``) to the ``reduce`` parser."""
    kinds = parser.add_subparsers(dest="reduce_kind", metavar="KIND")
    add_command_groups(kinds, REDUCTIONS)
    for command in kinds.choices.values():
        command.set_defaults(func=_reporting_full_disk(command.get_default("func")))
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def add_command_groups(subparsers, module_names) -> None:
    """Let each module that is installed add its sub-parser (``add_parser(subparsers)``).

    A module that is absent is skipped; an import error *inside* a present module is raised, so a
    broken command is never silently hidden.
    """
    for name in module_names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_parser(subparsers)


def _reporting_full_disk(func):
    """``func(args)``, with a full disk raised as a one-line :class:`UserError` naming the file and the space left."""

    @functools.wraps(func)
    def run(args):
        try:
            return func(args)
        except OSError as exc:
            if exc.errno not in _FULL_DISK or not exc.filename:
                raise
            raise UserError(f"{exc.filename}: {exc.strerror} on {_disk(exc.filename)}; no output of this run was "
                            "kept: free space there or choose another --out") from exc

    return run


def _disk(filename) -> str:
    """``'/mnt (12.0 KiB free without this run's outputs)'``: the mount point holding ``filename``."""
    where = Path(filename).absolute().parent
    while not where.exists() and where != where.parent:
        where = where.parent
    mount = where
    while not mount.is_mount() and mount != mount.parent:
        mount = mount.parent
    try:
        free = float(shutil.disk_usage(where).free)
    except OSError:
        return str(mount)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            break
        free /= 1024
    return f"{mount} ({free:.0f} {unit} free without this run's outputs)" if unit == "bytes" else \
        f"{mount} ({free:.1f} {unit} free without this run's outputs)"
