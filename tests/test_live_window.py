"""The live SXDM map window on a real (virtual) display (issue 10, item 2).

A child process runs under ``Xvfb`` with matplotlib's TkAgg backend, as
``braggscope shell`` does where a display exists: ``show_live_maps`` opens
the window and the RunEngine carries ``GuiDuringTask`` (installed by
``install_live_figures``). On a small in-process map it checks, without
screenshots, through the backend's window manager and the plot's counters:

* the window exists and is mapped on the display;
* it draws a partly filled map *while the run is open* (a callback in the
  RunEngine's thread waits for it mid-map: with bluesky's default
  during-task the Tk window froze until the scan returned, and this wait
  timed out);
* the RunEngine is not blocked by the drawing: events are emitted while a
  drawing is in progress on the GUI thread;
* the finished map is drawn whole;
* closed by the user during a second run, the window stops drawing, the run
  ends ``success`` with every point, and the process exits cleanly (nothing
  on stderr).

Skipped, saying why, where ``Xvfb`` or tkinter is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MAP = dict(nx=6, ny=4, n_eta=3)


@pytest.fixture(scope="module")
def display():
    """A virtual X display (``Xvfb``) chosen by the server itself (``-displayfd``)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb): no display to open the live window on")
    try:
        import tkinter  # noqa: F401
    except ImportError:
        pytest.skip("tkinter is not installed: matplotlib has no GUI toolkit for a window here")
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write)
    try:
        with os.fdopen(read) as f:
            number = f.readline().strip()
        if not number:
            pytest.skip(f"Xvfb did not start: {server.stderr.read().decode()[-500:]}")
        yield f":{number}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


