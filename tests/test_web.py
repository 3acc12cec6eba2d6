"""The page's parts without servers: its binary messages, the feed made from a run's documents, the roles,
the queue's door for non-finite numbers and the HTTP server's refusals of keys in URLs.

The feed's maps are checked against what the detector itself recorded with every point (its frame
total, ``mpx1x4_total``), placed by the positions the events read back: not against the live
reduction's own arithmetic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.test_bus import acquire


@pytest.fixture(scope="module")
def run_documents(tmp_path_factory):
    """The documents of one in-process ``sxdm_map`` (6 x 5 points x 2 angles), as the bus carries them."""
    documents = []
    acquire(tmp_path_factory.mktemp("det"), [lambda name, doc: documents.append((name, dict(doc)))])
    return documents


def test_binary_messages_carry_header_and_float32_arrays():
    from braggscope.app.web.codec import decode, encode

    maps = {"a": np.arange(6, dtype=float).reshape(2, 3), "b": np.array([np.nan, 1.5, -2.0]), "c": np.zeros((0,))}
    header, arrays = decode(encode({"type": "maps", "run": "x"}, maps))
    assert header["type"] == "maps" and header["run"] == "x"
    for name, value in maps.items():
        np.testing.assert_array_equal(arrays[name], value.astype(np.float32))
        assert arrays[name].dtype == np.float32
    message = encode({"type": "x" * 5}, {"a": [1.0]})
    assert (int.from_bytes(message[:4], "little") + 4 + (-(4 + int.from_bytes(message[:4], "little")) % 4)) % 4 == 0
    with pytest.raises(ValueError):  # NaN in a header: not JSON
        encode({"t": float("nan")}, {})


def test_feed_makes_live_maps_that_match_what_the_detector_recorded(run_documents):
    from braggscope.app.web.codec import decode
    from braggscope.app.web.feed import MAP_FIELDS, RunFeed

    # the detector's own totals (Stats1) are raw sums: the feed's maps without background subtraction here
    # (the default's, each frame less its background, are checked in test_web_services and test_web_browser)
    feed, messages, t0 = RunFeed(min_interval_s=0.0, live_kwargs={"background": "none"}), [], 1000.0
    for k, (name, doc) in enumerate(run_documents):
        feed.feed(name, doc, published=t0 + k)
        if k % 20 == 0 or name == "stop":
            messages += feed.flush(now=float(k))
    runs = [m for kind, m in messages if kind == "run"]
    assert runs[-1]["exit_status"] == "success" and runs[-1]["done"] == runs[-1]["total"] == 60
    assert runs[-1]["kind"] == "map" and runs[0]["done"] < 60  # progress went up while the run went on
    maps = [decode(m) for kind, m in messages if kind == "maps"]
    assert len(maps) >= 3 and [h["n_frames"] for h, _ in maps] == sorted(h["n_frames"] for h, _ in maps)
    header, arrays = maps[-1]
    assert header["finished"] and header["n_frames"] == 60 and set(MAP_FIELDS) <= set(arrays)
    # each frame's latency entry once, over all messages: its publish time, the run's documents' times
    assert sum(n for h, _ in maps for n, _ in h["latency"]) == 60
    assert all(t0 <= t < t0 + len(run_documents) for h, _ in maps for _, t in h["latency"])
    np.testing.assert_allclose(arrays["intensity"], recorded_intensity(run_documents), rtol=1e-5)
    assert feed.figures[header["run"]] == [m for kind, m in messages if kind == "maps"][-1]


def recorded_intensity(documents) -> np.ndarray:
    """The map of the detector's own frame totals, summed over the angles, placed by the read-back positions."""
    start = next(doc for name, doc in documents if name == "start")
    events = [doc["data"] for name, doc in documents if name == "event"]
    xs = np.unique(np.round([e["pix"] for e in events], 6))
    ys = np.unique(np.round([e["piy"] for e in events], 6))
    assert (len(ys), len(xs)) == tuple(start["shape"][1:])
    out = np.zeros((len(ys), len(xs)))
    for e in events:
        out[np.argmin(abs(ys - e["piy"])), np.argmin(abs(xs - e["pix"]))] += e["mpx1x4_total"]
    return out


