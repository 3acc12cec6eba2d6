"""The operator's commands in the queue's worker: ``ascan``, ``mv``, ``cen``, ``sxdm`` ... as queue plans.

``braggscope shell --queue`` (:mod:`braggscope.app.serve.queue_shell`) sends each command the
operator types to the queue, to run at once (``item_execute``). In the worker, the command is
the session's own (:class:`braggscope.app.commands.Commands`): same argument checks, same
peak statistics for ``goto_cen``, same eccentricity model from ``calibrate`` to ``sxdm``. Only the
way a command runs its plans differs.

A command is ordinary blocking code that calls ``RE(plan)`` for each of its plans (``lineup`` scans,
then moves to the peak; ``calibrate`` runs its maps, then stores the model). In the
worker it runs in a thread of its own, where its RunEngine is a :class:`BridgedRunEngine`:
calling it hands the plan to the queue item's generator (:meth:`CommandBridge.plan`), which
yields it on the worker's RunEngine and hands back the result. So every move and scan of the
command is a part of one queue item: the queue's pause, resume, stop and abort act on it, the
manager is busy until the command ends (a second operator's command is refused, never
interleaved), and its runs go to the catalog and the bus as any plan's.

What the command printed, its return value and its error, if any, are kept under the ``reply``
name the shell gave; the shell reads them with :meth:`CommandBridge.reply` (a function the
queue runs, ``command_reply``). Commands that only read (``wa``, ``wm``, ``where``, ``cen``,
``peak``, ``com``, ``fwhm``, ``helpme``) run as functions (``shell_read``), also while a plan runs. The
list follows the session's (:data:`braggscope.app.commands.COMMANDS`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections import OrderedDict

import bluesky.plan_stubs as bps
import numpy as np
from bluesky.run_engine import RunEngineResult

from braggscope.app.commands import COMMANDS, make_commands
from braggscope.core.eccentricity import EccentricityModel
from braggscope.core.errors import ArgumentError

__all__ = ["PLAN_COMMANDS", "READ_COMMANDS", "BridgedRunEngine", "CommandBridge"]

#: commands that only read: functions of the queue, run in a thread of the worker
READ_COMMANDS = tuple(n for n in ("wa", "wm", "where", "helpme", "cen", "peak", "com", "fwhm") if n in COMMANDS)
#: not sent to the queue: ``dry`` takes a plan object (the queue's plan ``dry_run`` does it), ``peaks`` is an object
LOCAL_ONLY = ("dry", "peaks")
#: commands that move or count: queue plans (one item each)
PLAN_COMMANDS = tuple(n for n in COMMANDS if n not in READ_COMMANDS and n not in LOCAL_ONLY)
#: replies kept for the shells to read
KEEP_REPLIES = 200


class BridgedRunEngine:
    """The worker's RunEngine as a command's thread sees it: calling it runs the plan in the queue item.

    Everything else (``subscribe``, ``preprocessors``, ``state`` ...) is the worker's RunEngine.
    """

    def __init__(self, RE, bridge: CommandBridge):
        self._RE, self._bridge = RE, bridge

    def __call__(self, plan):
        return self._bridge.hand_over(plan)

    def __getattr__(self, name):
        return getattr(self._RE, name)


class _Call:
    """One command: what it printed, returned or raised; run in a thread, its plans are handed, one at a
    time, to the item's generator."""

    def __init__(self, *, read_only: bool = False):
        self.read_only = read_only
        self.output: list[str] = []
        self.value = self.error = None
        self.step = concurrent.futures.Future()  # ("plan", plan) or ("done", None), set by the thread
        self.answers: queue.SimpleQueue = queue.SimpleQueue()  # ("value", result) or ("error", exc)

    def start(self, bridge, function, args, kwargs):
        threading.Thread(target=self._main, args=(bridge, function, args, kwargs), daemon=True,
                         name="braggscope-queue-command").start()

    def _main(self, bridge, function, args, kwargs):
        bridge.local.call = self
        try:
            self.value = function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the item, which raises it in the worker
            self.error = exc
        finally:
            bridge.local.call = None
            self.step.set_result(("done", None))

    def hand_over(self, plan):
        """From the command's thread: run ``plan`` in the item; its result, or its exception raised here."""
        self.step.set_result(("plan", plan))
        kind, answer = self.answers.get()
        if kind == "error":
            raise answer
        return answer


