"""A small client of a queued braggscope beamline (bluesky-httpserver in front of the queue server).

``braggscope shell --queue URL`` gives the operator a :class:`QueueClient`
named ``queue`` (beside the commands, :mod:`braggscope.app.serve.queue_shell`)::

    queue.add("sxdm_map", ["mpx1x4"], "pix", [0, 2, 21], "piy", [0, 2, 21], "eta", [9.0, 9.1], sample="s1")
    queue.start()            # run the queue
    queue.pause()            # at the next checkpoint (immediate=True: now)
    queue.resume(); queue.stop(); queue.abort(); queue.halt()
    queue.status(); queue.items(); queue.history()

Every request carries the API key (``api_key``, ``[queue] api_key`` or
``$BRAGGSCOPE_QUEUE_API_KEY``); the HTTP server refuses requests without a
valid one. A refused item (wrong type, unknown device, angle outside the
limits) raises :class:`~braggscope.core.errors.ArgumentError` with the queue
server's message; an unreachable server
:class:`~braggscope.core.errors.ServerUnreachableError`.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlparse

from braggscope.app.serve.manager import nonfinite_reason
from braggscope.core.errors import ArgumentError, ServerUnreachableError, UserError

#: the manager's words for a request its worker did not answer in time
TIMED_OUT = "Timeout occurred"
#: after a pause or resume that timed out, a refusal of the repeated request containing one of these
#: says that the first one went through (the worker's: pausing, paused, running; the manager's: it
#: runs again, as it refuses a resume without asking its worker when it is not paused)
WENT_THROUGH = {"re_pause": ("Current state: 'pausing'", "Current state: 'paused'"),
                "re_resume": ("The state is 'running'", "in 'executing_plan' environment state",
                              "current state is 'executing_queue'")}

__all__ = ["QueueClient", "API_KEY_ENV", "TIMED_OUT", "WENT_THROUGH"]

#: Environment variable holding the queue HTTP server's API key.
API_KEY_ENV = "BRAGGSCOPE_QUEUE_API_KEY"


class QueueClient:
    """The queue of a braggscope beamline, through its HTTP server.

    Parameters
    ----------
    url : str
        The HTTP server, e.g. ``"http://127.0.0.1:60610"``.
    api_key : str, optional
        Default: ``$BRAGGSCOPE_QUEUE_API_KEY``.
    timeout : float
        Seconds to wait for one HTTP request.
    """

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 10.0):
        # the queue server's client: slow to import, only when a queue is driven
        from bluesky_queueserver_api.http import REManagerAPI

        parsed = urlparse(str(url))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ArgumentError(f"queue url must be http://HOST:PORT, got {url!r}")
        if not (isinstance(timeout, (int, float)) and 0 < timeout < float("inf")):
            raise ArgumentError(f"timeout must be a positive number of seconds, got {timeout!r}")
        api_key = api_key or os.environ.get(API_KEY_ENV, "")
        if not api_key:
            raise ArgumentError(f"the queue's API key is required: pass api_key, set [queue] api_key or ${API_KEY_ENV}")
        self.url = str(url).rstrip("/")
        self.timeout = float(timeout)
        self._api = REManagerAPI(http_server_uri=self.url, http_auth_provider=None, timeout=timeout)
        self._api.set_authorization_key(api_key=api_key)

    @classmethod
    def from_config(cls, cfg, *, url: str | None = None, api_key: str | None = None, **kwargs) -> QueueClient:
        """A client of the queue named by ``[queue] url`` / ``api_key`` (arguments win)."""
        url = url or cfg.get("queue.url", "")
        if not url:
            raise ArgumentError("no queue to connect to: pass --queue URL or set [queue] url")
        return cls(url, api_key=api_key or cfg.get("queue.api_key", "") or None, **kwargs)

    # ------------------------------------------------------------------ queue
    def add(self, plan: str, *args, **kwargs) -> str:
        """Add the plan ``plan(*args, **kwargs)`` at the back of the queue; returns the item uid.

        Devices are given by name (``"pix"``, ``["mpx1x4"]``). Raises
        :class:`~braggscope.core.errors.ArgumentError` with the queue server's
        reason when it refuses the item.
        """
        from bluesky_queueserver_api import BPlan  # loaded with REManagerAPI in __init__

        self._check_finite(plan, args, kwargs)
        response = self._call("item_add", BPlan(plan, *args, **kwargs))
        return response["item"]["item_uid"]

    def execute(self, plan: str, *args, meta: dict | None = None, **kwargs) -> str:
        """Run the plan ``plan(*args, **kwargs)`` now, outside the queue (``item_execute``); returns the item uid.

        The queue server refuses it while it runs or holds anything else (a running queue, a
        paused plan): :class:`~braggscope.core.errors.ArgumentError` with its reason.
        """
        from bluesky_queueserver_api import BPlan  # loaded with REManagerAPI in __init__

        self._check_finite(plan, args, kwargs)
        item = BPlan(plan, *args, **kwargs)
        if meta:
            item.meta = meta
        try:
            return self._call("item_execute", item)["item"]["item_uid"]
        except ServerUnreachableError:  # no answer in time: the manager may have started it all the same
            found = self._started(item.to_dict())
            if found is None:
                raise
            return found

    def _started(self, item: dict) -> str | None:
        """The uid of ``item`` if the queue runs it or has just run it (looked for ``self.timeout`` s), else None."""
        def same(other):
            return other and all(other.get(k) == item.get(k) for k in ("name", "args", "kwargs", "meta"))

        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                for candidate in [self.running_item(), *self.history()[-3:]]:
                    if same(candidate):
                        return candidate["item_uid"]
            except UserError:
                pass
            time.sleep(0.5)
        return None

    def call(self, function: str, *args, timeout: float = 60.0, **kwargs):
        """Run the worker's function ``function(*args, **kwargs)`` in a thread of the worker (also while a
        plan runs) and return its value; a function that raised: :class:`UserError` with its message."""
        from bluesky_queueserver_api import BFunc  # loaded with REManagerAPI in __init__

        task = self._call("function_execute", BFunc(function, *args, **kwargs), run_in_background=True)["task_uid"]
        try:
            self._api.wait_for_completed_task(task, timeout=timeout)
        except self._api.WaitTimeoutError:
            raise TimeoutError(f"the worker's {function} did not answer within {timeout} s") from None
        result = self._call("task_result", task)["result"]
        if not result.get("success", False):
            raise UserError(f"the worker's {function} failed: {_first_line(result.get('msg', ''))}")
        return result.get("return_value")

    def running_item(self) -> dict:
        """The item running now (name, args, kwargs, item_uid, user, meta), or ``{}``."""
        return self._call("queue_get").get("running_item") or {}

    def devices(self) -> list[str]:
        """Names of the devices this client may use (top level)."""
        return sorted(self._call("devices_allowed")["devices_allowed"])

    def items(self) -> list[dict]:
        """The queued items (name, args, kwargs, item_uid), in order."""
        return self._call("queue_get")["items"]

    def history(self) -> list[dict]:
        """Finished items, oldest first; each with ``result`` (exit_status, msg, run_uids, ...).

        An item that failed or was stopped, aborted or halted is also put back at
        the front of the queue (the queue server's rule), to be run again or removed.
        """
        return self._call("history_get")["items"]

    def plans(self) -> list[str]:
        """Names of the plans this client may queue."""
        return sorted(self._call("plans_allowed")["plans_allowed"])

    def clear(self) -> None:
        """Remove every item from the queue (not the history)."""
        self._call("queue_clear")

    def remove(self, uid: str | None = None) -> dict:
        """Remove one item (by uid; default: the front one) from the queue; returns it."""
        if uid is None:
            return self._call("item_remove", pos="front")["item"]
        return self._call("item_remove", uid=uid)["item"]

    # ------------------------------------------------------------------ control
    def open(self, timeout: float = 120.0) -> None:
        """Open the RunEngine environment (devices connected, plans loaded) and wait until ready."""
        if not self.status()["worker_environment_exists"]:
            self._call("environment_open")
        self._wait("wait_for_idle", timeout)

    def start(self) -> None:
        """Start running the queue."""
        self._call("queue_start")

    def pause(self, immediate: bool = False) -> None:
        """Pause the running plan at its next checkpoint (``immediate``: now, the point is re-done).

        A request the manager timed out (see :meth:`_resend`) is sent again; the worker's refusal
        because its RunEngine is pausing or paused then means that the first request went through.
        """
        self._resend("re_pause", WENT_THROUGH["re_pause"], option="immediate" if immediate else "deferred")

    def resume(self) -> None:
        """Resume a paused plan.

        A request the manager timed out is sent again; the worker's refusal because its RunEngine
        runs, or is busy with a plan, then means that the first request went through.
        """
        self._resend("re_resume", WENT_THROUGH["re_resume"])

    def stop(self) -> None:
        """End a paused plan as a success (exit status ``success``)."""
        self._call("re_stop")

    def abort(self) -> None:
        """End a paused plan as ``abort``; the queue stops."""
        self._call("re_abort")

    def halt(self) -> None:
        """End a paused plan at once, without cleanup moves (``abort``)."""
        self._call("re_halt")

    def stop_queue(self) -> None:
        """Stop the queue after the running item."""
        self._call("queue_stop")

    def status(self, *, reload: bool = False) -> dict:
        """The queue server's status (``manager_state``, ``items_in_queue``, ``worker_environment_exists`` ...);
        ``reload``: asked now (else up to 0.5 s old)."""
        return self._call("status", reload=reload)

    def wait(self, timeout: float = 600.0, *, paused: bool = False) -> None:
        """Wait until the queue is idle (or paused, with ``paused``: the manager paused and its worker's
        RunEngine reported paused, so that ``abort``/``stop``/``resume`` find it paused)."""
        if not paused:
            self._wait("wait_for_idle", timeout)
            return

        def idle_or_paused(status):
            return status["manager_state"] == "idle" or (status["manager_state"] == "paused"
                                                         and status.get("re_state") == "paused")

        try:
            self._api.wait_for_condition(idle_or_paused, timeout=timeout)
        except self._api.WaitTimeoutError:
            raise TimeoutError(f"the queue did not reach the expected state within {timeout} s") from None

    def close(self) -> None:
        """Close the HTTP connection."""
        self._api.close()

    def __repr__(self) -> str:
        try:
            s = self.status()
        except UserError as exc:
            return f"<QueueClient {self.url}: {exc}>"
        environment = "open" if s["worker_environment_exists"] else "closed"
        return (f"<QueueClient {self.url}: {s['manager_state']}, {s['items_in_queue']} queued, "
                f"{s['items_in_history']} in history, environment {environment}>")

    # ------------------------------------------------------------------ helpers
    def _call(self, method: str, *args, **kwargs) -> dict:
        api = self._api
        try:
            return getattr(api, method)(*args, **kwargs)
        except api.RequestFailedError as exc:
            raise ArgumentError(f"the queue refused {method}: {_first_line(exc)}") from None
        except api.HTTPClientError as exc:
            code = exc.response.status_code
            if code in (401, 403) and "Not enough permissions" in exc.response.text:
                raise UserError(f"the queue server at {self.url} refused {method}: this key may only read "
                                "(an observer's key)") from None
            if code in (401, 403):
                raise UserError(f"the queue server at {self.url} refused the API key (HTTP {code})") from None
            if code == 408:  # the HTTP server gave up waiting for the manager, which may still act on it
                raise ServerUnreachableError(f"the queue server at {self.url} did not answer {method} in time "
                                             "(HTTP 408: its manager is busy or the host loaded)") from None
            raise UserError(f"the queue server at {self.url} refused {method}: HTTP {code}") from None
        except (api.HTTPRequestError, api.RequestTimeoutError) as exc:
            raise ServerUnreachableError(f"queue server {self.url} unreachable: {_first_line(exc)}") from None

    def _check_finite(self, plan, args, kwargs) -> None:
        """NaN or an infinity in an item: refused here with the queue's own message (JSON cannot carry them)."""
        item = {"name": plan, "args": list(args), "kwargs": dict(kwargs)}
        if nonfinite_reason(item) is not None:  # named after the plan's parameters, as the queue names them
            raise ArgumentError(f"the queue refused item_add: {nonfinite_reason(item, self._plan_parameters())}")

    def _plan_parameters(self) -> dict:
        try:
            return self._call("plans_allowed")["plans_allowed"]
        except UserError:
            return {}

    def _resend(self, method: str, went_through: tuple[str, ...], **params) -> None:
        """Send a control request; while the manager times it out, send it again (for ``self.timeout`` s).

        A busy worker answers late but still acts on the request: the manager times it out
        ("Timeout occurred", after ``WORKER_REQUEST_TIMEOUT_S`` in braggscope's manager) or the HTTP
        server stops waiting for the manager first (HTTP 408). After either, the state the status
        reports (refreshed every 0.5 s by the manager, and not at all while the worker is busy; cached
        0.5 s here) may predate the request. The worker's own answer to the repeated request is
        current: a refusal containing one of ``went_through`` says that the earlier request was
        carried out.
        """
        deadline = time.monotonic() + self.timeout
        timed_out = False
        while True:
            try:
                self._call(method, **params)
                return
            except ServerUnreachableError as exc:
                if "HTTP 408" not in str(exc) or time.monotonic() > deadline:
                    raise
                timed_out = True
            except ArgumentError as exc:
                text = str(exc)
                if timed_out and any(phrase in text for phrase in went_through):
                    return
                if TIMED_OUT not in text or time.monotonic() > deadline:
                    raise
                timed_out = True

    def _wait(self, method: str, timeout: float) -> None:
        try:
            getattr(self._api, method)(timeout=timeout)
        except self._api.WaitTimeoutError:
            raise TimeoutError(f"the queue did not reach the expected state within {timeout} s") from None


def _first_line(exc) -> str:
    text = str(exc)
    for prefix in ("Request failed: ", "Failed to add an item: "):
        text = text.replace(prefix, "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("For further")]
    return "; ".join(lines[:3]).split("; Plan: ")[0]