def test_feed_draws_a_scan_curve_and_the_beam_a_run_records():
    from braggscope.app.web.codec import decode
    from braggscope.app.web.feed import RunFeed

    start = {"uid": "s1", "scan_id": 4, "plan_name": "scan", "motors": ["eta"], "shape": [3], "num_points": 3,
             "detectors": ["xrf"], "hints": {"dimensions": [[["eta"], "primary"]]}, "time": 1.0}
    primary = {"uid": "d1", "name": "primary", "run_start": "s1",
               "hints": {"xrf": {"fields": ["xrf_counts"]}, "eta": {"fields": ["eta"]}}, "data_keys": {}}
    baseline = {"uid": "d2", "name": "baseline", "run_start": "s1", "data_keys": {}}
    suspensions = {"uid": "d3", "name": "suspensions", "run_start": "s1", "data_keys": {}}
    feed = RunFeed(min_interval_s=0.0)
    feed.feed("start", start)
    for d in (primary, baseline, suspensions):
        feed.feed("descriptor", d)
    feed.feed("event", {"descriptor": "d2", "seq_num": 1, "time": 5.0,
                        "data": {"machine_current": 180.5, "machine_shutter": 1, "machine_status": "beam"}})
    for i, (x, y) in enumerate(((9.0, 10.0), (9.1, 30.0), (9.2, 20.0))):
        feed.feed("event", {"descriptor": "d1", "seq_num": i + 1, "data": {"eta": x, "xrf_counts": y, "mon1": 1e4}})
    feed.feed("event", {"descriptor": "d3", "seq_num": 1, "data": {
        "suspension_kind": "current", "suspension_reason": "no beam", "suspension_start": 2.0,
        "suspension_end": 4.5, "suspension_duration_s": 2.5}})
    feed.feed("stop", {"run_start": "s1", "exit_status": "success"})
    out = dict(feed.flush())
    header, arrays = decode(out["curve"])
    assert (header["motor"], header["field"], header["finished"]) == ("eta", "xrf_counts", True)
    np.testing.assert_allclose(arrays["x"], [9.0, 9.1, 9.2])
    np.testing.assert_allclose(arrays["y"], [10.0, 30.0, 20.0])
    assert out["run"]["kind"] == "scan" and out["run"]["done"] == 3 and "maps" not in out
    beam = out["beam"]
    assert beam["machine_current"] == 180.5 and beam["machine_shutter"] == 1 and beam["monitor"] == {"mon1": 1e4}
    assert beam["suspensions"] == [{"kind": "current", "reason": "no beam", "start": 2.0, "end": 4.5,
                                    "duration_s": 2.5, "run": "s1"}]


def test_roles_from_the_http_servers_scopes():
    from braggscope.app.web.auth import key_from_header, role_of

    operator = {"read:status", "read:queue", "read:history", "write:queue:edit", "write:queue:control",
                "write:plan:control"}
    assert role_of(operator) == "operator"
    assert role_of({"read:status", "read:queue", "read:history", "read:console"}) == "observer"
    assert role_of({"read:status"}) is None and role_of(None) is None
    assert key_from_header("ApiKey abc123") == "abc123" and key_from_header("apikey  k ") == "k"
    assert key_from_header("Bearer abc") is None and key_from_header(None) is None
    assert key_from_header("ApiKey ") is None


def test_non_finite_numbers_are_named_at_the_queues_door():
    from braggscope.app.serve.manager import nonfinite_reason

    kind = {"name": "POSITIONAL_OR_KEYWORD", "value": 1}
    allowed = {"sxdm_map": {"parameters": [{"name": n, "kind": kind} for n in
                                           ("detectors", "x_motor", "x_range", "y_motor", "y_range")]}}
    item = {"name": "sxdm_map", "args": [["mpx1x4"], "pix", [math.nan, 51, 3]], "kwargs": {}}
    assert nonfinite_reason(item, allowed) == "sxdm_map: x_range[0] must be finite, got nan"
    item = {"name": "sxdm_map", "args": [], "kwargs": {"etas": [9.0, math.inf], "eccentricity": {"x": [-math.inf]}}}
    assert nonfinite_reason(item, allowed) == "sxdm_map: etas[1] must be finite, got inf"
    item = {"name": "mv", "args": ["pix", math.nan], "kwargs": {}}
    assert nonfinite_reason(item, {}) == "mv: argument 2 must be finite, got nan"
    assert nonfinite_reason({"name": "sxdm_map", "args": [["mpx1x4"], "pix", [0, 2, 3]],
                             "kwargs": {"md": {"note": "x"}, "etas": [9.0, 1e308]}}, allowed) is None


