"""The beamline's page: what it costs the acquisition, and how soon a frame's document is on the page's pixels.

The services run as ``braggscope serve`` starts them (the queue server with in-process devices, the
HTTP server with its keys, the page's server), the document bus on the machine's NATS broker; the
page is opened in Debian's headless Chromium (Playwright), with the observer key. Side by side in
one run:

1. **Acquisition per point, page closed vs open.** The same in-process ``sxdm_map`` (simulated
   beamline, HDF5 detector files, no dead time) publishing on the bus, run alternately with the
   page closed (the page's server stopped, no browser) and open (the page's server following the
   bus and reducing the maps, a browser drawing them), ``--repeats`` times each, the order
   alternating. Per point: the median interval between events (wall) and the acquisition
   process's CPU time; beside them the CPU the page's server and the browser spent per point.
   Goal: open <= 1.05 x closed.
2. **Update latency at 200 frames/s.** A run recorded beforehand is re-emitted at exactly
   ``--rate`` frames/s (``bench_bus.Replay``: new uids, frame ``k`` written to a new SWMR file just
   before event ``k`` leaves, the event's time the moment it leaves) onto the bus. For every frame,
   the page notes the time from its document's publication to the frame that shows it on the
   screen (the animation frame after the one that drew it; browser and acquisition share one clock
   here). Goal: median <= 500 ms.

Usage::

    python benchmarks/bench_web.py [--points 400] [--size 64] [--repeats 3] [--replay-points 2000] [--rate 200]

Needs Redis (127.0.0.1:6379), NATS (127.0.0.1:4222), Debian's chromium and the playwright package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_bus import PointTimer, Replay, make_run, record  # noqa: E402

from tests.web_helpers import chromium, serve_stack  # noqa: E402


def cpu_seconds(pids) -> float:
    """User + system CPU time of processes (s), from /proc."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def chromium_pids() -> list[int]:
    out = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"chromium" in f.read().split(b"\0")[0]:
                    out.append(int(pid))
        except OSError:
            pass
    return out


class Page:
    """The page's server (a service of ``serve``) and a browser page on it, opened and closed."""

    def __init__(self, cfg, key, browser):
        self.cfg, self.key, self.browser, self.page = cfg, key, browser, None

    def pids(self) -> list[int]:
        from braggscope.app.serve.services import serve_paths

        state = json.loads(serve_paths(self.cfg)["state"].read_text())
        return ([state["web"]["pid"]] if "web" in state else []) + chromium_pids()

    def open(self):
        from braggscope.app.serve import services

        services.start_services(self.cfg, ["web"], open_environment=False, echo=lambda line: None)
        self.page = self.browser.new_page()
        self.page.goto(f"http://127.0.0.1:{self.cfg['serve.web_port']}/#key={self.key}")
        self.wait("window.braggscope.connected", 60)

    def close(self):
        from braggscope.app.serve import services

        if self.page is not None:
            self.page.close()
            self.page = None
        services.stop_services(self.cfg, ["web"], echo=lambda line: None)

    def wait(self, expression, timeout_s):
        deadline = time.monotonic() + timeout_s
        while not self.page.evaluate(f"Boolean({expression})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never showed {expression}")
            time.sleep(0.1)


def overhead(cfg, tmp, page, points, size, repeats):
    """Per point with the page closed and open: {"closed"|"open": [(wall s, CPU s, page CPU s), ...]}."""
    from braggscope.app.bus import DocumentPublisher

    bus = cfg["bus"]
    RE, plan, _ = make_run(tmp, size)
    timer = PointTimer()
    RE.subscribe(timer)
    RE.subscribe(DocumentPublisher(bus["url"], stream=bus["stream"], subject=bus["subject"],
                                   spill_dir=Path(tmp) / "spill"))
    RE(plan(min(points, 100)))  # warm-up: imports, first HDF5 file
    out = {"closed": [], "open": []}
    for r in range(repeats):  # closed, open, open, closed ...: no order bias
        for opened in ((False, True) if r % 2 == 0 else (True, False)):
            if opened:
                page.open()
            pids = page.pids() if opened else []
            c0, p0 = time.process_time(), cpu_seconds(pids)
            RE(plan(points))
            n = len(timer.times)
            out["open" if opened else "closed"].append((timer.per_point(), (time.process_time() - c0) / n,
                                                        (cpu_seconds(pids) - p0) / n))
            if opened:
                page.close()
    return out


