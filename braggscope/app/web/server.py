"""The page's server: an ASGI application (Starlette, served by uvicorn) on ``[serve] host``.

=============================  =====================================================================
``GET /``, ``/static/...``     the page (HTML, JavaScript, CSS): no data in it, served to anyone
``WS /api/ws``                 the page's feed: the first message carries the key; then the queue,
                               the run in progress, its live maps or curve, the beam and the runs
``GET /api/whoami``            the key's role (``operator`` or ``observer``)
``GET /api/state``             what the feed last sent, as one JSON document (scripts, tests)
``GET /api/plans``             the plans the key may queue
``POST /api/control/<action>`` add, start, pause, pause_now, resume, stop, abort, halt, remove, clear
``GET /api/runs/<uid>/figure`` a run's maps or curve (binary, :mod:`braggscope.app.web.codec`)
=============================  =====================================================================

Every ``/api`` request needs a key (``Authorization: ApiKey <key>``; the WebSocket's first
message) that the queue's HTTP server accepts (:mod:`braggscope.app.web.auth`); without one the
answer is 401 and nothing else. Control requests go to the HTTP server with the user's own key.

One feed serves every page (:class:`Hub`): the queue is polled once, the bus is read once and
the maps are reduced once, whatever the number of pages. A page that cannot keep up gets the
newest maps, not every one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from braggscope.app.bus.settings import bus_settings
from braggscope.app.web.auth import OPERATOR, KeyChecker, key_from_header
from braggscope.app.web.codec import decode, encode
from braggscope.app.web.feed import RunFeed
from braggscope.app.web.follow import FeedThread, follow_bus
from braggscope.app.web.queue_state import QueueMonitor
from braggscope.app.web.runs import RecentRuns
from braggscope.core.errors import ConfigError

__all__ = ["Hub", "PageServer", "make_app", "STATIC"]

STATIC = Path(__file__).with_name("static")
#: the feed's topics: JSON ones, then binary ones
TEXT_TOPICS = ("queue", "run", "beam", "runs", "bus")
BINARY_TOPICS = ("maps", "curve")
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                                               "frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


class Hub:
    """The newest message of each topic, and the pages to send them to (the event loop's thread only)."""

    def __init__(self):
        self.latest: dict = {}
        self._pages: set[asyncio.Queue] = set()

    def publish(self, topic: str, payload) -> None:
        self.latest[topic] = payload
        for pending in self._pages:
            pending.put_nowait((topic, payload))

    async def serve(self, websocket: WebSocket) -> None:
        """Send the newest messages to one page until it goes; a page that lags skips to the newest."""
        pending: asyncio.Queue = asyncio.Queue()
        for topic, payload in self.latest.items():
            pending.put_nowait((topic, payload))
        self._pages.add(pending)
        try:
            while True:
                batch = {}
                topic, payload = await pending.get()
                batch[topic] = payload
                while not pending.empty():  # what piled up while the last send went: the newest of each
                    topic, payload = pending.get_nowait()
                    batch[topic] = _merged(batch.get(topic), topic, payload)
                for topic, payload in batch.items():
                    if topic in BINARY_TOPICS:
                        await websocket.send_bytes(payload)
                    else:
                        await websocket.send_text(json.dumps({"type": topic, "data": payload}, default=str))
        finally:
            self._pages.discard(pending)


def _merged(older, topic, newer):
    """The newer message of a topic (maps: the newest, carrying the older's latency groups too)."""
    if topic != "maps" or older is None:
        return newer
    old_header, _ = decode(older)
    header, arrays = decode(newer)
    header["latency"] = old_header.get("latency", []) + header.get("latency", [])
    header.pop("arrays", None)
    return encode(header, arrays)


def make_app(cfg, *, poll_s: float = 0.5, map_interval_s: float = 0.1) -> Starlette:
    """The page's application for a configuration (its ``[queue]``, ``[bus]`` and ``[storage]``).

    Parameters
    ----------
    cfg : braggscope.core.config.Config
        ``queue.url`` (the HTTP server) and ``queue.observer_key`` (the read-only key the
        server reads the queue with) are required.
    poll_s : float
        Seconds between two status requests to the queue.
    map_interval_s : float
        Least time between two map messages.
    """
    page = PageServer(cfg, poll_s=poll_s, map_interval_s=map_interval_s)
    routes = [Route("/", page.index), Route("/api/whoami", page.whoami), Route("/api/state", page.state),
              Route("/api/plans", page.plans), Route("/api/control/{action}", page.control, methods=["POST"]),
              Route("/api/runs/{uid}/figure", page.figure), WebSocketRoute("/api/ws", page.websocket),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    app = Starlette(routes=routes, lifespan=page.lifespan)
    app.state.page = page
    return app


class PageServer:
    """The page's parts (the queue monitor, the bus and its feed, the runs) and its request handlers."""

    def __init__(self, cfg, *, poll_s: float, map_interval_s: float):
        self.cfg, self.poll_s = cfg, poll_s
        self.url, self.observer = cfg.get("queue.url", ""), cfg.get("queue.observer_key", "")
        if not self.url or not self.observer:
            raise ConfigError("the page needs [queue] url and [queue] observer_key (braggscope serve writes both "
                              "into <state_dir>/config.toml)")
        self.hub, self.checker = Hub(), KeyChecker(self.url)
        self.feed = RunFeed(min_interval_s=map_interval_s)
        self.monitor = self.runs = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        """Start the queue monitor, the bus's feed and the runs' thread; stop them at the end."""
        loop, stop = asyncio.get_running_loop(), asyncio.Event()

        def from_thread(topic, payload):
            loop.call_soon_threadsafe(self.hub.publish, topic, payload)

        self.runs = RecentRuns(self.cfg, lambda state: from_thread("runs", state), figures=self.feed.figures).start()
        self.monitor = QueueMonitor(self.url, self.observer, lambda state: self.hub.publish("queue", state),
                                    poll_s=self.poll_s)
        tasks = [asyncio.create_task(self.monitor.run(stop))]
        bus, sink = bus_settings(self.cfg), None
        if bus["url"]:
            sink = FeedThread(self.feed, lambda messages: self._feed_messages(messages, from_thread))
            tasks.append(asyncio.create_task(follow_bus(bus["url"], bus["stream"], bus["subject"], sink, stop=stop,
                                                        status=lambda line: self.hub.publish("bus", line))))
        else:
            self.hub.publish("bus", "no document bus ([bus] url is empty): no live maps")
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            if sink is not None:
                sink.close()
            self.runs.close()
            await self.checker.close()

    def _feed_messages(self, messages, from_thread):
        for topic, payload in messages:
            from_thread(topic, payload)
            if topic == "run" and payload.get("exit_status") is not None:
                self.runs.refresh()  # the ended run into the list now

    async def _role(self, request):
        """``(role, None)`` for a request with a valid key, else ``(None, the refusal)``."""
        try:
            role = await self.checker.role(key_from_header(request.headers.get("authorization")))
        except httpx.HTTPError:
            return None, _json({"detail": "the queue's HTTP server does not answer: the key cannot be checked"}, 503)
        if role is None:
            return None, _json({"detail": "a valid API key is required (Authorization: ApiKey <key>)"}, 401)
        return role, None

    async def index(self, request):
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)

    async def whoami(self, request):
        role, refused = await self._role(request)
        return refused or _json({"role": role})

    async def state(self, request):
        role, refused = await self._role(request)
        return refused or _json({topic: self.hub.latest.get(topic) for topic in TEXT_TOPICS} | {"role": role})

    async def plans(self, request):
        role, refused = await self._role(request)
        if refused:
            return refused
        try:
            return _json({"plans": await self.monitor.plans(key_from_header(request.headers["authorization"]))})
        except httpx.HTTPError as exc:
            return _json({"detail": f"the queue's HTTP server: {type(exc).__name__}"}, 502)

    async def control(self, request):
        role, refused = await self._role(request)
        if refused:
            return refused
        action = request.path_params["action"]
        if role != OPERATOR:
            return _json({"ok": False, "msg": f"{action}: a read-only key cannot change anything"}, 403)
        try:
            params = await request.json() if await request.body() else {}
        except ValueError:
            params = None
        if not isinstance(params, dict):
            return _json({"ok": False, "msg": f"{action}: the body must be a JSON object"}, 400)
        ok, msg = await self.monitor.control(action, key_from_header(request.headers["authorization"]), params)
        return _json({"ok": ok, "msg": msg}, 200 if ok else 409)

    async def figure(self, request):
        role, refused = await self._role(request)
        if refused:
            return refused
        try:
            data = await asyncio.to_thread(self.runs.figure, request.path_params["uid"])
        except Exception as exc:  # noqa: BLE001 - a run not found or unreadable: said in one line
            return _json({"detail": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}, 404)
        if data is None:
            return _json({"detail": "no figure for this run here (braggscope reduce makes one)"}, 404)
        return Response(data, media_type="application/octet-stream", headers=SECURITY_HEADERS)

    async def websocket(self, websocket: WebSocket):
        """The page's feed: the key first, then the hub's messages until the page goes."""
        await websocket.accept()
        try:
            hello = await asyncio.wait_for(websocket.receive_json(), 10.0)
            role = await self.checker.role(hello.get("key") if isinstance(hello, dict) else None)
        except (TimeoutError, ValueError, KeyError, WebSocketDisconnect, httpx.HTTPError):
            role = None
        if role is None:
            with contextlib.suppress(Exception):
                await websocket.send_text(json.dumps({"type": "refused", "data": "a valid API key is required"}))
                await websocket.close(code=4401)
            return
        await websocket.send_text(json.dumps({"type": "hello", "data": {
            "role": role, "beamline": self.cfg.get("beamline.name", "")}}))
        sender = asyncio.create_task(self.hub.serve(websocket))
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass  # the page sends nothing more: this notices when it goes
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender


def _json(content, status: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers=SECURITY_HEADERS)
