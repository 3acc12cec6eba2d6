"""``braggscope shell --queue``: the operator's session, its commands run by the queue's worker.

The same lines as in ``braggscope shell`` (``wa()``, ``mv(pix, 50)``, ``ascan(eta, 8.4, 9.7, 26, 0.01)``,
``goto_cen()``, ``sxdm(...)``, ``db[-1]``), typed on another computer: each command goes to the
queue (:class:`~braggscope.app.serve.queue_client.QueueClient`) and runs in its worker with the
session's own code (:mod:`braggscope.app.serve.queue_commands`); what it printed comes back, and an
error comes back as one line. The devices here are names (:class:`RemoteDevice`): ``pix`` stands for
the worker's ``pix``.

- A command that moves or counts runs at once as one queue item (``item_execute``). While the
  queue runs anything else (another operator's command, the queue, a paused plan), it is refused,
  naming what runs: two operators' commands are never interleaved.
- ``wa``, ``wm``, ``where``, ``cen``, ``peak``, ``com``, ``fwhm`` only read: they run in a thread of the
  worker, also during a scan.
- Ctrl-C while a command runs pauses the queue after the current point (twice: at once);
  ``RE.resume()``, ``RE.stop()``, ``RE.abort()``, ``RE.halt()`` then act on the queue, as they act on
  the session's RunEngine.
- ``db`` is the catalog (``[storage]`` of the configuration), read from here.
- ``queue`` is the client itself, for the queue's own plans (``queue.add("sxdm_map", ...)``).
"""

from __future__ import annotations

import builtins
import getpass
import socket
import time
import uuid

import numpy as np

from braggscope.app.serve.queue_client import QueueClient
from braggscope.app.serve.queue_commands import PLAN_COMMANDS, READ_COMMANDS
from braggscope.core import errors
from braggscope.core.errors import UserError

__all__ = ["QueueCommands", "QueuePaused", "RemoteDevice", "RemoteRunEngine", "queue_namespace"]

BANNER = """braggscope session: queue at {url} ({state})
  devices : {devices}
  commands: wa, wm, mv, umv, ct, ascan, dscan, a2scan, amesh, lineup, goto_cen, cen, where, roi, sxdm, kmap,
            calibrate ... run by the queue's worker, one at a time (help(ascan))
  storage : db[-1], db[scan_id], db.search(plan=, sample=)
  Ctrl-C  : pauses the queue after the current point; RE.resume() / RE.stop() / RE.abort()
  queue   : queue.add("sxdm_map", ...), queue.start(), queue.items(), queue.history(); plans: {plans}
"""
PAUSE_HINT = ("paused (Ctrl-C): RE.resume() continues, RE.stop() ends the run (success), RE.abort() ends it "
              "(abort); every point taken so far is kept")


class QueuePaused(UserError):
    """The command's item is paused: ``RE.resume()``, ``RE.stop()`` or ``RE.abort()``."""


