"""``python -m braggscope.app.serve.http_server --host H --port P``: the queue's HTTP server
(bluesky-httpserver, configured by ``$QSERVER_HTTP_SERVER_CONFIG``), with three refusals of its own.

- **An API key in the URL** (``?api_key=...``) is refused (401): a key in a URL ends up in logs,
  browser histories and ``Referer`` headers. Keys go in the ``Authorization: ApiKey <key>`` header.
- **The API's documentation pages** (``/docs``, ``/redoc``, ``/openapi.json``) are not served: they
  describe the whole API to anyone who reaches the port, key or not.
- **NaN or an infinity in a request's JSON** (``NaN``, ``Infinity``: Python reads them) is refused
  before the request goes on, with the queue's own one-line message
  (``{"success": false, "msg": "sxdm_map: x_range[0] must be finite, got nan"}``): the server would
  otherwise echo the number back in an answer it cannot write (500), or store it in the queue.

Everything else is bluesky-httpserver's own application (``app_factory``).
``braggscope serve`` starts the HTTP server this way.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from urllib.parse import parse_qs

from braggscope.app.serve.manager import nonfinite_reason

__all__ = ["Door", "main"]

#: paths not served
HIDDEN = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


class Door:
    """ASGI wrapper: the refusals of the module's docstring, then the HTTP server's application."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if "api_key" in parse_qs(scope.get("query_string", b"").decode("latin-1")):
            return await _refuse(scope, send, 401, {"detail": "an API key is never accepted in the URL: send it in "
                                                              "the Authorization header (ApiKey <key>)"})
        if scope.get("path", "").rstrip("/") in HIDDEN:
            return await _refuse(scope, send, 404, {"detail": "not served (the API's documentation is "
                                                              "bluesky-httpserver's)"})
        if scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH"):
            messages = await _whole_body(receive)
            reason = _nonfinite(b"".join(m.get("body", b"") for m in messages))
            if reason:
                return await _refuse(scope, send, 200, {"success": False, "msg": reason})
            receive = _replay(messages, receive)
        return await self.app(scope, receive, send)


async def _whole_body(receive) -> list:
    messages = [await receive()]
    while messages[-1].get("type") == "http.request" and messages[-1].get("more_body", False):
        messages.append(await receive())
    return messages


def _replay(messages, receive):
    async def replayed():
        return messages.pop(0) if messages else await receive()

    return replayed


def _nonfinite(body: bytes) -> str | None:
    """The queue's message for the first non-finite number of a JSON body, or None."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return None  # not JSON: the server answers it
    items = [data.get("item")] + list(data.get("items") or []) if isinstance(data, dict) else []
    for item in (i for i in items if isinstance(i, dict)):
        reason = nonfinite_reason(item)
        if reason:
            return reason
    if any(not math.isfinite(v) for v in _floats(data)):
        return "the request holds NaN or an infinity: every number must be finite"
    return None


def _floats(value):
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _floats(v)
    elif isinstance(value, list):
        for v in value:
            yield from _floats(v)


async def _refuse(scope, send, status: int, answer: dict):
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4000 + status})
        return
    body = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m braggscope.app.serve.http_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=60610)
    args = parser.parse_args(argv)
    # the HTTP server and uvicorn: slow to import, only in their own process
    import uvicorn
    from bluesky_httpserver.server import app_factory

    uvicorn.run(Door(app_factory()), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
