"""Helpers of the page's tests (test_web_services, test_web_browser, test_web_hosts, bench_web): a stack of
services started by ``braggscope serve``, requests to its servers, and Debian's headless Chromium."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import urllib.error
import urllib.request
import uuid

import pytest

from tests.service_helpers import assert_no_process_left, free_port, redis_or_skip

REDIS_DB = 3
CHROMIUM = "/usr/bin/chromium"
#: Chromium's flags for the tests: headless, no sandbox (root in a container), nothing fetched from outside
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PORTS = ("tiled_port", "queue_control_port", "queue_info_port", "http_port", "web_port")


def nats_answers(host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, 4222), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def serve_stack(root, services, *, cfg=None, bus=True, **values):
    """``braggscope serve`` with ``services`` under ``root``; yields (cfg, effective cfg, keys); stops them all.

    Needs Redis (skips without it). The bus (a stream and subject of its own on 127.0.0.1:4222) when
    ``bus`` and the broker answers; ``values``: configuration keys to set.
    """
    redis = redis_or_skip(REDIS_DB)
    from braggscope.app.serve import services as serve
    from braggscope.core.config import load_config

    prefix = f"braggscope_test_{uuid.uuid4().hex[:8]}"
    keys = {"queue": uuid.uuid4().hex, "observer": uuid.uuid4().hex}
    cfg = load_config() if cfg is None else cfg
    settings = {"queue.redis": f"127.0.0.1:6379/{REDIS_DB}", "queue.redis_prefix": prefix,
                "queue.api_key": keys["queue"], "queue.observer_key": keys["observer"],
                "storage.data_dir": str(root / "data"), "detector.read_path": str(root / "data" / "det"),
                "detector.write_path": str(root / "data" / "det"), "serve.state_dir": str(root / "serve"),
                "serve.services": list(services), "bus.url": ""}
    if bus and nats_answers():
        tag = uuid.uuid4().hex[:8]
        settings.update({"bus.url": "nats://127.0.0.1:4222", "bus.stream": f"BSWEB_{tag.upper()}",
                         "bus.subject": f"bstest.web{tag}.documents", "bus.spill_dir": str(root / "spill")})
    for name, value in {**settings, **{f"serve.{p}": free_port() for p in PORTS}, **values}.items():
        cfg.set(name, value)
    try:
        serve.start_services(cfg, timeout=300, echo=lambda line: None)
        yield cfg, load_config(root / "serve" / "config.toml"), keys
    finally:
        serve.stop_services(cfg, echo=lambda line: None)
        for k in redis.scan_iter(f"{prefix}*"):
            redis.delete(k)
        if cfg["bus.url"]:
            from tests.test_bus import delete_stream

            delete_stream(cfg["bus.url"], cfg["bus.stream"])
        assert_no_process_left(str(root), ports=[cfg[f"serve.{p}"] for p in PORTS])


def request(port, path, key=None, method="GET", body=None, host="127.0.0.1"):
    """``(status, parsed JSON or bytes)`` of one request to ``host:port``."""
    headers = {"Authorization": f"ApiKey {key}"} if key else {}
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(f"http://{host}:{port}{path}", headers=headers, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            raw, status, kind = response.read(), response.status, response.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        raw, status, kind = exc.read(), exc.code, exc.headers.get("content-type", "")
    return status, (json.loads(raw) if "json" in kind else raw)


@contextlib.contextmanager
def chromium(user_data_dir):
    """A Playwright browser context on Debian's Chromium (never a downloaded one); skips without them."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no {CHROMIUM}: apt-get install chromium (.ci/run does)")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(user_data_dir), executable_path=CHROMIUM,
                                                       args=CHROMIUM_ARGS, headless=True,
                                                       viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()