def test_the_http_server_refuses_keys_in_urls_nan_in_bodies_and_hides_its_api_pages():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from braggscope.app.serve.http_server import Door

    async def ok(request):
        return PlainTextResponse("ok " + (await request.body()).decode())

    app = Starlette(routes=[Route("/api/status", ok), Route("/docs", ok), Route("/openapi.json", ok),
                            Route("/api/queue/item/add", ok, methods=["POST"])])
    client = TestClient(Door(app))
    assert client.get("/api/status", headers={"Authorization": "ApiKey abc"}).text == "ok "
    refused = client.get("/api/status?api_key=abc")
    assert refused.status_code == 401 and "Authorization header" in refused.json()["detail"]
    for path in ("/docs", "/docs/", "/openapi.json"):
        assert client.get(path, headers={"Authorization": "ApiKey abc"}).status_code == 404
    # JSON with NaN or Infinity (Python reads them): refused with the queue's message, the body passed on otherwise
    body = b'{"item": {"item_type": "plan", "name": "mv", "args": ["pix", Infinity]}}'
    refused = client.post("/api/queue/item/add", content=body)
    assert refused.json() == {"success": False, "msg": "mv: argument 2 must be finite, got inf"}
    assert client.post("/api/queue/item/add", content=b'{"x": [1, -Infinity]}').json()["msg"].startswith(
        "the request holds NaN")
    good = b'{"item": {"item_type": "plan", "name": "mv", "args": ["pix", 50.0]}}'
    assert client.post("/api/queue/item/add", content=good).text == "ok " + good.decode()


def test_a_pause_the_manager_timed_out_is_sent_again_and_its_refusal_read():
    """On a loaded host the manager answers 'Timeout occurred' (its worker late) or the HTTP server 408 (the manager
    late) while the pause still happens. The page sends the request again: the worker's refusal because it is
    paused says that it went through; any other refusal is the user's answer. Answers here are the manager's own
    words (bluesky-queueserver 0.0.25)."""
    import asyncio

    import httpx

    from braggscope.app.web.queue_state import QueueMonitor

    def monitor(answers):
        sent = []

        def reply(request):
            sent.append((request.url.path, request.headers["authorization"], request.content))
            answer = answers.pop(0)
            return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

        m = QueueMonitor("http://127.0.0.1:1", "observer", lambda state: None, timeout=5.0)
        m._client = httpx.AsyncClient(base_url=m.url, transport=httpx.MockTransport(reply))
        return m, sent

    timeout = {"success": False, "msg": "Timeout occurred while processing the request"}
    paused = {"success": False, "msg": "Run engine can be paused only in 'running' state. Current state: 'paused'"}
    m, sent = monitor([timeout, timeout, paused])
    assert asyncio.run(m.control("pause", "op-key")) == (True, "pause: done")
    assert [p for p, _, _ in sent] == ["/api/re/pause"] * 3 and all(k == "ApiKey op-key" for _, k, _ in sent)
    assert b'"deferred"' in sent[0][2]
    m, sent = monitor([paused])  # refused at once (not after a time-out): the pause was not this request's
    ok, msg = asyncio.run(m.control("pause_now", "op-key"))
    assert not ok and msg.startswith("pause_now: refused by the queue:") and "Current state: 'paused'" in msg
    m, sent = monitor([timeout, {"success": False, "msg": "RE Manager is not paused: current state is 'idle'"}])
    ok, msg = asyncio.run(m.control("resume", "op-key"))
    assert not ok and "not paused" in msg and len(sent) == 2
    m, sent = monitor([timeout])  # abort is not resent: its time-out is said
    ok, msg = asyncio.run(m.control("abort", "op-key"))
    assert not ok and "Timeout occurred" in msg and len(sent) == 1
    # the HTTP server's 408 (the manager busy past its 2 s), then a manager that has left 'paused': resumed
    late = httpx.Response(408, json={"detail": "Request timeout: 0MQ communication with RE Manager"})
    m, sent = monitor([late, {"success": False, "msg": "RE Manager is not paused: current state is 'executing_queue'"}])
    assert asyncio.run(m.control("resume", "op-key")) == (True, "resume: done") and len(sent) == 2
    m, sent = monitor([late])
    ok, msg = asyncio.run(m.control("add", "op-key", {"item": {}}))
    assert not ok and "HTTP 408" in msg and len(sent) == 1