class RemoteDevice:
    """A device of the queue's worker, by name: what the commands here send for it."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}: a device of the queue's worker>"


class QueueCommands:
    """The session's commands, each run by the queue's worker (see the module's docstring).

    Parameters
    ----------
    queue : QueueClient
    out : callable
        Where the commands' output lines go.
    poll_s : float
        Seconds between two looks at a running command.
    """

    def __init__(self, queue: QueueClient, *, out=print, poll_s: float = 0.2):
        self.queue, self.out, self.poll_s = queue, out, float(poll_s)
        self.RE = RemoteRunEngine(self)
        self.pending = None  # (name, item uid, reply) of a command paused or running
        self.operator = f"{getpass.getuser()}@{socket.gethostname()}"
        for name in PLAN_COMMANDS:
            setattr(self, name, self._plan_command(name))
        for name in READ_COMMANDS:
            setattr(self, name, self._read_command(name))

    def namespace(self) -> dict:
        """``{name: command}`` for the shell."""
        return {name: getattr(self, name) for name in (*PLAN_COMMANDS, *READ_COMMANDS)}

    # -- commands -----------------------------------------------------------------------------
    def run(self, name: str, *args, **kwargs):
        """Run command ``name`` in the worker now; print its output; return its value."""
        reply = uuid.uuid4().hex[:16]
        try:
            uid = self.queue.execute(name, *_names(args), reply=reply, meta={"operator": self.operator},
                                     **_names(kwargs))
        except errors.ArgumentError as exc:
            raise self._refusal(name, exc) from None
        self.pending = (name, uid, reply)
        return self.wait()

    def read(self, name: str, *args, **kwargs):
        """A read-only command (``wa``, ``wm``, ``where``) in a thread of the worker; prints, returns its value."""
        return self._show(self.queue.call("shell_read", name, _names(args), _names(kwargs)))

    def wait(self):
        """Wait for the pending command; Ctrl-C pauses it (:class:`QueuePaused`); its output and value."""
        name, uid, reply = self.pending
        try:
            state = self._until_done_or_paused(uid)
        except KeyboardInterrupt:
            state = self._pause(uid)
        if state == "paused":
            raise QueuePaused(PAUSE_HINT)
        self.pending = None
        return self._show(self._reply(uid, reply), name)

    def help(self, *args, **kwargs):
        """``help()``: the commands; ``help(obj)``: Python's help."""
        if args or kwargs:
            return builtins.help(*args, **kwargs)
        return self.helpme()

    # -- helpers -------------------------------------------------------------------------------
    def _plan_command(self, name):
        def command(*args, **kwargs):
            return self.run(name, *args, **kwargs)

        command.__name__ = command.__qualname__ = name
        command.__doc__ = f"{name}(...): the session's {name}, run by the queue's worker (same arguments)."
        return command

    def _read_command(self, name):
        def command(*args, **kwargs):
            return self.read(name, *args, **kwargs)

        command.__name__ = command.__qualname__ = name
        command.__doc__ = f"{name}(...): the session's {name}, read in the queue's worker (also during a scan)."
        return command

    def _until_done_or_paused(self, uid) -> str:
        """``"done"`` once item ``uid`` has left the worker (in the history), ``"paused"`` while it is paused."""
        history = None
        while True:
            status = self.queue.status(reload=True)
            if status["manager_state"] == "paused" and status.get("re_state") == "paused":
                return "paused"
            if status.get("running_item_uid") != uid and status["manager_state"] != "paused":
                if history != status.get("plan_history_uid"):  # (a new history only when an item ended)
                    history = status.get("plan_history_uid")
                    if any(item.get("item_uid") == uid for item in self.queue.history()[-5:]):
                        return "done"
            time.sleep(self.poll_s)

    def _reply(self, uid, reply) -> dict:
        """The command's reply; for an item that failed before the command ran, its history's message."""
        try:
            return self.queue.call("command_reply", reply)
        except UserError:
            ended = [item for item in self.queue.history()[-5:] if item.get("item_uid") == uid]
            result = ended[-1].get("result", {}) if ended else {}
            msg = _first_error_line(result.get("msg", "")) or "no reply from the worker"
            return {"output": [], "value": None, "error": {"type": "UserError", "module": errors.__name__,
                                                           "msg": msg}}

    def _pause(self, uid) -> str:
        """Ctrl-C: a deferred pause (the point finishes); Ctrl-C again: at once."""
        self.out("pausing after the current point (Ctrl-C again: now) ...")
        try:
            self.queue.pause()
            return self._until_done_or_paused(uid)
        except KeyboardInterrupt:
            self.queue.pause(immediate=True)
            return self._until_done_or_paused(uid)
        except errors.ArgumentError:  # it ended meanwhile: nothing left to pause
            return self._until_done_or_paused(uid)

    def _show(self, reply: dict, name: str = ""):
        for line in reply.get("output") or []:
            self.out(line)
        error = reply.get("error")
        if error:
            raise _error(error, name)
        return reply.get("value")

    def _refusal(self, name, exc) -> UserError:
        """Why the queue did not run command ``name``: busy with what, and for whom; else its reason."""
        running = {}
        try:
            running = self.queue.running_item()
            status = self.queue.status(reload=True)
        except UserError:
            status = {}
        if running or status.get("manager_state") not in (None, "idle"):
            who = (running.get("meta") or {}).get("operator") or running.get("user") or "the queue"
            what = running.get("name", status.get("manager_state", "?"))
            return UserError(f"{name} not run: the beamline is busy with {what} ({who}; manager "
                             f"{status.get('manager_state', '?')}); try again when it is idle, or queue.add(...)")
        return exc


class RemoteRunEngine:
    """``RE`` of the queue shell: the queue's pause, resume, stop, abort and halt for the paused command."""

    def __init__(self, commands: QueueCommands):
        self._commands = commands

    @property
    def state(self) -> str:
        """The worker's RunEngine state (``idle``, ``running``, ``paused``)."""
        return self._commands.queue.status(reload=True).get("re_state", "?")

    def resume(self):
        """Resume the paused command; waits for it as the command did."""
        self._commands.queue.resume()
        return self._finish()

    def stop(self):
        """End the paused command's run as a success."""
        self._commands.queue.stop()
        return self._finish()

    def abort(self, reason: str = ""):
        """End the paused command's run as ``abort``."""
        self._commands.queue.abort()
        return self._finish()

    def halt(self):
        """End the paused command's run at once, without its clean-up moves."""
        self._commands.queue.halt()
        return self._finish()

    def __call__(self, *args, **kwargs):
        raise UserError("plans go through the queue here: a command (ascan(...)) or queue.add(...)")

    def _finish(self):
        if self._commands.pending is None:
            self._commands.queue.wait(timeout=3600)
            return None
        return self._commands.wait()


class _LazyRuns:
    """``db``: the configuration's catalog, opened when first used."""

    def __init__(self, cfg):
        self._cfg, self._runs = cfg, None

    def _open(self):
        if self._runs is None:
            from braggscope import storage  # the catalog's client: slow to import, only when db is used

            self._runs = storage.Runs(storage.open_catalog(self._cfg))
        return self._runs

    def __getitem__(self, key):
        return self._open()[key]

    def __getattr__(self, name):
        return getattr(self._open(), name)

    def __len__(self):
        return len(self._open())

    def __iter__(self):
        return iter(self._open())

    def __repr__(self):
        return repr(self._open())


def queue_namespace(cfg, url: str | None = None, *, api_key: str | None = None) -> dict:
    """The namespace of ``braggscope shell --queue``: the commands, device names, ``RE``, ``db``, ``queue``.

    Nothing here moves a motor except through the queue.
    """
    queue = QueueClient.from_config(cfg, url=url, api_key=api_key)
    status = queue.status()  # unreachable server or refused key: one line before the prompt
    commands = QueueCommands(queue)
    devices = {name: RemoteDevice(name) for name in (queue.devices() if status["worker_environment_exists"] else [])
               if "." not in name}
    detector = cfg.get("detector.name", "mpx1x4")
    if detector in devices:
        devices["detector"] = devices[detector]
    state = f"{status['manager_state']}, environment {'open' if status['worker_environment_exists'] else 'closed'}"
    banner = BANNER.format(url=queue.url, state=state, devices=", ".join(sorted(devices)) or "(open the environment)",
                           plans=", ".join(queue.plans()) or "(open the environment)")
    return {"cfg": cfg, "queue": queue, "commands": commands, "RE": commands.RE, "db": _LazyRuns(cfg),
            **devices, **commands.namespace(), "help": commands.help, "__banner__": banner,
            "__cleanup__": queue.close}


def _names(value):
    """Arguments as the queue takes them: a device as its name, tuples as lists, numpy numbers as numbers."""
    if isinstance(value, RemoteDevice):
        return value.name
    if isinstance(value, dict):
        return {k: _names(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_names(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _first_error_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0].removeprefix("Plan failed: ") if lines else ""


def _error(error: dict, name: str) -> UserError:
    """The worker's error as one line: braggscope's own error classes as themselves."""
    cls = getattr(errors, error.get("type", ""), None) if error.get("module") == errors.__name__ else None
    if isinstance(cls, type) and issubclass(cls, UserError):
        return cls(error.get("msg", ""))
    if error.get("type") in ("RequestAbort", "RequestStop", "GeneratorExit"):
        return UserError(f"{name}: {'stopped' if error['type'] == 'RequestStop' else 'aborted'}")
    return UserError(f"{name}: {error.get('type')}: {error.get('msg', '')}")
