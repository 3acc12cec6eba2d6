"""The operator's session in the session log: each cell typed, and each error with its traceback.

Loaded by ``braggscope shell`` (an IPython extension): the log file the command line opened
(:mod:`braggscope.app.cli.logs`) gets ``In [n]: <cell>`` at INFO for every cell run and, for a cell
that failed, the exception with its traceback, while the terminal shows what IPython shows (one
line for an expected error).
"""

from __future__ import annotations

import logging

from braggscope.app.cli.logs import file_only

__all__ = ["load_ipython_extension", "CellLog"]

log = logging.getLogger("braggscope.session")


class CellLog:
    """IPython ``pre_run_cell``/``post_run_cell`` callbacks writing the session log."""

    def __init__(self, shell):
        self.shell = shell

    def before(self, info) -> None:
        if info.raw_cell.strip():
            log.info("In [%s]: %s", self.shell.execution_count, info.raw_cell.rstrip())

    def after(self, result) -> None:
        error = result.error_in_exec or result.error_before_exec
        if error is not None:
            file_only("In [%s] failed: %s: %s", result.execution_count, type(error).__name__, error,
                      exc_info=(type(error), error, error.__traceback__))


def load_ipython_extension(shell) -> None:
    """``%load_ext braggscope.app.session.cell_log``."""
    cells = CellLog(shell)
    shell.events.register("pre_run_cell", cells.before)
    shell.events.register("post_run_cell", cells.after)