class CommandBridge:
    """The session's commands in the worker, each run as a queue plan (see the module's docstring).

    Parameters
    ----------
    RE : bluesky.RunEngine
        The worker's RunEngine.
    devices : dict
        The worker's devices by name (the area detector under its own name).
    cfg : braggscope.core.config.Config
    detector : str
        The area detector's name (``[detector] name``): the commands' ``detector``.
    """

    def __init__(self, RE, devices: dict, cfg, *, detector: str = "mpx1x4"):
        self.RE = RE
        self.local = threading.local()
        self.replies: OrderedDict[str, dict] = OrderedDict()
        self._starts: list[str] = []
        RE.subscribe(lambda name, doc: self._starts.append(doc["uid"]), "start")
        devices = dict(devices)
        if detector in devices:
            devices["detector"] = devices[detector]  # the commands' default detector, as in the session
        eccentricity = EccentricityModel.coerce(cfg.get("eccentricity"), "[eccentricity]")
        self.commands = make_commands(BridgedRunEngine(RE, self), devices, cfg=cfg, eccentricity=eccentricity,
                                      out=self._out, ask=_no_questions)

    # -- the queue's side ----------------------------------------------------------------------
    def plan(self, name: str, args, kwargs, reply: str = ""):
        """The queue item of command ``name``: its plans yielded in turn; returns the command's value."""
        call = _Call()
        call.start(self, getattr(self.commands, name), list(args), dict(kwargs))
        try:
            while True:
                kind, plan = yield from _wait(call.step)
                if kind == "done":
                    break
                call.step = concurrent.futures.Future()  # before the answer: the thread's next step goes there
                first = len(self._starts)
                try:
                    value = yield from plan
                except BaseException as exc:  # stopped, aborted or failed: the command unwinds too
                    call.answers.put(("error", exc))
                    call.error = call.error or exc
                    raise
                call.answers.put(("value", RunEngineResult(tuple(self._starts[first:]), value, "success",
                                                           False, "", None)))
        finally:
            self._keep(reply, call)
        if call.error is not None:
            raise call.error
        return _jsonable(call.value)

    def hand_over(self, plan):
        call = getattr(self.local, "call", None)
        if call is None or call.read_only:
            raise ArgumentError("this command runs plans: send it through the queue (shell_read only reads)")
        return call.hand_over(plan)

    # -- functions of the queue ----------------------------------------------------------------
    def read(self, name: str, args=(), kwargs=None) -> dict:
        """A read-only command (``wa``, ``wm``, ``where``, ``helpme``) now: ``{"output", "value", "error"}``."""
        if name not in READ_COMMANDS:
            raise ArgumentError(f"{name} is not a read-only command ({', '.join(READ_COMMANDS)})")
        call = _Call(read_only=True)
        self.local.call = call
        try:
            call.value = getattr(self.commands, name)(*args, **(kwargs or {}))
        except Exception as exc:  # noqa: BLE001 - said in the reply, in one line
            call.error = exc
        finally:
            self.local.call = None
        return _reply(call)

    def reply(self, reply: str) -> dict:
        """What the command run under ``reply`` printed and returned: ``{"output", "value", "error"}``."""
        if reply not in self.replies:
            raise ArgumentError(f"no command ran under reply {reply!r} (or its reply was read already)")
        return self.replies.pop(reply)

    # -- helpers --------------------------------------------------------------------------------
    def _out(self, line) -> None:
        call = getattr(self.local, "call", None)
        if call is None:
            print(line, flush=True)
        else:
            call.output.append(str(line))

    def _keep(self, reply, call):
        if reply:
            self.replies[reply] = _reply(call)
            while len(self.replies) > KEEP_REPLIES:
                self.replies.popitem(last=False)


def _wait(future: concurrent.futures.Future):
    """Plan: wait (on the RunEngine's loop, not blocking it) for a future of another thread; its result."""
    yield from bps.wait_for([lambda: asyncio.wrap_future(future)])
    return future.result()


def _no_questions(prompt):
    raise ArgumentError("the queue cannot ask: the shell asks first, then sends yes=True")


def _reply(call: _Call) -> dict:
    error = None
    if call.error is not None:
        error = {"type": type(call.error).__name__, "module": type(call.error).__module__,
                 "msg": str(call.error).strip().splitlines()[0] if str(call.error).strip() else ""}
    return {"output": list(call.output), "value": _jsonable(call.value), "error": error}


def _jsonable(value):
    """A command's value as JSON can carry it (a run's result as its uids; anything else as text)."""
    if isinstance(value, RunEngineResult):
        return {"run_start_uids": list(value.run_start_uids), "exit_status": value.exit_status}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)
