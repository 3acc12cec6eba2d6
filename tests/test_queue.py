"""Queued remote operation: the real queue server (RE Manager) with braggscope's profile and the real
bluesky-httpserver in front of it, on loopback, started and stopped by ``braggscope serve``.

Needs Redis on 127.0.0.1:6379 (the queue and its history live there; the tests use database 3 and a
key prefix of their own, deleted at the end). Skipped, saying why, when Redis does not answer.
The devices are braggscope's in-process simulated devices (``[queue] devices = "inprocess"``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.service_helpers import assert_no_process_left, free_port, listening_addresses, newest_child, redis_or_skip

pytestmark = [pytest.mark.services, pytest.mark.slow]

REDIS_DB = 3
RASTER = dict(detectors=["mpx1x4"], x_motor="pix", y_motor="piy", eta_motor="eta")


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    """A queue server + HTTP server started by braggscope serve; yields (cfg, client, api key)."""
    redis = redis_or_skip(REDIS_DB)
    from braggscope.app.serve import services as serve
    from braggscope.app.serve.queue_client import QueueClient
    from braggscope.core.config import load_config

    root = tmp_path_factory.mktemp("queue")
    prefix = f"braggscope_test_{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    cfg = load_config()
    for name, value in {"queue.devices": "inprocess", "queue.redis": f"127.0.0.1:6379/{REDIS_DB}",
                        "queue.redis_prefix": prefix, "queue.api_key": key, "storage.data_dir": str(root / "data"),
                        "detector.read_path": str(root / "data" / "detector"),
                        "detector.write_path": str(root / "data" / "detector"), "simulator.realtime": False,
                        "serve.state_dir": str(root / "serve"), "serve.services": ["queue", "http"],
                        "bus.url": ""}.items():
        cfg.set(name, value)
    for name in ("queue_control_port", "queue_info_port", "http_port"):
        cfg.set(f"serve.{name}", free_port())
    if "catalog_server" in cfg["storage"]:  # the embedded catalog, written by the queue's worker alone
        cfg.set("storage.catalog_server", "off")
    try:
        serve.start_services(cfg, timeout=180, echo=lambda line: None)
        client = QueueClient(f"http://127.0.0.1:{cfg['serve.http_port']}", api_key=key, timeout=30)
        yield cfg, client, key
    finally:
        serve.stop_services(cfg, echo=lambda line: None)
        for k in redis.scan_iter(f"{prefix}*"):
            redis.delete(k)
        assert not list(redis.scan_iter(f"{prefix}*"))
        assert_no_process_left(str(root), "braggscope.app.serve.http_server --host 127.0.0.1 --port "
                               f"{cfg['serve.http_port']}",
                               ports=[cfg[f"serve.{n}"] for n in ("queue_control_port", "queue_info_port",
                                                                  "http_port")])


def _last(client, name=None):
    items = [h for h in client.history() if name is None or h["name"] == name]
    return items[-1]


def test_services_bind_loopback_only_and_refuse_requests_without_the_key(queue):
    cfg, client, key = queue
    for port in (cfg["serve.queue_control_port"], cfg["serve.queue_info_port"], cfg["serve.http_port"]):
        assert listening_addresses(port) == {"127.0.0.1"}, port
    url = f"http://127.0.0.1:{cfg['serve.http_port']}/api/status"
    for headers in ({}, {"Authorization": "ApiKey wrong-key"}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
        assert refused.value.code == 401
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"ApiKey {key}"}),
                                timeout=10) as ok:
        assert ok.status == 200
    from braggscope.app.serve.queue_client import QueueClient
    from braggscope.core.errors import UserError

    with pytest.raises(UserError, match="refused the API key"):
        QueueClient(client.url, api_key="wrong-key").status()
    from braggscope.app.serve.services import service_status

    assert all(ok for ok, _ in service_status(cfg).values())


def test_profile_plans_and_argument_checks_at_submission(queue):
    cfg, client, _ = queue
    assert {"sxdm_map", "calibrate_eccentricity", "bcdi_rocking", "dry_run", "count", "mv"} <= set(client.plans())
    from braggscope.core.errors import ArgumentError

    eta_high = cfg["limits.eta"][1]
    refused = {
        "out of range": (dict(RASTER, x_range=[0, 2, 3], y_range=[0, 1, 2], etas=[9.0, eta_high + 1])),
        "nosuch": (dict(RASTER, detectors=["nosuch"], x_range=[0, 2, 3], y_range=[0, 1, 2], etas=[9.0])),
        "valid tuple": (dict(RASTER, x_range="0 to 2", y_range=[0, 1, 2], etas=[9.0])),
        "eta": (dict(RASTER, x_motor="eta", x_range=[0, 2, 3], y_range=[0, 1, 2], etas=[9.0])),
    }
    before = len(client.items())
    for reason, kwargs in refused.items():
        with pytest.raises(ArgumentError, match=reason):
            client.add("sxdm_map", **kwargs)
    with pytest.raises(ArgumentError, match="size_m"):
        client.add("bcdi_rocking", ["mpx1x4"], "eta", 9.0, d_spacing=2.0)  # a required argument missing
    assert len(client.items()) == before  # nothing refused was queued


def test_plan_level_checks_fail_the_item_before_any_motion(queue):
    cfg, client, _ = queue
    client.open(timeout=180)
    high = cfg["limits.pix"][1]
    client.add("sxdm_map", x_range=[0, high + 50, 3], y_range=[0, 1, 2], etas=[9.0], **RASTER)
    client.start()
    client.wait(timeout=120)
    item = _last(client, "sxdm_map")
    assert item["result"]["exit_status"] == "failed"
    assert "x_range" in item["result"]["msg"] and f"{high:g}" in item["result"]["msg"]
    assert item["result"]["run_uids"] == []  # refused before the run opened: nothing moved
    back = client.items()  # a failed item goes back to the front of the queue (with a new uid)
    assert [(i["name"], i["kwargs"]["x_range"]) for i in back] == [("sxdm_map", item["kwargs"]["x_range"])]
    client.clear()
    # the dry run from the queue: a good plan passes, a set-point beyond a limit fails naming it
    client.add("dry_run", "sxdm_map", {**RASTER, "x_range": [0, 2, 3], "y_range": [0, 1, 2], "etas": [9.0, 9.1]})
    client.start()
    client.wait(timeout=120)
    assert _last(client, "dry_run")["result"]["exit_status"] == "completed"
    client.add("dry_run", "sxdm_map", {**RASTER, "x_range": [0, 2, 3], "y_range": [0, 1, 2], "etas": [9.0],
                                       "eccentricity": {"eta0": 0.0, "x": [1000.0, 0.0], "y": [0.0, 0.0]}})
    client.start()
    client.wait(timeout=120)
    failed = _last(client, "dry_run")["result"]
    assert failed["exit_status"] == "failed" and "pix" in failed["msg"]
    client.clear()


def test_run_pause_resume_and_abort_remotely_with_history_in_redis(queue):
    cfg, client, _ = queue
    from braggscope import storage
    from braggscope.app.serve import services as serve

    client.open(timeout=180)
    small = dict(RASTER, x_range=[0, 2, 4], y_range=[0, 1, 3], etas=[9.0, 9.1], sample="queued")
    client.add("sxdm_map", **small)
    big = dict(RASTER, x_range=[0, 20, 40], y_range=[0, 20, 40], etas=[9.0, 9.1])
    client.add("sxdm_map", **big, sample="paused")
    client.start()
    _wait_running(client, "paused")
    client.pause()  # deferred: at the next checkpoint
    client.wait(timeout=120, paused=True)
    assert client.status()["re_state"] == "paused"
    client.resume()
    _wait_running(client, "paused")
    client.pause(immediate=True)
    client.wait(timeout=120, paused=True)
    client.abort()
    client.wait(timeout=120)
    history = client.history()
    done, aborted = history[-2], history[-1]
    assert done["kwargs"]["sample"] == "queued" and done["result"]["exit_status"] == "completed"
    assert aborted["kwargs"]["sample"] == "paused" and aborted["result"]["exit_status"] == "aborted"
    assert [i["kwargs"].get("sample") for i in client.items()] == ["paused"]  # back at the front, to run again
    client.clear()
    uids = [done["result"]["run_uids"][0], aborted["result"]["run_uids"][0]]
    # the history is kept in Redis: a new queue server process finds it
    n_history = len(history)
    serve.stop_services(cfg, ["http", "queue"], echo=lambda line: None)
    catalog = storage.open_catalog(cfg)  # the worker's catalog writer is gone: read what it wrote
    complete = storage.load_run(catalog, uids[0])
    assert complete.metadata["stop"]["exit_status"] == "success"
    assert complete.metadata["stop"]["num_events"]["primary"] == 4 * 3 * 2
    partial = storage.load_run(catalog, uids[1])
    assert partial.metadata["stop"]["exit_status"] == "abort"
    assert 0 < partial.metadata["stop"]["num_events"]["primary"] < 40 * 40 * 2
    del catalog
    serve.start_services(cfg, ["queue", "http"], timeout=180, open_environment=False, echo=lambda line: None)
    after = client.history()
    assert len(after) == n_history and [h["item_uid"] for h in after] == [h["item_uid"] for h in history]


def test_abort_after_an_immediate_pause_soon_after_a_resume_ends_aborted(queue):
    """Resumed, paused at once, aborted: the item ends ``aborted``, not ``failed`` ("A second 'create'
    message ..." came from the baseline's closing reading meeting the event bundle the pause left open)."""
    _, client, _ = queue
    client.open(timeout=180)
    big = dict(RASTER, x_range=[0, 20, 40], y_range=[0, 20, 40], etas=[9.0, 9.1])
    for k in range(3):  # the pause lands somewhere else in a point each time
        client.add("sxdm_map", **big, sample=f"abort{k}")
        client.start()
        _wait_running(client, f"abort{k}", settle_s=0.5)
        try:
            client.pause(immediate=True)
        except Exception as exc:  # the item ended already: say how
            raise AssertionError(f"{exc}; last item: {_last(client)}") from exc
        client.wait(timeout=120, paused=True)
        client.resume()
        _wait_running(client, f"abort{k}", settle_s=0.05 + 0.1 * k)  # soon after the resume
        client.pause(immediate=True)
        client.wait(timeout=120, paused=True)
        client.abort()
        client.wait(timeout=120)
        result = _last(client, "sxdm_map")["result"]
        assert result["exit_status"] == "aborted", result
        client.clear()  # the aborted item went back to the front


def test_a_pause_the_manager_timed_out_while_its_worker_was_busy_is_carried_out_once(queue):
    """A worker busy on a loaded host (here: stopped for 2 s) answers a request late but still pauses;
    meanwhile the manager times the request out or the HTTP server stops waiting for it (HTTP 408).
    The client sends the request again until the
    worker answers, and takes its refusal "already pausing" as the pause done; it used to decide on
    the status, up to 1 s stale, send again, and be refused. The same for a resume. ``wait(paused=True)``
    returns only once the worker's RunEngine is paused, so the abort finds it paused."""
    cfg, client, _ = queue
    from braggscope.app.serve.services import serve_paths

    client.open(timeout=180)
    client.add("sxdm_map", **dict(RASTER, x_range=[0, 20, 40], y_range=[0, 20, 40], etas=[9.0, 9.1]),
               sample="stalled")
    client.start()
    _wait_running(client, "stalled", settle_s=0.5)
    manager = json.loads(serve_paths(cfg)["state"].read_text())["queue"]["pid"]
    worker = newest_child(manager)  # the RunEngine worker: started after the manager, at environment_open

    def while_stalled(request):
        os.kill(worker, signal.SIGSTOP)
        cont = threading.Timer(2.0, os.kill, (worker, signal.SIGCONT))
        cont.start()
        try:
            t0 = time.monotonic()
            request()
            assert time.monotonic() - t0 > 1.5  # answered only once the worker ran again
        finally:
            cont.join()
            os.kill(worker, signal.SIGCONT)

    while_stalled(lambda: client.pause(immediate=True))
    client.wait(timeout=120, paused=True)
    assert client._api.status(reload=True)["re_state"] == "paused"
    # a resume timed out the same way (the manager then stays 'paused' until the plan's next report):
    # carried out once; the next pause and the abort find the RunEngine in the state they need
    while_stalled(client.resume)
    _wait_running(client, "stalled", settle_s=0.2)
    client.pause(immediate=True)
    client.wait(timeout=120, paused=True)
    client.abort()
    client.wait(timeout=120)
    assert _last(client, "sxdm_map")["result"]["exit_status"] == "aborted"
    client.clear()


def _profile_config(tmp_path):
    """A configuration for the queue profile in this process: in-process devices, an embedded catalog."""
    from braggscope.core.config import load_config

    cfg = load_config()
    for name, value in {"queue.devices": "inprocess", "storage.data_dir": str(tmp_path / "data"),
                        "storage.catalog_server": "off", "detector.read_path": str(tmp_path / "detector"),
                        "detector.write_path": str(tmp_path / "detector"), "detector.shape": [16, 16],
                        "detector.cch": [8.0, 8.0], "bus.url": "", "simulator.realtime": False}.items():
        cfg.set(name, value)
    return cfg


def test_profile_run_engine_aborts_cleanly_when_paused_inside_a_point(tmp_path):
    """The profile's RunEngine, paused between a point's ``create`` and ``save`` (as the queue server's
    ``re_pause immediate`` does it), then aborted or stopped: the run ends ``abort``/``success`` with its
    baseline read, and the stop document counts exactly the events emitted. Also paused inside the
    opening baseline reading (where ``trigger_and_read`` drops the bundle itself on the way out), once
    more after the resume, in the messages the rewind replays (the bundle is then closed already)."""
    import asyncio

    from bluesky.utils import RunEngineInterrupted

    from braggscope.app.serve.queue_profile import build_namespace

    cfg = _profile_config(tmp_path)
    ns = build_namespace(cfg)
    RE = ns["RE"]
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    pause_at = {"n": 0, "at": "create"}

    def where(msg):
        if pause_at["at"] == "baseline read":  # the first device the baseline reads
            return msg.command == "read" and msg.obj is ns["energy"]
        if pause_at["at"] == "any":  # whatever message comes next
            return True
        return msg.command == pause_at["at"] and (msg.obj is ns["mpx1x4"] or msg.kwargs.get("name") == "primary")

    def hook(msg):  # the queue server's way: the pause coroutine put on the RunEngine's loop
        if where(msg):
            pause_at["n"] -= 1
            if pause_at["n"] == 0:
                asyncio.run_coroutine_threadsafe(RE._request_pause_coro(False), loop=RE.loop)

    RE.msg_hook = hook
    # paused after the point's 'create' (before its trigger) or after its trigger (the frame and its
    # datum are made, the event is not): the datum must not leak into the next run either
    cases = [(ending, at, 3 + k, at, 2) for k, (ending, at) in  # inside the second point after the resume
             enumerate((("abort", "create"), ("abort", "trigger"), ("stop", "trigger"), ("abort", "create")))]
    cases += [("abort", "baseline read", 1, "any", 1), ("stop", "baseline read", 1, "any", 1),
              ("abort", "baseline read", 1, "baseline read", 1)]
    for ending, first, n_first, second, n_second in cases:
        docs.clear()
        pause_at.update(n=n_first, at=first)
        plan = ns["sxdm_map"]([ns["mpx1x4"]], ns["pix"], (0, 4, 5), ns["piy"], (0, 4, 4), ns["eta"], [9.0, 9.1])
        with pytest.raises(RunEngineInterrupted):
            RE(plan)
        pause_at.update(n=n_second, at=second)
        with pytest.raises(RunEngineInterrupted):
            RE.resume()
        getattr(RE, ending)()
        names = [n for n, _ in docs]
        stop = docs[-1][1]
        assert names[-1] == "stop" and stop["exit_status"] == ("abort" if ending == "abort" else "success"), \
            (ending, first, second, stop)
        streams = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
        emitted = [streams[d["descriptor"]] for n, d in docs if n == "event"]
        assert {s: n for s, n in stop["num_events"].items() if n} == {s: emitted.count(s) for s in set(emitted)}
        if first == "baseline read":  # interrupted before the first point: the run's stop, no point
            assert "primary" not in emitted
        else:
            assert emitted.count("baseline") == 2 and 0 < emitted.count("primary") < 40
    RE.msg_hook = None
    docs.clear()
    RE(ns["sxdm_map"]([ns["mpx1x4"]], ns["pix"], (0, 4, 3), ns["piy"], (0, 4, 2), ns["eta"], [9.0]))
    assert docs[-1][1]["exit_status"] == "success", docs[-1][1]  # the catalog writer saw no stray datum


def test_profile_run_engine_continues_the_shells_scan_ids(tmp_path):
    """The worker's RunEngine takes its scan ids from the counter the operators' shells share
    (``storage.data_dir``): after a local shell's runs 1 to 3 the queue's next run is 4, and a shell
    opened after it goes on at 5. (Without the counter the worker started again at 1: the queue shell's
    and the local shell's maps were both 'scan 5' in one catalog, and ``db[5]`` had two runs.)"""
    from bluesky import RunEngine
    from bluesky.plans import count

    from braggscope import storage
    from braggscope.app.serve.queue_profile import build_namespace
    from braggscope.storage.scan_ids import install_scan_ids

    cfg = _profile_config(tmp_path)

    def shell_runs(n):  # a local shell's RunEngine, as the session makes it
        RE = RunEngine()
        install_scan_ids(RE, cfg, storage.open_catalog(cfg))
        starts = []
        RE.subscribe(lambda name, doc: starts.append(doc["scan_id"]), "start")
        for _ in range(n):
            RE(count([]))
        return starts

    assert shell_runs(3) == [1, 2, 3]
    ns = build_namespace(cfg)
    starts = []
    ns["RE"].subscribe(lambda name, doc: starts.append(doc["scan_id"]), "start")
    ns["RE"](ns["count"]([ns["mpx1x4"]]))
    assert starts == [4]
    assert shell_runs(1) == [5]


def _wait_running(client, sample, timeout=120.0, settle_s=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = client.status().get("running_item_uid")
        if running:
            items = client._call("queue_get").get("running_item") or {}
            if items.get("kwargs", {}).get("sample") == sample and client.status()["re_state"] == "running":
                time.sleep(settle_s)  # some points into the run
                return
        time.sleep(0.2)
    raise TimeoutError(f"the item {sample!r} did not start running within {timeout} s; last item: {_last(client)}")


def test_shell_queue_namespace(queue):
    cfg, client, key = queue
    from braggscope.app.serve.queue_shell import queue_namespace
    from braggscope.core.errors import ArgumentError, ServerUnreachableError

    ns = queue_namespace(cfg, client.url, api_key=key)
    try:
        assert ns["queue"].status()["manager_state"] in ("idle", "executing_queue")
        assert "queue.add(" in ns["__banner__"] and client.url in ns["__banner__"]
        assert {"wa", "mv", "ascan", "cen", "sxdm", "kmap", "RE", "db"} <= set(ns)
    finally:
        ns["__cleanup__"]()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with pytest.raises(ServerUnreachableError):
        queue_namespace(cfg, f"http://127.0.0.1:{dead}", api_key=key)
    with pytest.raises(ArgumentError, match="API key"):
        import os

        saved = os.environ.pop("BRAGGSCOPE_QUEUE_API_KEY", None)
        try:
            cfg2 = __import__("copy").deepcopy(cfg)
            cfg2.set("queue.api_key", "")
            queue_namespace(cfg2, client.url)
        finally:
            if saved is not None:
                os.environ["BRAGGSCOPE_QUEUE_API_KEY"] = saved
