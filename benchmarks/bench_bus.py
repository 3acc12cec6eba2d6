"""Document bus: document-to-map latency in a remote consumer, and the RunEngine's cost of publishing.

Side by side in one run:

1. **RunEngine per-point cost, publishing off vs on.** The same in-process
   ``sxdm_map`` (simulated beamline, HDF5 detector files, no dead time) is run
   alternately without and with a :class:`braggscope.app.bus.DocumentPublisher`
   subscribed, ``--repeats`` times each; the per-point cost is the median
   interval between consecutive primary events (wall) and the process's CPU
   time per point (RunEngine and publishing thread together; less sensitive
   to other load on the machine). Goal: on <= 1.05 x off.
2. **Latency at 200 frames/s.** ``braggscope live`` runs as a separate process
   (the remote consumer) on the same broker; a run paced at ``--rate`` frames/s
   (the detector's acquire time) is published, and the consumer reports, per
   event, the time from the event document's creation to the moment its frame
   is in the maps (median, 99th percentile; stored in its maps file). Goals:
   median <= 100 ms, p99 <= 1 s.

Usage::

    python benchmarks/bench_bus.py [--url nats://127.0.0.1:4222] [--points 2000] [--size 128]
                                   [--rate 200] [--repeats 3]

Small: ``--points 400 --size 64 --repeats 2``. The stream used is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np


def make_run(tmp, size):
    """In-process devices and a RunEngine parked on the reflection; returns (RE, plan factory)."""
    import bluesky.plan_stubs as bps
    from bluesky import RunEngine

    from braggscope.core.config import load_config
    from braggscope.plans import sxdm_map
    from braggscope.simulators.beamline import SimulatedBeamline
    from braggscope.simulators.inprocess import make_inprocess_devices

    cfg = load_config()
    cfg.set("detector.shape", [size, size])
    cfg.set("detector.cch", [size / 2.0, size / 2.0])
    sim = SimulatedBeamline.from_config(cfg, sample="nmc622", seed=0)
    devs = make_inprocess_devices(sim, Path(tmp) / "det", limits=cfg["limits"])
    setup = sim.bragg_setup()
    RE = RunEngine(call_returns_result=True)
    RE(bps.mv(devs["delta"], setup["delta"], devs["nu"], 0.0, devs["phi"], 0.0))
    beam = dict(energy_kev=cfg["energy.energy_kev"], distance_m=cfg["detector.distance_m"],
                pixel_m=cfg["detector.pixel_m"], cch=cfg["detector.cch"], detector_shape=cfg["detector.shape"],
                delta=setup["delta"], nu=0.0, phi=0.0)
    (cx, cy), e = setup["center_um"], setup["extent_um"]

    def plan(points):
        nx = max(2, int(round(np.sqrt(points / 2))))
        ny = max(2, points // (2 * nx))
        etas = [setup["eta"] - 0.03, setup["eta"] + 0.03]
        return sxdm_map([devs["mpx1x4"]], devs["pix"], (cx - e, cx + e, nx), devs["piy"], (cy - e, cy + e, ny),
                        devs["eta"], etas, md=beam)

    return RE, plan, devs["mpx1x4"]


class PointTimer:
    """Intervals between consecutive primary events of a run (s)."""

    def __init__(self):
        self.times, self._primary = [], set()

    def __call__(self, name, doc):
        if name == "start":
            self.times, self._primary = [], set()
        elif name == "descriptor" and doc.get("name") == "primary":
            self._primary.add(doc["uid"])
        elif name == "event" and doc["descriptor"] in self._primary:
            self.times.append(time.perf_counter())

    def per_point(self):
        return float(np.median(np.diff(self.times)))


def overhead(url, stream, subject, tmp, points, size, repeats):
    from braggscope.app.bus import DocumentPublisher

    RE, plan, _ = make_run(tmp, size)
    timer = PointTimer()
    RE.subscribe(timer)
    RE(plan(min(points, 100)))  # warm-up: imports, first HDF5 file
    pub = DocumentPublisher(url, stream=stream, subject=subject, spill_dir=Path(tmp) / "spill")
    off, on, cpu_off, cpu_on = [], [], [], []

    def measured(wall, cpu):
        c0 = time.process_time()  # CPU time of the whole process (RunEngine + publishing thread)
        RE(plan(points))
        cpu.append((time.process_time() - c0) / len(timer.times))
        wall.append(timer.per_point())

    for _ in range(repeats):
        measured(off, cpu_off)
        token = RE.subscribe(pub)
        measured(on, cpu_on)
        RE.unsubscribe(token)
        pub.wait(60)
    stats = dict(pub.stats)
    pub.close()
    return off, on, cpu_off, cpu_on, stats


def latency(url, stream, subject, tmp, points, size, rate):
    from braggscope.app.bus import DocumentPublisher
    from braggscope.analysis.sxdm.files import load_maps

    out = Path(tmp) / "live"
    cmd = [sys.executable, "-m", "braggscope", "live", "--url", url, "--stream", stream, "--subject", subject,
           "--durable", "bench", "--out", str(out), "--runs", "2"]
    consumer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1"))
    lines = []
    threading.Thread(target=lambda: [lines.append(l.rstrip()) for l in consumer.stdout], daemon=True).start()
    deadline = time.monotonic() + 60
    while not any("subscribed" in l for l in lines):
        if time.monotonic() > deadline or consumer.poll() is not None:
            raise RuntimeError("braggscope live did not start:\n" + "\n".join(lines))
        time.sleep(0.05)
    try:
        RE, plan, det = make_run(tmp, size)
        timer = PointTimer()
        RE.subscribe(timer)
        pub = DocumentPublisher(url, stream=stream, subject=subject, spill_dir=Path(tmp) / "spill")
        RE.subscribe(pub)
        RE(plan(min(points, 100)))  # warm-up run (the consumer's first run too)
        deadline = time.monotonic() + 120
        while not any("maps in" in l for l in lines) and time.monotonic() < deadline:
            time.sleep(0.1)  # the consumer is done with the warm-up run
        det.acquire_time.put(1.0 / rate)  # pace: the in-process detector waits out its acquire time
        t0 = time.perf_counter()
        RE(plan(points))
        wall = time.perf_counter() - t0
        achieved = 1.0 / timer.per_point()
        pub.wait(60)
        pub.close()
        consumer.wait(300)
    finally:
        if consumer.poll() is None:  # never leave the consumer behind
            consumer.kill()
            consumer.wait(10)
    files = sorted(out.glob("*_live_maps.h5"), key=os.path.getmtime)
    maps = load_maps(files[-1])
    return maps.attrs, achieved, wall, len(timer.times), lines


def delete_stream(url, stream):
    import nats

    async def run():
        nc = await nats.connect(url)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(run())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="nats://127.0.0.1:4222")
    p.add_argument("--points", type=int, default=2000, help="points per measured run")
    p.add_argument("--size", type=int, default=128, help="detector rows = cols")
    p.add_argument("--rate", type=float, default=200.0, help="frames/s of the latency run")
    p.add_argument("--repeats", type=int, default=3, help="off/on pairs of the overhead runs")
    a = p.parse_args(argv)
    stream = f"BENCH_{uuid.uuid4().hex[:8]}"
    subject = f"bench.{stream}.documents"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            off, on, cpu_off, cpu_on, stats = overhead(a.url, stream, subject, tmp, a.points, a.size, a.repeats)
            m_off, m_on = float(np.median(off)), float(np.median(on))
            c_off, c_on = float(np.median(cpu_off)), float(np.median(cpu_on))
            print(f"RunEngine per point, {a.points} points, {a.size}x{a.size} frames, {a.repeats} runs each "
                  "(wall: median interval between events; CPU: process CPU time / points):")
            print(f"  publishing off {1e3 * m_off:.3f} ms wall ({', '.join(f'{1e3 * x:.3f}' for x in off)}), "
                  f"{1e3 * c_off:.3f} ms CPU")
            print(f"  publishing on  {1e3 * m_on:.3f} ms wall ({', '.join(f'{1e3 * x:.3f}' for x in on)}), "
                  f"{1e3 * c_on:.3f} ms CPU")
            print(f"  overhead {100 * (m_on / m_off - 1):+.1f} % wall, {100 * (c_on / c_off - 1):+.1f} % CPU "
                  "(goal <= 5 %); publisher: "
                  f"{1e6 * stats['call_s_total'] / max(stats['documents'], 1):.1f} us per document in the "
                  f"RunEngine, {stats['documents']} documents in {stats['messages']} messages, "
                  f"max queue {stats['max_depth']}")
        with tempfile.TemporaryDirectory() as tmp:
            attrs, achieved, wall, n, lines = latency(a.url, stream, subject, tmp, a.points, a.size, a.rate)
            print(f"Remote consumer (braggscope live, separate process), {n} frames at {achieved:.0f} frames/s "
                  f"(asked {a.rate:.0f}), run {wall:.1f} s:")
            print(f"  document-to-map latency median {1e3 * attrs['latency_median_s']:.1f} ms (goal <= 100), "
                  f"p99 {1e3 * attrs['latency_p99_s']:.1f} ms (goal <= 1000), "
                  f"max {1e3 * attrs['latency_max_s']:.1f} ms")
    finally:
        delete_stream(a.url, stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