@pytest.mark.slow
def test_live_map_window_draws_as_the_map_fills_and_closes_cleanly(display, tmp_path):
    env = {**os.environ, "DISPLAY": display, "MPLBACKEND": "TkAgg"}
    env.pop("WAYLAND_DISPLAY", None)
    out = tmp_path / "window.json"
    proc = subprocess.run([sys.executable, "-m", "tests.test_live_window", str(tmp_path), str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    total = MAP["nx"] * MAP["ny"] * MAP["n_eta"]
    assert r["backend"].lower() == "tkagg" and r["during_task"] == "GuiDuringTask"
    assert r["window_exists"] and r["window_mapped"], r
    # drawn mid-map, while the run was open, with part of the map filled
    assert r["mid_map"] is not None, "the window did not draw while the run was open"
    assert 0 < r["mid_map"]["frames_drawn"] < total, r["mid_map"]
    assert r["pumps"] > 0
    # the RunEngine went on while the GUI thread drew
    assert r["events_during_draws"] > 0, r["timeline"]
    # the finished map, whole
    assert r["first_run"]["exit_status"] == "success" and r["first_run"]["events"] == total
    assert r["final_frames_drawn"] == total
    # closed by the user during the second run: no more drawing, the run completes, no window left
    assert r["second_run"]["exit_status"] == "success" and r["second_run"]["events"] == total
    assert r["draws_after_close"] == 0 and r["figures_after_close"] == [], r
    assert r["timer_errors"] == [], r["timer_errors"]
    assert proc.stderr.strip() == "", proc.stderr[-3000:]


def test_without_a_gui_backend_the_window_is_declined_in_one_line():
    """Headless (Agg): no window, one printed line pointing at the maps file; the RunEngine keeps its waiting."""
    import matplotlib
    from bluesky import RunEngine

    from braggscope.app.session.live_figures import GuiDuringTask, keep_windows_alive, show_live_maps

    assert matplotlib.get_backend().lower() == "agg"
    import matplotlib.pyplot as plt

    printed = []
    plot = show_live_maps(type("Maps", (), {"maps": lambda self: None, "active": False})(), out=printed.append)
    plt.close(plot.figure)
    assert len(printed) == 1 and "no window" in printed[0] and "maps file" in printed[0]
    RE = RunEngine(call_returns_result=True)
    task = keep_windows_alive(RE)
    assert isinstance(RE._during_task, GuiDuringTask) and keep_windows_alive(RE) is task
    event = threading.Event()
    threading.Timer(0.2, event.set).start()
    t0 = time.monotonic()
    task.block(event)  # Agg: the fallback waits on the event, no window is pumped
    assert event.is_set() and task.n_pumps == 0 and time.monotonic() - t0 < 5


# -- the child, under Xvfb ---------------------------------------------------------------------
def _child(work: Path) -> dict:
    import matplotlib
    import matplotlib.pyplot as plt
    from bluesky import RunEngine
    from matplotlib._pylab_helpers import Gcf

    from braggscope.analysis.live.plot import LiveMapPlot
    from braggscope.app.beamline.runengine import install_baseline, subscribe_live_maps
    from braggscope.app.commands import make_commands
    from braggscope.app.session.live_figures import install_live_figures, show_live_maps
    from braggscope.core.config import load_config
    from braggscope.plans import sxdm_map
    from braggscope.simulators.beamline import SimulatedBeamline
    from braggscope.simulators.inprocess import make_inprocess_devices

    draws, errors = [], []  # (start, end, frames in the maps drawn) of each drawing of the window (GUI thread)
    update = LiveMapPlot.update

    def recorded_update(self, force=False):
        if threading.current_thread() is not threading.main_thread():  # the maps file's plot, not the window
            return update(self, force)
        start = time.monotonic()
        try:
            drawn = update(self, force)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            errors.append(f"{type(exc).__name__}: {exc}")
            raise
        if drawn:
            draws.append((start, time.monotonic(), self.source.n_frames))  # no frame arrives while the RE waits below
        return drawn

    LiveMapPlot.update = recorded_update
    cfg = load_config()
    cfg.set("storage.data_dir", str(work / "data"))
    sim = SimulatedBeamline("nmc622", shape=(64, 64), cch=(32.0, 32.0), distance_m=cfg["detector.distance_m"],
                            energy_kev=cfg["energy.energy_kev"], seed=5)
    d = make_inprocess_devices(sim, work / "frames", limits=cfg["limits"])
    # 20 ms exposures (the trigger sleeps): the map lasts about 2 s, a dozen of the window's 0.2 s draws
    # (at 4 ms a point it lasted 0.3 s and met three draws, one of them slow: no event fell in one by chance)
    d["mpx1x4"].acquire_time.put(0.02)
    RE = RunEngine(call_returns_result=True)
    install_baseline(RE, d)
    commands = make_commands(RE, d, out=lambda line: None)
    bragg = sim.bragg_setup()
    commands.mv("delta", bragg["delta"], "eta", bragg["eta"])
    live, dispatcher, _ = subscribe_live_maps(RE)
    install_live_figures(RE, cfg, live, dispatcher, scan_file=False, out=lambda line: None)  # as the shell does
    plot = show_live_maps(live, min_interval_s=0.2)
    window = plot.figure.canvas.manager.window
    plt.pause(0.5)  # the window is shown and mapped
    res = {"backend": matplotlib.get_backend(), "during_task": type(RE._during_task).__name__,
           "window_exists": bool(window.winfo_exists()), "window_mapped": bool(window.winfo_ismapped())}
    cx, cy = bragg["center_um"]
    etas = list(np.linspace(bragg["eta"] - 0.15, bragg["eta"] + 0.15, MAP["n_eta"]))

    def a_map():
        return sxdm_map([d["mpx1x4"]], d["pix"], (cx - 0.5, cx + 0.5, MAP["nx"]), d["piy"],
                        (cy - 0.4, cy + 0.4, MAP["ny"]), d["eta"], etas)

    events, stops, primary = [], [], set()

    def record(name, doc):  # times of the map's (primary) events, and the stop documents
        if name == "descriptor" and doc.get("name") == "primary":
            primary.add(doc["uid"])
        elif name == "event" and doc["descriptor"] in primary:
            events.append(time.monotonic())
        elif name == "stop":
            stops.append(doc)

    RE.subscribe(record)
    mid = {"value": None}

    def wait_for_a_partial_drawing(name, doc):  # RunEngine thread, mid first angle: the GUI must draw meanwhile
        n = len(events)
        if name == "event" and n == MAP["nx"] * MAP["ny"] // 2 and mid["value"] is None:
            dispatcher.wait(30)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and mid["value"] is None:
                if any(frames == n for _, _, frames in draws):
                    mid["value"] = {"frames_drawn": n, "frames_total": MAP["nx"] * MAP["ny"] * MAP["n_eta"]}
                time.sleep(0.05)

    token = RE.subscribe(wait_for_a_partial_drawing)
    RE(a_map())
    RE.unsubscribe(token)
    dispatcher.wait(60)
    plt.pause(1.0)  # the timer draws the finished map
    res["mid_map"] = mid["value"]
    res["pumps"] = RE._during_task.n_pumps
    res["first_run"] = {"exit_status": stops[-1]["exit_status"], "events": stops[-1]["num_events"].get("primary")}
    res["final_frames_drawn"] = draws[-1][2] if draws else 0
    res["events_during_draws"] = sum(any(s <= t <= e for s, e, _ in draws) for t in events)
    t0 = events[0] if events else 0.0
    res["timeline"] = {"draws": [(round(s - t0, 3), round(e - t0, 3), n) for s, e, n in draws],
                       "events": [round(t - t0, 3) for t in events]}
    # the user closes the window during a second run (from the GUI thread, as a click would)
    closed = threading.Event()
    plot.figure.canvas.mpl_connect("close_event", lambda event: closed.set())

    def close_when_asked():
        if asked.is_set():
            plt.close(plot.figure)
        elif not closed.is_set():
            window.after(50, close_when_asked)

    asked = threading.Event()
    window.after(50, close_when_asked)

    def ask_to_close(name, doc):
        if name == "event" and not asked.is_set():
            asked.set()
            closed.wait(60)

    token = RE.subscribe(ask_to_close)
    events.clear()
    RE(a_map())
    RE.unsubscribe(token)
    n_draws = len(draws)
    dispatcher.wait(60)
    time.sleep(0.5)
    res["draws_after_close"] = len(draws) - n_draws
    res["figures_after_close"] = [m.num for m in Gcf.get_all_fig_managers()]
    res["second_run"] = {"exit_status": stops[-1]["exit_status"], "events": stops[-1]["num_events"].get("primary")}
    res["timer_errors"] = errors
    return res


if __name__ == "__main__":
    work_dir, out_file = sys.argv[1:3]
    result = _child(Path(work_dir))
    Path(out_file).write_text(json.dumps(result, default=str))