def latency(cfg, tmp, page, replay_points, size, rate):
    """The page's latencies of a replay at ``rate``: (weights, seconds, frames, achieved rate)."""
    from braggscope.app.bus import DocumentPublisher

    bus = cfg["bus"]
    docs, frames_path = record(tmp, replay_points, size)
    pub = DocumentPublisher(bus["url"], stream=bus["stream"], subject=bus["subject"], spill_dir=Path(tmp) / "spill2")
    page.open()
    try:
        replay = Replay(docs, frames_path, tmp)
        n, wall = replay.run(pub, rate)
        pub.wait(60)
        page.wait(f"window.braggscope.maps && window.braggscope.maps.header.run === '{replay.start_uid}' && "
                  "window.braggscope.maps.header.finished", 120)
        time.sleep(0.5)  # the last frame's measure is taken an animation frame after its drawing
        pairs = page.page.evaluate("window.braggscope.latencies")
    finally:
        page.close()
        pub.close()
    weights = np.array([p[0] for p in pairs], float)
    seconds = np.array([p[1] for p in pairs], float)
    return weights, seconds, n, n / wall


def weighted_percentile(values, weights, q) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, q / 100.0 * cumulative[-1])])


def report(a, runs, lat):
    closed, opened = np.array(runs["closed"]), np.array(runs["open"])
    w_c, w_o = np.median(closed[:, 0]), np.median(opened[:, 0])
    c_c, c_o = np.median(closed[:, 1]), np.median(opened[:, 1])
    print(f"Acquisition per point, {a.points} points, {a.size}x{a.size} frames, {a.repeats} interleaved runs each "
          "(wall: median interval between events; CPU: the acquisition process's CPU time / points):")
    for label, rows, w, c in (("page closed", closed, w_c, c_c), ("page open  ", opened, w_o, c_o)):
        print(f"  {label} {1e3 * w:.3f} ms wall ({', '.join(f'{1e3 * x:.3f}' for x in rows[:, 0])}), "
              f"{1e3 * c:.3f} ms CPU ({', '.join(f'{1e3 * x:.3f}' for x in rows[:, 1])})")
    print(f"  page open: {100 * (w_o / w_c - 1):+.1f} % wall, {100 * (c_o / c_c - 1):+.1f} % CPU (goal <= 5 %); "
          f"the page's server and the browser spent {1e3 * np.median(opened[:, 2]):.3f} ms of CPU per point "
          f"({', '.join(f'{1e3 * x:.3f}' for x in opened[:, 2])}) in their own processes")
    weights, seconds, n, achieved = lat
    timed = int(weights.sum())
    print(f"Update latency, replay of {n} frames at {achieved:.0f} frames/s ({a.rate:.0f} asked), {a.size}x{a.size}"
          " frames: a frame's document leaving the acquisition to the screen frame showing it on the page")
    print(f"  median {1e3 * weighted_percentile(seconds, weights, 50):.0f} ms (goal <= 500), p90 "
          f"{1e3 * weighted_percentile(seconds, weights, 90):.0f} ms, p99 "
          f"{1e3 * weighted_percentile(seconds, weights, 99):.0f} ms, max {1e3 * seconds.max():.0f} ms; "
          f"{timed} frames timed in {len(seconds)} page updates ({n - timed} not timed)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=400, help="points per measured run")
    p.add_argument("--size", type=int, default=64, help="detector rows = cols")
    p.add_argument("--repeats", type=int, default=3, help="closed/open pairs of the overhead runs")
    p.add_argument("--replay-points", type=int, default=2000, help="points of the replayed run")
    p.add_argument("--rate", type=float, default=200.0, help="frames/s of the replay")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with serve_stack(root, ["queue", "http"], **{"queue.devices": "inprocess", "simulator.realtime": False,
                                                     "storage.catalog_server": "off"}) as (cfg, _, keys):
            if not cfg["bus.url"]:
                raise SystemExit("no NATS broker on 127.0.0.1:4222: the page's maps need the bus")
            with chromium(root / "chromium") as browser:
                page = Page(cfg, keys["observer"], browser)
                runs = overhead(cfg, root, page, a.points, a.size, a.repeats)
                lat = latency(cfg, root, page, a.replay_points, a.size, a.rate)
            report(a, runs, lat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
