"""The page's server and the queue shell against the real services, started by ``braggscope serve``:
the catalog (tiled), the queue server with braggscope's profile (in-process devices), the HTTP server
with its two keys, the page's server, and the document bus on the machine's NATS broker (127.0.0.1:4222).

Needs Redis on 127.0.0.1:6379 (skipped, saying why, without it); the live-map test also needs the
NATS broker. Everything binds to 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from tests.service_helpers import listening_addresses, live_intensities
from tests.web_helpers import request as get
from tests.web_helpers import serve_stack

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """tiled + queue + http + web (+ the bus when NATS answers); yields (cfg, effective cfg, keys)."""
    root = tmp_path_factory.mktemp("web")
    with serve_stack(root, ["tiled", "queue", "http", "web"], **{"queue.devices": "inprocess",
                                                                 "simulator.realtime": False}) as stack:
        yield stack


def operator_client(effective, **kwargs):
    from braggscope.app.serve.queue_client import QueueClient

    return QueueClient.from_config(effective, timeout=60, **kwargs)


def test_nothing_is_readable_or_writable_without_a_key(stack):
    cfg, _, keys = stack
    web, http = cfg["serve.web_port"], cfg["serve.http_port"]
    for port in (web, http, cfg["serve.queue_control_port"]):
        assert listening_addresses(port) == {"127.0.0.1"}
    status, page = get(web, "/")
    assert status == 200 and b"<title>braggscope</title>" in page and keys["queue"].encode() not in page
    for key in (None, "0123456789abcdef0123", keys["queue"] + "00"):
        for method, path in (("GET", "/api/whoami"), ("GET", "/api/state"), ("GET", "/api/plans"),
                             ("POST", "/api/control/pause"), ("GET", "/api/runs/x/figure")):
            status, answer = get(web, path, key, method=method, body={} if method == "POST" else None)
            assert status == 401 and "valid API key" in answer["detail"], (path, key, status)
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{web}/api/ws") as ws:
        ws.send(json.dumps({"key": "not-a-key"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "refused"
    # the HTTP server: no key in the URL, no API pages
    status, answer = get(http, f"/api/status?api_key={keys['queue']}")
    assert status == 401 and "never accepted in the URL" in answer["detail"]
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert get(http, path, keys["queue"])[0] == 404
    assert get(http, "/api/status", keys["observer"])[0] == 200


def test_operator_and_observer_keys_on_the_page_and_the_queue(stack):
    cfg, effective, keys = stack
    web = cfg["serve.web_port"]
    assert get(web, "/api/whoami", keys["queue"]) == (200, {"role": "operator"})
    assert get(web, "/api/whoami", keys["observer"]) == (200, {"role": "observer"})
    status, answer = get(web, "/api/control/clear", keys["observer"], method="POST", body={})
    assert status == 403 and "read-only key cannot change anything" in answer["msg"]
    from braggscope.core.errors import UserError

    observer = operator_client(effective, api_key=keys["observer"])
    try:
        assert observer.status()["worker_environment_exists"]
        with pytest.raises(UserError, match="may only read"):
            observer.add("count", ["mpx1x4"], num=1)
        with pytest.raises(UserError, match="may only read"):
            observer.pause()
    finally:
        observer.close()
    status, answer = get(web, "/api/control/add", keys["queue"], method="POST",
                         body={"item": {"item_type": "plan", "name": "count", "args": [["mpx1x4"]],
                                        "kwargs": {"num": 1}}})
    assert status == 200 and answer["ok"], answer
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (get(web, "/api/state", keys["observer"])[1]["queue"] or {}).get("queue"):
        time.sleep(0.3)
    state = get(web, "/api/state", keys["observer"])[1]
    assert [i["name"] for i in state["queue"]["queue"]] == ["count"] and state["role"] == "observer"
    assert get(web, "/api/control/clear", keys["queue"], method="POST", body={})[1]["ok"]
    status, plans = get(web, "/api/plans", keys["queue"])
    assert {"sxdm_map", "sxdm_fly", "ascan", "mv", "goto_cen"} <= {p["name"] for p in plans["plans"]}


def test_nan_and_infinity_are_refused_at_the_queues_door(stack):
    cfg, effective, keys = stack
    from bluesky_queueserver_api import BPlan
    from bluesky_queueserver_api.zmq import REManagerAPI

    from braggscope.core.errors import ArgumentError

    client = operator_client(effective)
    raster = dict(detectors=["mpx1x4"], x_motor="pix", y_motor="piy", eta_motor="eta")
    try:
        with pytest.raises(ArgumentError, match=r"x_range\[0\] must be finite, got nan"):
            client.add("sxdm_map", x_range=[float("nan"), 51, 3], y_range=[0, 1, 2], etas=[9.0], **raster)
        with pytest.raises(ArgumentError, match=r"y_range\[1\] must be finite, got inf"):
            client.add("sxdm_map", x_range=[0, 2, 3], y_range=[0, float("inf"), 2], etas=[9.0], **raster)
        # the JSON the HTTP server reads may spell them: NaN, Infinity
        body = (b'{"item": {"item_type": "plan", "name": "mv", "args": ["pix", NaN]}}')
        status, answer = get(cfg["serve.http_port"], "/api/queue/item/add", keys["queue"], "POST", body)
        assert not answer["success"] and "mv: argument 2 must be finite, got nan" in answer["msg"]
        zmq = REManagerAPI(zmq_control_addr=f"tcp://127.0.0.1:{cfg['serve.queue_control_port']}")
        try:  # the 0MQ door: the manager itself
            with pytest.raises(zmq.RequestFailedError, match=r"x_range\[1\] must be finite, got -inf"):
                zmq.item_add(BPlan("sxdm_map", x_range=[0, float("-inf"), 3], y_range=[0, 1, 2], etas=[9.0],
                                   **raster), user="test", user_group="primary")
        finally:
            zmq.close()
        assert client.items() == []
        for path in ("/api/queue/get", "/api/history/get"):  # nothing poisoned: every client still reads them
            assert get(cfg["serve.http_port"], path, keys["observer"])[0] == 200
    finally:
        client.close()


def test_the_queue_worker_runs_in_an_ipython_kernel_that_a_console_attaches_to(stack):
    cfg, _, _ = stack
    from bluesky_queueserver_api.zmq import REManagerAPI
    from jupyter_client import BlockingKernelClient

    api = REManagerAPI(zmq_control_addr=f"tcp://127.0.0.1:{cfg['serve.queue_control_port']}")
    try:
        info = api.config_get()["config"]["ip_connect_info"]  # what qserver-console reads
    finally:
        api.close()
    assert info["ip"] == "127.0.0.1" and info["key"]
    kernel = BlockingKernelClient()
    kernel.load_connection_info(info)
    kernel.start_channels()
    try:
        out = []
        reply = kernel.execute_interactive("print(sorted(n for n in ('RE', 'pix', 'ascan', 'sxdm_fly') if n in "
                                           "globals()), RE.state)", timeout=60,
                                           output_hook=lambda msg: out.append(msg["content"].get("text", "")))
    finally:
        kernel.stop_channels()
    assert reply["content"]["status"] == "ok"
    assert "['RE', 'ascan', 'pix', 'sxdm_fly'] idle" in "".join(out)


def test_the_page_maps_a_run_live_and_keeps_its_figure(stack):
    cfg, effective, keys = stack
    if not cfg["bus.url"]:
        pytest.skip("no NATS broker on 127.0.0.1:4222: no live maps")
    from websockets.sync.client import connect

    from braggscope import storage
    from braggscope.app.web.codec import decode

    messages, ready = [], threading.Event()

    def listen():
        with connect(f"ws://127.0.0.1:{cfg['serve.web_port']}/api/ws", max_size=None) as ws:
            ws.send(json.dumps({"key": keys["observer"]}))
            while True:
                try:
                    message = ws.recv(timeout=1)
                except TimeoutError:
                    if stop.is_set():
                        return
                    continue
                messages.append(message)
                ready.set()

    stop = threading.Event()
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    client = operator_client(effective)
    try:
        assert ready.wait(30)
        client.add("sxdm_map", ["mpx1x4"], "pix", [0, 2, 6], "piy", [0, 1, 4], "eta", [9.0, 9.1], sample="web")
        client.start()
        client.wait(timeout=300)
        uid = client.history()[-1]["result"]["run_uids"][0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(isinstance(m, bytes) and decode(m)[0]["finished"]
                                                      and decode(m)[0]["run"] == uid for m in messages):
            time.sleep(0.3)
    finally:
        stop.set()
        listener.join(10)
        client.close()
    maps = [decode(m) for m in messages if isinstance(m, bytes) and decode(m)[0]["run"] == uid]
    header, arrays = maps[-1]
    assert header["finished"] and header["n_frames"] == 48
    run = storage.load_run(storage.open_catalog(effective), uid)  # through tiled, with its key
    stack_ = storage.sxdm_stack(run)
    frame_totals = live_intensities(stack_.frames).sum(axis=0)  # (ny, nx): less each frame's background
    np.testing.assert_allclose(arrays["intensity"], frame_totals, rtol=1e-4)
    texts = [json.loads(m) for m in messages if isinstance(m, str)]
    runs = [t["data"] for t in texts if t["type"] == "run" and t["data"]["uid"] == uid]
    assert runs[-1]["done"] == runs[-1]["total"] == 48 and runs[-1]["exit_status"] == "success"
    status, figure = get(cfg["serve.web_port"], f"/api/runs/{uid}/figure", keys["observer"])
    assert status == 200 and decode(figure)[0]["run"] == uid
    np.testing.assert_array_equal(decode(figure)[1]["intensity"], arrays["intensity"])
    state = get(cfg["serve.web_port"], "/api/state", keys["observer"])[1]
    assert state["runs"]["runs"][0]["uid"] == uid and state["runs"]["runs"][0]["has_figure"]


def test_the_queue_shell_runs_the_sessions_commands_in_the_worker(stack, capsys):
    _, effective, keys = stack
    from braggscope.app.serve.queue_shell import QueuePaused, queue_namespace
    from braggscope.core.errors import ArgumentError, UserError

    ns = queue_namespace(effective)
    other = queue_namespace(effective)  # a second operator's shell
    try:
        positions = ns["wa"]()
        assert set(positions) >= {"pix", "piy", "eta"} and "Current Positions: user" in capsys.readouterr().out
        result = ns["ascan"](ns["pix"], 45, 55, 10, 0.01)
        assert result["exit_status"] == "success" and len(result["run_start_uids"]) == 1
        assert "goto_cen()" in capsys.readouterr().out
        centre = ns["goto_cen"]()
        assert centre == ns["cen"]() and abs(centre - 50.0) < 3.0  # cen() only reads, goto_cen() moves
        assert abs(ns["wm"]("pix")["pix"] - centre) < 1e-6
        with pytest.raises(ArgumentError, match=r"^mv: pix target 1e\+06 is outside its soft limits"):
            ns["mv"](ns["pix"], 1e6)
        # a second operator: refused while the first one's scan runs, naming it; reads still answer
        errors = []
        scan = threading.Thread(target=lambda: _catch(errors, ns["ascan"], ns["piy"], 45, 55, 60, 0.05))
        scan.start()
        _wait_for(lambda: other["queue"].status(reload=True)["manager_state"] == "executing_queue")
        with pytest.raises(UserError, match=r"mv not run: the beamline is busy with ascan \(.+@.+; manager"):
            other["mv"](other["pix"], 10)
        assert "piy" in other["wm"](other["piy"])
        scan.join(300)
        assert errors == []
        # Ctrl-C pauses the queue after the current point; RE.resume() finishes the command, RE.abort() ends it
        for ending in ("resume", "abort"):
            interrupt = threading.Thread(target=_ctrl_c_once_running, args=(other["queue"],))
            interrupt.start()
            with pytest.raises(QueuePaused, match="paused"):
                ns["ascan"](ns["piy"], 45, 55, 100, 0.05)
            interrupt.join()
            assert ns["RE"].state == "paused"
            if ending == "resume":
                assert ns["RE"].resume()["exit_status"] == "success"
            else:
                with pytest.raises(UserError, match="ascan: aborted"):
                    ns["RE"].abort()
            assert ns["queue"].status(reload=True)["manager_state"] == "idle"
        last = ns["db"][-1].metadata
        assert last["start"]["plan_name"] == "scan" and last["stop"]["exit_status"] == "abort"
        assert last["start"]["operator"] == ns["commands"].operator
    finally:
        ns["__cleanup__"]()
        other["__cleanup__"]()


def _ctrl_c_once_running(queue):
    """Ctrl-C (SIGINT to this process) a second after the command's item started running."""
    _wait_for(lambda: queue.status(reload=True).get("re_state") == "running")
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGINT)


def _catch(errors, function, *args):
    try:
        function(*args)
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def _wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
