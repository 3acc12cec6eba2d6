"""The beamline's page in a real browser: Debian's headless Chromium driven by Playwright.

The services run as at a beamline, started by ``braggscope serve``: the caproto simulator (in real
time, 64 x 64 frames, a bright crystal), tiled, the queue server with the beamline's devices over
Channel Access, the HTTP server, the page's server, and the document bus on the machine's NATS broker.

- the page opens with a key and shows nothing without one (nor with a wrong one);
- a fly map (``sxdm_fly`` over CA) fills the page's live map line by line, and its last map equals
  the catalog's frames of the run, point by point (each frame per count of the run's monitor);
- Pause and Resume on the page pause and resume a running map (no event in the catalog while paused; the
  buttons are enabled only when the queue would take them); Pause now and Abort end it;
- with an observer's key the controls are not there, and a request sent anyway changes nothing.

Screenshots of the three views go to the test's directory, and to ``docs/img/`` when
``BRAGGSCOPE_DOC_SCREENSHOTS=1`` (how the documentation's pictures are made).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.service_helpers import live_intensities
from tests.web_helpers import chromium, nats_answers, serve_stack

pytestmark = [pytest.mark.services, pytest.mark.slow]

DOC_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
NX, NY, ETAS = 20, 8, 2


@pytest.fixture(scope="module")
def beamline(tmp_path_factory):
    """The simulated beamline's services over CA, the bus on; yields (cfg, effective, keys, setup, root)."""
    if not nats_answers():
        pytest.skip("no NATS broker on 127.0.0.1:4222: the page's live maps need the document bus")
    from braggscope.app.beamline.simulator import scratch_config
    from braggscope.simulators.beamline import SimulatedBeamline

    root = tmp_path_factory.mktemp("browser")
    cfg = scratch_config(root / "data", frame_size=64, pv_prefix="BSWEBT:")
    cfg.set("simulator.peak_rate", 2.0e7)
    setup = SimulatedBeamline.from_config(cfg).bragg_setup()
    with serve_stack(root, ["simulator", "tiled", "queue", "http", "web"], cfg=cfg,
                     **{"detector.read_path": str(root / "data" / "detector"),
                        "detector.write_path": str(root / "data" / "detector"), "queue.devices": "epics",
                        "beamline.simulated": True, "simulator.realtime": True}) as (cfg, effective, keys):
        from braggscope.app.serve.queue_client import QueueClient

        queue = QueueClient.from_config(effective, timeout=60)
        try:  # the detector arm on the reflection, as an operator would first do
            queue.execute("mv", "delta", setup["delta"], "nu", 0.0, "phi", 0.0)
            queue.wait(timeout=120)
        finally:
            queue.close()
        yield cfg, effective, keys, setup, root


@pytest.fixture(scope="module")
def browser(beamline):
    with chromium(beamline[4] / "chromium-profile") as context:
        yield context


def open_page(browser, port, key=None):
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{port}/" + (f"#key={key}" if key else ""))
    return page


