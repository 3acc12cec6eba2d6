"""IPython magics of the operator's session.

``%where_all``, ``%wm``, ``%mv``, ``%umv``, ``%mvr``, ``%umvr``, ``%count`` and ``%where``; bluesky's own
``%wa [label ...]``, ``%ct [label ...]``, ``%mov`` and ``%movr`` keep their meaning.

``%mv pix 10 piy 20`` is ``mv(pix, 10, piy, 20)``: each word is evaluated in
the session namespace (so ``%mv eta bragg_eta`` works). Loading the extension
also removes IPython's shell aliases that would shadow a command (IPython
defines ``mv`` as ``/bin/mv``): ``mv(pix, 50)`` must never move a file.
bluesky's magics are registered as they are (``%wa`` and ``%ct`` take ophyd labels, e.g.
``%ct detectors``); braggscope's BLISS-style tables are ``%where_all`` and ``%count`` (the functions
``wa()`` and ``ct()`` of the session are braggscope's).
An expected error (a :class:`~braggscope.core.errors.UserError`: a target
outside the soft limits, a bad argument, a run that is not in the catalog)
prints as one line naming what to change; ``%tb`` still shows its traceback.

In ``braggscope shell`` the extension is loaded for you; elsewhere::

    %load_ext braggscope.app.session.magics      # needs a `commands` object in the namespace
"""

from __future__ import annotations

import logging
import shlex
import sys

from bluesky.magics import BlueskyMagics
from IPython.core.magic import Magics, line_magic, magics_class

from braggscope.app.commands import COMMANDS
from braggscope.core.errors import UserError

__all__ = ["SessionMagics", "load_ipython_extension", "remove_shadowing_aliases", "show_user_error"]


@magics_class
class SessionMagics(Magics):
    """Line magics calling the session's :class:`braggscope.app.commands.Commands` (``commands`` in the namespace)."""

    def _commands(self):
        commands = self.shell.user_ns.get("commands")
        if commands is None:
            raise RuntimeError("no `commands` in the namespace: start `braggscope shell`")
        return commands

    def _args(self, line):
        ns = self.shell.user_ns
        return [eval(word, ns) for word in shlex.split(line)]  # noqa: S307 - the operator's own input

    @line_magic
    def where_all(self, line):
        """%where_all: wa(), user and dial positions of every motor (bluesky's %wa lists by label)."""
        self._commands().wa()

    @line_magic
    def wm(self, line):
        """%wm pix eta: where these motors."""
        self._commands().wm(*self._args(line))

    @line_magic
    def mv(self, line):
        """%mv pix 10 [piy 20]: absolute move, checked against the soft limits first."""
        self._commands().mv(*self._args(line))

    @line_magic
    def umv(self, line):
        """%umv pix 10: absolute move showing the positions."""
        self._commands().umv(*self._args(line))

    @line_magic
    def mvr(self, line):
        """%mvr eta 0.01: relative move."""
        self._commands().mvr(*self._args(line))

    @line_magic
    def umvr(self, line):
        """%umvr eta 0.01: relative move showing the positions."""
        self._commands().umvr(*self._args(line))

    @line_magic
    def count(self, line):
        """%count 0.1 xrf: ct(0.1, xrf), count once and print the counters (bluesky's %ct counts by label)."""
        self._commands().ct(*self._args(line))

    @line_magic
    def where(self, line):
        """%where: the last 1D scan's motor and peak statistics."""
        self._commands().where()


def remove_shadowing_aliases(shell) -> list[str]:
    """Remove IPython aliases named like a session command (``mv`` is ``/bin/mv``); returns those removed."""
    aliases, removed = shell.alias_manager, []
    for name in COMMANDS:
        if aliases.is_alias(name):
            aliases.undefine_alias(name)
            removed.append(name)
    # and not again when IPython resets its aliases (at exit: "Invalid alias" errors otherwise)
    aliases.default_aliases = [a for a in aliases.default_aliases if a[0] not in COMMANDS]
    aliases.user_aliases = [a for a in aliases.user_aliases if a[0] not in COMMANDS]
    return removed


def show_user_error(shell, etype, value, tb, tb_offset=None):
    """IPython's handler for :class:`UserError`: one line, not a traceback (the message says what to change)."""
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb  # for %tb
    print(f"{etype.__name__}: {value}", file=sys.stderr)


class _NoUserErrorTraceback(logging.Filter):
    """Drops the RunEngine's "Run aborted" record (with its traceback) when the plan refused its arguments:
    the session shows that error as one line (:func:`show_user_error`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0] if record.exc_info else None
        return not (isinstance(exc, type) and issubclass(exc, UserError))


def load_ipython_extension(shell) -> None:
    """``%load_ext braggscope.app.session.magics``: bluesky's magics, then braggscope's; shadowing aliases removed;
    expected errors shown as one line."""
    remove_shadowing_aliases(shell)
    shell.set_custom_exc((UserError,), show_user_error)
    run_engine_log = logging.getLogger("bluesky")  # where the RunEngine logs a failed plan's traceback
    if not any(isinstance(f, _NoUserErrorTraceback) for f in run_engine_log.filters):
        run_engine_log.addFilter(_NoUserErrorTraceback())
    commands = shell.user_ns.get("commands")
    if commands is not None:
        BlueskyMagics.RE = commands.RE  # %mov / %movr on the session's RunEngine
        shell.register_magics(BlueskyMagics)
    shell.register_magics(SessionMagics)
