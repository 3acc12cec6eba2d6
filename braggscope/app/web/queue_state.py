"""The queue as the page shows it, and the page's requests to the queue, through its HTTP server.

:class:`QueueMonitor` asks the queue's HTTP server for its status every ``poll_s`` seconds with
the read-only (observer) key, and for the queue and the history only when the status says they
changed (their uids), so one monitor serves any number of pages at a few requests a second.

The page's requests (:meth:`QueueMonitor.control`: add, start, pause, resume, stop, abort ...)
are sent with the key of the user who made them: the HTTP server checks that key's role, so the
page can do nothing the key could not do through the HTTP server itself.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from braggscope.app.serve.queue_client import TIMED_OUT, WENT_THROUGH

__all__ = ["ACTIONS", "QueueMonitor"]

#: page action -> (method, HTTP server path, body)
ACTIONS = {
    "start": ("POST", "/api/queue/start", None),
    "stop_queue": ("POST", "/api/queue/stop", None),
    "pause": ("POST", "/api/re/pause", {"option": "deferred"}),
    "pause_now": ("POST", "/api/re/pause", {"option": "immediate"}),
    "resume": ("POST", "/api/re/resume", None),
    "stop": ("POST", "/api/re/stop", None),
    "abort": ("POST", "/api/re/abort", None),
    "halt": ("POST", "/api/re/halt", None),
    "add": ("POST", "/api/queue/item/add", None),
    "remove": ("POST", "/api/queue/item/remove", None),
    "clear": ("POST", "/api/queue/clear", None),
    "open": ("POST", "/api/environment/open", None),
}
#: requests that may time out on a loaded host while the queue still carries them out (the manager's
#: 'Timeout occurred' when its worker did not answer in time; the HTTP server's 408 when the manager
#: did not answer in its 2 s): sent again, and a refusal containing one of these then says that the
#: first one went through (the phrases :class:`~braggscope.app.serve.queue_client.QueueClient` uses)
RESENT = {"pause": WENT_THROUGH["re_pause"], "pause_now": WENT_THROUGH["re_pause"],
          "resume": WENT_THROUGH["re_resume"]}
#: status fields the page shows
STATUS_FIELDS = ("manager_state", "re_state", "items_in_queue", "items_in_history", "running_item_uid",
                 "worker_environment_exists", "queue_stop_pending", "msg")


class QueueMonitor:
    """The queue's status, queue and history, polled; ``publish(state)`` on every change.

    Parameters
    ----------
    url : str
        The queue's HTTP server, ``http://host:port``.
    key : str
        A read-only key of that server (the observer key).
    publish : callable
        Called (in the event loop) with the new state dict.
    poll_s : float
        Seconds between two status requests.
    history : int
        Finished items shown (the newest).
    """

    def __init__(self, url: str, key: str, publish, *, poll_s: float = 0.5, history: int = 20,
                 timeout: float = 10.0):
        self.url, self.publish, self.poll_s, self.n_history = url.rstrip("/"), publish, poll_s, history
        self._headers = {"Authorization": f"ApiKey {key}"}
        self.timeout = float(timeout)
        self._client = httpx.AsyncClient(base_url=self.url, timeout=timeout)
        self.state: dict = {"status": {}, "queue": [], "running": None, "history": [], "error": None}
        self._uids = (None, None)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        try:
            while not stop.is_set():
                await self.poll()
                try:
                    await asyncio.wait_for(stop.wait(), self.poll_s)
                except TimeoutError:
                    pass
        finally:
            await self._client.aclose()

    async def poll(self) -> None:
        """One round: the status, and the queue and history when they changed."""
        try:
            status = await self._get("/api/status")
            uids = (status.get("plan_queue_uid"), status.get("plan_history_uid"))
            state = dict(self.state, status={k: status.get(k) for k in STATUS_FIELDS}, error=None)
            if uids[0] != self._uids[0] or status.get("running_item_uid") != self.state["status"].get(
                    "running_item_uid"):
                queue = await self._get("/api/queue/get")
                state.update(queue=queue.get("items", []), running=queue.get("running_item") or None)
            if uids[1] != self._uids[1]:
                history = (await self._get("/api/history/get")).get("items", [])
                state["history"] = history[::-1][:self.n_history]
            self._uids = uids
        except (httpx.HTTPError, ValueError) as exc:
            state = dict(self.state, error=f"the queue's HTTP server at {self.url} does not answer: "
                                           f"{type(exc).__name__}")
            self._uids = (None, None)
        if state != self.state:
            self.state = state
            self.publish(dict(state, time=time.time()))

    async def control(self, action: str, key: str, params: dict | None = None) -> tuple[bool, str]:
        """Send the page's request ``action`` with the user's ``key``; ``(done, one line)``."""
        if action not in ACTIONS:
            return False, f"unknown action {action!r}: one of {', '.join(ACTIONS)}"
        deadline, timed_out = time.monotonic() + self.timeout, False
        while True:
            ok, detail, late = await self._send(action, key, params)
            if ok or (timed_out and any(phrase in detail for phrase in RESENT.get(action, ()))):
                self._uids = (None, None)  # the next poll reads the queue and history again
                return True, f"{action}: done"
            if action not in RESENT or not late or time.monotonic() > deadline:
                return False, f"{action}: {detail}"
            timed_out = True

    async def _send(self, action: str, key: str, params: dict | None) -> tuple[bool, str, bool]:
        """One request to the HTTP server: ``(accepted, why not, timed out)``."""
        method, path, body = ACTIONS[action]
        body = dict(body or {}, **(params or {}))
        try:
            response = await self._client.request(method, path, json=body or None,
                                                  headers={"Authorization": f"ApiKey {key}"})
        except httpx.HTTPError as exc:
            return False, f"the queue's HTTP server does not answer ({type(exc).__name__})", False
        if response.status_code in (401, 403):
            return False, f"this key may not do that (HTTP {response.status_code}: read-only key?)", False
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code != 200 or not answer.get("success", False):
            detail = answer.get("msg") or answer.get("detail") or f"HTTP {response.status_code}"
            if response.status_code == 408:
                return False, f"the queue did not answer in time (HTTP 408: {_first_line(detail)})", True
            return False, f"refused by the queue: {_first_line(detail)}", TIMED_OUT in str(detail)
        return True, "", False

    async def plans(self, key: str) -> list[dict]:
        """The plans ``key`` may queue: ``[{"name", "description", "parameters": [names]}]``."""
        allowed = (await self._get("/api/plans/allowed", key)).get("plans_allowed", {})
        return [{"name": name, "description": (p.get("description") or "").split("\n")[0],
                 "parameters": [q["name"] for q in p.get("parameters", [])]} for name, p in sorted(allowed.items())]

    async def _get(self, path: str, key: str | None = None) -> dict:
        headers = self._headers if key is None else {"Authorization": f"ApiKey {key}"}
        response = await self._client.get(path, headers=headers)
        response.raise_for_status()
        return response.json()


def _first_line(text) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return "; ".join(lines[:2])[:300] if lines else "(no reason given)"