def wait_js(page, expression, timeout_s=120.0):
    """Wait until the page's ``expression`` (JavaScript) is true (polled: the page's Content-Security-Policy
    forbids the string evaluation of Playwright's own wait_for_function, and it is kept)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(f"Boolean({expression})"):
        assert time.monotonic() < deadline, (f"the page never showed: {expression}; it shows " + page.evaluate(
            "JSON.stringify({status: (window.braggscope.queue || {}).status, run: window.braggscope.run, "
            "msg: document.getElementById('action-msg').textContent})"))
        time.sleep(0.1)


def screenshot(page, root, name):
    page.screenshot(path=str(root / name), full_page=True)
    if os.environ.get("BRAGGSCOPE_DOC_SCREENSHOTS") == "1":
        shutil.copy(root / name, DOC_IMG / name)


def test_the_page_opens_with_a_key_and_shows_nothing_without_one(beamline, browser):
    cfg, _, keys, _, root = beamline
    port = cfg["serve.web_port"]
    page = open_page(browser, port)
    wait_js(page, "!document.getElementById('login').hidden", 30)
    assert page.is_hidden("#main") and page.evaluate("window.braggscope.queue") is None
    screenshot(page, root, "remote_login.png")
    page.fill("#key-input", "0123456789abcdef" * 2)
    page.click("#key-form button")
    wait_js(page, "document.getElementById('login-msg').textContent.includes('refused')", 30)
    assert page.is_hidden("#main") and page.evaluate("window.braggscope.queue") is None
    page.fill("#key-input", keys["observer"])
    page.click("#key-form button")
    wait_js(page, "window.braggscope.connected && window.braggscope.queue !== null", 30)
    assert page.is_visible("#main") and page.inner_text("#role") == "observer"
    assert keys["observer"] not in page.url
    page.close()


def test_a_fly_map_fills_the_live_map_line_by_line_and_matches_the_catalog(beamline, browser):
    cfg, effective, keys, setup, root = beamline
    from braggscope import storage
    from braggscope.app.serve.queue_client import QueueClient

    page = open_page(browser, cfg["serve.web_port"], keys["queue"])
    wait_js(page, "window.braggscope.connected && window.braggscope.role === 'operator'", 60)
    (cx, cy), half = setup["center_um"], float(setup["extent_um"])
    etas = list(np.round(np.linspace(setup["eta_start"], setup["eta_stop"], ETAS), 4))
    queue = QueueClient.from_config(effective, timeout=60)
    try:
        queue.add("sxdm_fly", "pix", [cx - half, cx + half, NX], "piy", [cy - half, cy + half, NY], "eta", etas,
                  dwell_s=0.02, sample="fly")
        queue.start()
        wait_js(page, f"window.braggscope.updates.some(u => u.n_frames >= {NX * NY})", 180)
        screenshot(page, root, "remote_operator.png")
        queue.wait(timeout=300)
        result = queue.history()[-1]["result"]
    finally:
        queue.close()
    assert result["exit_status"] == "completed", result
    uid = result["run_uids"][0]
    wait_js(page, f"window.braggscope.maps && window.braggscope.maps.header.run === '{uid}' && "
                  "window.braggscope.maps.header.finished", 60)
    updates = [u for u in page.evaluate("window.braggscope.updates") if u["run"] == uid]
    filled = [u["n_frames"] for u in updates]
    total = NX * NY * ETAS
    during = [n for n in filled if 0 < n < total]
    assert filled == sorted(filled) and filled[-1] == total
    assert len(set(during)) >= 4, filled  # seen filling, not only at the end
    assert all(n % NX == 0 for n in during), filled  # a line at a time
    shown = np.array(page.evaluate("Array.from(window.braggscope.maps.arrays.intensity.values)"), float)
    run = storage.load_run(storage.open_catalog(effective), uid)
    stack = storage.sxdm_stack(run)  # (eta, y, x, rows, cols) frames and the monitor, from the catalog's run
    monitor = stack.monitor_values()
    totals = live_intensities(stack.frames)  # each frame's counts less its background
    # the live maps count each frame per monitor count, times the run's first reading (a constant)
    ratio = shown.reshape(totals.shape[1:]) / (totals / monitor).sum(axis=0)
    np.testing.assert_allclose(ratio, monitor[0, 0, 0], rtol=1e-4)
    latencies = page.evaluate("window.braggscope.latencies")
    assert sum(n for n, _ in latencies) >= total - NX  # (frames of a map message the page did not draw)
    page.close()


def test_pause_and_resume_from_the_page(beamline, browser):
    cfg, effective, keys, setup, root = beamline
    page = open_page(browser, cfg["serve.web_port"], keys["queue"])
    try:
        wait_js(page, "window.braggscope.connected && window.braggscope.plans && window.braggscope.plans.length", 60)
        (cx, cy), half = setup["center_um"], float(setup["extent_um"])
        page.select_option("#add-plan", "sxdm_map")
        page.fill("#add-args", "[]")
        # 576 points (a few tens of seconds, aborted long before its end): the map must still run after the resume
        kwargs = {"detectors": ["mpx1x4"], "x_motor": "pix", "x_range": [cx - half, cx + half, 24], "y_motor": "piy",
                  "y_range": [cy - half, cy + half, 24], "eta_motor": "eta", "etas": [float(setup["eta"])],
                  "sample": "paused"}
        page.fill("#add-kwargs", json.dumps(kwargs))
        page.click("#add-form button[type=submit]")
        wait_js(page, "document.getElementById('action-msg').textContent === 'add: done'", 30)
        page.click("button[data-action=start]")
        state = "window.braggscope.queue.status"
        wait_js(page, f"{state}.re_state === 'running' && window.braggscope.run && "
                      "window.braggscope.run.sample === 'paused' && window.braggscope.run.done >= 3", 120)
        uid = page.evaluate("window.braggscope.run.uid")
        assert page.is_disabled("button[data-action=resume]") and page.is_disabled("button[data-action=abort]")
        page.click("button[data-action=pause]")
        # the manager says 'paused' a moment after its RunEngine; only then does it take resume, stop or abort,
        # and only then does the page enable those buttons
        wait_js(page, f"{state}.re_state === 'paused' && {state}.manager_state === 'paused'", 60)
        paused_at = time.time()
        assert page.is_enabled("button[data-action=resume]") and page.is_disabled("button[data-action=pause]")
        time.sleep(3.0)
        shown = page.evaluate("window.braggscope.run.done")  # (the bus may still bring points taken before the pause)
        resumed_at = time.time()
        page.click("button[data-action=resume]")
        wait_js(page, f"{state}.re_state === 'running' && window.braggscope.run.done > {shown}", 60)
        _event_times(effective, uid, lambda run, times: (times > resumed_at).any())  # a point taken after the resume
        page.click("button[data-action=pause_now]")
        wait_js(page, f"{state}.re_state === 'paused' && {state}.manager_state === 'paused'", 60)
        page.click("button[data-action=abort]")
        wait_js(page, f"{state}.manager_state === 'idle' && window.braggscope.queue.history.length && "
                      "window.braggscope.queue.history[0].result.exit_status === 'aborted'", 60)
        wait_js(page, "window.braggscope.run.exit_status === 'abort'", 60)  # its stop document, by the bus
        # no point while paused: the run's events in the catalog, none stamped between the pause the page showed
        # and the click on Resume; the page counted no more than were taken before the pause, and all of them at the end
        times = _event_times(effective, uid, lambda run, times: run.metadata.get("stop"))
        assert not ((times > paused_at) & (times < resumed_at)).any(), (paused_at, resumed_at, times)
        assert 3 <= shown <= int((times < paused_at).sum()) and (times > resumed_at).any()
        assert page.evaluate("window.braggscope.run.done") == len(times)
        page.close()
    finally:  # a failure here leaves the next test an idle queue
        _end_any_plan(effective)


def _end_any_plan(cfg):
    """Abort whatever the queue still runs or holds paused, and wait until it is idle."""
    from braggscope.app.serve.queue_client import QueueClient

    queue = QueueClient.from_config(cfg, timeout=60)
    try:
        if queue.status(reload=True)["manager_state"] == "idle":
            return
        if queue.status(reload=True)["manager_state"] != "paused":
            queue.pause(immediate=True)
            queue.wait(timeout=60, paused=True)
        queue.abort()
        queue.wait(timeout=60)
    finally:
        queue.close()


def _event_times(cfg, uid, until, timeout_s=60.0):
    """The times of the primary events of run ``uid`` in the catalog, once ``until(run, times)`` is true."""
    from braggscope import storage

    deadline, catalog = time.monotonic() + timeout_s, storage.open_catalog(cfg)
    while True:
        run = storage.load_run(catalog, uid)
        try:
            times = np.asarray(run["primary"].base["internal"].read(["time"])["time"], float)
        except KeyError:  # no row stored yet
            times = np.zeros(0)
        if until(run, times):
            return times
        assert time.monotonic() < deadline, f"run {uid} in the catalog: never as expected ({len(times)} events)"
        time.sleep(0.5)


def test_an_observers_key_cannot_change_anything(beamline, browser):
    cfg, effective, keys, _, root = beamline
    from braggscope.app.serve.queue_client import QueueClient

    queue = QueueClient.from_config(effective, timeout=60)
    queue.clear()
    page = open_page(browser, cfg["serve.web_port"], keys["observer"])
    wait_js(page, "window.braggscope.connected && window.braggscope.queue !== null", 60)
    assert page.is_hidden("#controls") and page.inner_text("#role") == "observer"
    history = len(queue.history())
    for action, params in (("add", {"item": {"item_type": "plan", "name": "count", "args": [["mpx1x4"]]}}),
                           ("start", {}), ("pause", {}), ("abort", {}), ("clear", {})):
        answer = page.evaluate("([a, p]) => window.braggscope.control(a, p)", [action, params])
        assert not answer["ok"] and "read-only key cannot change anything" in answer["msg"], answer
    assert queue.items() == [] and len(queue.history()) == history
    assert queue.status()["manager_state"] == "idle"
    screenshot(page, root, "remote_observer.png")
    queue.close()
    page.close()
