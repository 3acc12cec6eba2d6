"""Document bus: document-to-map latency in a remote consumer, and the RunEngine's cost of publishing.

Side by side in one run:

1. **RunEngine per-point cost, publishing off vs on.** The same in-process
   ``sxdm_map`` (simulated beamline, HDF5 detector files, no dead time) is run
   alternately without and with a :class:`braggscope.app.bus.DocumentPublisher`
   subscribed, ``--repeats`` times each; the per-point cost is the median
   interval between consecutive primary events (wall) and the process's CPU
   time per point (RunEngine and publishing thread together; less sensitive
   to other load on the machine). The CPU time of the publisher's two parts is
   also read directly (its callback in the RunEngine's thread, its publishing
   thread), which other runs on the machine do not disturb. Goal: on <= 1.05 x off.
2. **Latency at 200 frames/s.** ``braggscope live`` runs as a separate process
   (the remote consumer) on the same broker and maps two runs, published by a
   :class:`~braggscope.app.bus.DocumentPublisher`:

   * ``RunEngine``: the in-process ``sxdm_map`` with the detector paced at
     ``1 / --rate`` (its acquire time). On 2 shared cores the RunEngine itself
     does not reach 200 points/s (about 10 ms of CPU per point), so this run
     shows the latency at the rate the RunEngine reaches;
   * ``replay``: a run recorded beforehand (``--replay-points``, same devices)
     re-emitted at exactly ``--rate`` frames/s with new uids: frame ``k`` is
     written to a new SWMR HDF5 file just before event ``k`` leaves (as the
     detector writes before the RunEngine reads), and the event's ``time`` is
     the moment it leaves. This is the 200 frames/s document stream.

   * ``fly`` (``--fly``): an ``sxdm_fly`` map over Channel Access against the
     caproto simulator in real time, dwell ``1 / --rate`` (5 ms: 200 frames/s
     within each line), ``--fly-shape`` points (x, y, angles). Its frames and
     captured positions reach the bus as StreamResource/StreamDatum documents,
     one datum per line and field, when the line is complete.

   The consumer reports the time from a frame's document to the moment the
   frame is in its maps (median, 99th percentile, stored in its maps file with
   the frames mapped: ``dropped`` = frames published - frames mapped). For a
   frame of an event (``RunEngine``, ``replay``) the document's time is the
   event's ``time``; for a frame of a stream datum (``fly``) it is the wall
   time at which the RunEngine handed the line's image stream datum to the
   publisher (``DocumentPublisher.__call__``), which travels with the
   document on the bus. The end is the consumer's wall time after the reduction
   that put the frame in the maps (one clock: both processes run here). A fly
   frame also waits in its detector file for the end of its line (up to
   ``nx`` x dwell) before its stream datum exists; that wait is not in the
   figure. Goals: median <= 100 ms, p99 <= 1 s.

Usage::

    python benchmarks/bench_bus.py [--url nats://127.0.0.1:4222] [--points 2000] [--replay-points 2000]
                                   [--size 128] [--rate 200] [--repeats 3] [--only overhead|latency]
                                   [--fly] [--fly-shape 40 20 2] [--profile consumer.prof]

Small: ``--points 400 --replay-points 2000 --size 32 --repeats 2``. The stream used is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import h5py
import numpy as np

IMAGE = "mpx1x4_image"  # the in-process Maxipix's image field


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

    worker_cpu = 0.0
    for r in range(repeats):  # off, on, on, off, off, on ...: no order bias
        for publishing in ((False, True) if r % 2 == 0 else (True, False)):
            token = RE.subscribe(pub) if publishing else None
            w0 = pub.stats["worker_cpu_s"]
            measured(*((on, cpu_on) if publishing else (off, cpu_off)))
            if token is not None:
                RE.unsubscribe(token)
                pub.wait(60)
                worker_cpu += pub.stats["worker_cpu_s"] - w0  # the publishing thread, this run
    stats = dict(pub.stats, worker_cpu_runs=worker_cpu)
    pub.close()
    return off, on, cpu_off, cpu_on, stats


def latency(url, stream, subject, tmp, points, replay_points, size, rate, profile=None, fly_shape=None):
    """The consumer's latency for a RunEngine-driven run paced at ``rate``, a replay at ``rate`` and, with
    ``fly_shape`` ``(nx, ny, n_eta)``, a fly map at a dwell of ``1 / rate``.

    Returns ``{label: (maps attrs, achieved frames/s, frames emitted, seconds)}`` and the publisher's
    deepest queue.
    """
    from braggscope.analysis.sxdm.files import load_maps
    from braggscope.app.bus import DocumentPublisher
    from braggscope.app.bus.consumer import map_path

    rig = FlyRig(tmp, size) if fly_shape else None  # first: the CA environment is set before any client
    out = Path(tmp) / "live"
    prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
    cmd = [sys.executable, *prof, "-m", "braggscope", "live", "--url", url, "--stream", stream, "--subject", subject,
           "--durable", "bench", "--out", str(out), "--runs", str(4 if fly_shape else 3)]
    consumer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1"))
    lines = []
    threading.Thread(target=lambda: [lines.append(line.rstrip()) for line in consumer.stdout], daemon=True).start()
    results, starts = {}, {}
    try:
        _wait_for(lines, consumer, "subscribed", 60)
        docs, frames_path = record(tmp, replay_points, size)  # the replay's source, recorded before any timing
        RE, plan, det = make_run(tmp, size)
        timer = PointTimer()
        RE.subscribe(timer)
        pub = DocumentPublisher(url, stream=stream, subject=subject, spill_dir=Path(tmp) / "spill")
        RE.subscribe(pub)
        RE.subscribe(lambda name, doc: starts.setdefault("last", doc) if name == "start" else None)
        RE(plan(min(points, 100)))  # warm-up run (the consumer's first run too)
        _wait_for(lines, consumer, "maps in", 120)
        det.acquire_time.put(1.0 / rate)  # pace: the in-process detector waits out its acquire time
        starts.clear()
        t0 = time.perf_counter()
        RE(plan(points))
        results["RunEngine"] = (starts["last"], 1.0 / timer.per_point(), len(timer.times), time.perf_counter() - t0)
        pub.wait(120)
        _wait_for(lines, consumer, "maps in", 300, count=2)
        replay = Replay(docs, frames_path, tmp)
        n, wall = replay.run(pub, rate)
        results["replay"] = (replay.docs[0][1], n / wall, n, wall)
        depth = pub.stats["max_depth"]
        if rig is not None:
            pub.wait(120)
            _wait_for(lines, consumer, "maps in", 300, count=3)
            results["fly"] = rig.run(pub, fly_shape, 1.0 / rate)
            depth = max(depth, pub.stats["max_depth"])
        pub.wait(60)
        pub.close()
        consumer.wait(300)
    finally:
        if consumer.poll() is None:  # never leave the consumer behind
            consumer.kill()
            consumer.wait(10)
        if rig is not None:
            rig.close()
    return {label: (load_maps(map_path(out, start)).attrs, achieved, n, wall)
            for label, (start, achieved, n, wall) in results.items()}, depth


class FlyRig:
    """The caproto simulator (motors, Maxipix, fly hardware; ``size`` x ``size`` frames, real time) on
    loopback, its devices over Channel Access, a fly scanner and a RunEngine with the baseline."""

    def __init__(self, tmp, size):
        from bluesky import RunEngine
        from bluesky import plan_stubs as bps

        from braggscope.app.beamline.runengine import install_baseline
        from braggscope.app.beamline.simulator import scratch_config, start_simulator
        from braggscope.devices.factory import make_devices
        from braggscope.devices.fly import make_flyer
        from braggscope.simulators.beamline import SimulatedBeamline

        root = Path(tmp) / "fly"
        cfg = scratch_config(root, frame_size=size)
        self.handle = start_simulator(cfg, state_file=root / "sim.json", set_env=True, exit_with_parent=True)
        self.devices = {}
        try:
            self.devices = d = make_devices(cfg, connect_timeout=60.0)
            self.flyer = make_flyer(d, cfg)
            self.RE = RunEngine(call_returns_result=True)
            install_baseline(self.RE, d)
            self.setup = SimulatedBeamline.from_config(cfg).bragg_setup()
            self.RE(bps.mv(d["delta"], self.setup["delta"], d["nu"], 0.0, d["phi"], 0.0))
        except BaseException:
            self.close()
            raise

    def run(self, pub, shape, dwell_s):
        """One ``sxdm_fly`` map published through ``pub``; (start document, frames/s over the run, frames
        published, seconds)."""
        from braggscope.plans.fly import sxdm_fly

        nx, ny, n_eta = shape
        d, setup = self.devices, self.setup
        (cx, cy), half = setup["center_um"], float(setup["extent_um"])
        etas = list(np.linspace(setup["eta_start"], setup["eta_stop"], n_eta))
        keys, seen = {}, {"frames": 0}

        def count(name, doc):  # frames published: the image stream datums' sequence numbers
            if name == "start":
                seen["start"] = doc
            elif name == "stream_resource":
                keys[doc["uid"]] = doc["data_key"]
            elif name == "stream_datum" and keys.get(doc["stream_resource"]) == self.flyer.image_key:
                seen["frames"] += doc["seq_nums"]["stop"] - doc["seq_nums"]["start"]

        tokens = [self.RE.subscribe(count), self.RE.subscribe(pub)]
        try:
            t0 = time.perf_counter()
            result = self.RE(sxdm_fly([self.flyer], d["pix"], (cx - half, cx + half, nx), d["piy"],
                                      (cy - half, cy + half, ny), d["eta"], etas, dwell_s=dwell_s, snake=True))
            wall = time.perf_counter() - t0
        finally:
            for token in tokens:
                self.RE.unsubscribe(token)
        if result.exit_status != "success":
            raise RuntimeError(f"the fly map ended {result.exit_status}")
        return seen["start"], seen["frames"] / wall, seen["frames"], wall

    def close(self):
        from braggscope.app.beamline.simulator import stop_simulator
        from braggscope.devices.ca_client import release_devices

        try:
            release_devices(self.devices)
        finally:
            stop_simulator(self.handle)


def _wait_for(lines, consumer, text, timeout, count=1):
    deadline = time.monotonic() + timeout
    while sum(text in line for line in lines) < count:
        if time.monotonic() > deadline or consumer.poll() is not None:
            raise RuntimeError(f"braggscope live: no {text!r} line:\n" + "\n".join(lines))
        time.sleep(0.05)


def record(tmp, points, size):
    """The documents of one in-process ``sxdm_map`` (no pacing) and its detector file."""
    RE, plan, det = make_run(tmp, size)
    docs = []
    RE(plan(points), lambda name, doc: docs.append((name, copy.deepcopy(doc))))
    return docs, det.last_path


class Replay:
    """Re-emit a recorded run at a fixed frame rate, its frames written to a new HDF5 file as it goes.

    Every uid is new (run, descriptors, resource, datum ids, events), the detector
    file is a new SWMR file that receives frame ``k`` just before event ``k`` is
    emitted (as the detector writes it before the RunEngine reads it), and an
    event's ``time`` is the moment it is emitted. The documents between two
    events go out at once; event ``k`` leaves at ``t0 + k / rate``.
    """

    def __init__(self, docs, frames_path, out_dir):
        self.out = Path(out_dir) / f"replay_{uuid.uuid4().hex[:8]}.h5"
        with h5py.File(frames_path, "r") as f:
            self.frames = f["/entry/data/data"][()]
        new = {}
        for name, doc in docs:
            if name in ("start", "descriptor", "resource", "event", "stop"):
                new[doc["uid"]] = str(uuid.uuid4())
        self.docs = [(name, self._remap(name, doc, new)) for name, doc in docs]
        self.start_uid = self.docs[0][1]["uid"]

    def _remap(self, name, doc, new):
        doc = copy.deepcopy(doc)
        for key in ("uid", "run_start", "descriptor", "resource"):
            if isinstance(doc.get(key), str) and doc[key] in new:
                doc[key] = new[doc[key]]
        if name == "resource":
            doc["root"], doc["resource_path"] = "/", str(self.out).lstrip("/")
        elif name == "datum":
            res, _, n = doc["datum_id"].rpartition("/")
            doc["datum_id"] = f"{new[res]}/{n}"
        elif name == "event":
            for key, value in doc["data"].items():
                if isinstance(value, str) and value.rpartition("/")[0] in new:
                    res, _, n = value.rpartition("/")
                    doc["data"][key] = f"{new[res]}/{n}"
        return doc

    def run(self, callback, rate):
        """Emit the run through ``callback`` at ``rate`` frames/s; returns (frames, seconds)."""
        period, k = 1.0 / float(rate), 0
        with h5py.File(self.out, "w", libver="latest") as f:
            data = f.create_dataset("/entry/data/data", shape=(0,) + self.frames.shape[1:],
                                    maxshape=(None,) + self.frames.shape[1:], chunks=(1,) + self.frames.shape[1:],
                                    dtype=self.frames.dtype)
            f.swmr_mode = True
            t0 = time.perf_counter()
            for name, doc in self.docs:
                if name == "event" and IMAGE in doc["data"]:
                    delay = t0 + k * period - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    data.resize(k + 1, axis=0)
                    data[k] = self.frames[k]
                    data.flush()
                    k += 1
                if name in ("event", "stop"):
                    doc = dict(doc, time=time.time())
                callback(name, doc)
            return k, time.perf_counter() - t0


def delete_stream(url, stream):
    import nats

    async def run():
        nc = await nats.connect(url)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(run())


def print_overhead(a, off, on, cpu_off, cpu_on, stats):
    m_off, m_on = float(np.median(off)), float(np.median(on))
    c_off, c_on = float(np.median(cpu_off)), float(np.median(cpu_on))
    print(f"RunEngine per point, {a.points} points, {a.size}x{a.size} frames, {a.repeats} interleaved runs each "
          "(wall: median interval between events; CPU: process CPU time / points):")
    print(f"  publishing off {1e3 * m_off:.3f} ms wall ({', '.join(f'{1e3 * x:.3f}' for x in off)}), "
          f"{1e3 * c_off:.3f} ms CPU ({', '.join(f'{1e3 * x:.3f}' for x in cpu_off)})")
    print(f"  publishing on  {1e3 * m_on:.3f} ms wall ({', '.join(f'{1e3 * x:.3f}' for x in on)}), "
          f"{1e3 * c_on:.3f} ms CPU ({', '.join(f'{1e3 * x:.3f}' for x in cpu_on)})")
    print(f"  overhead {100 * (m_on / m_off - 1):+.1f} % wall, {100 * (c_on / c_off - 1):+.1f} % CPU (goal <= 5 %); "
          f"publisher: {1e6 * stats['call_s_total'] / max(stats['documents'], 1):.1f} us wall, "
          f"{1e6 * stats['call_cpu_s_total'] / max(stats['documents'], 1):.1f} us CPU per document in the RunEngine "
          f"thread, {stats['documents']} documents in {stats['messages']} messages, max queue {stats['max_depth']}")
    per_point = stats["call_cpu_s_total"] / max(len(on) * a.points, 1)
    print(f"  the callback's CPU per point: {1e3 * per_point:.3f} ms = {100 * per_point / c_off:.1f} % of the CPU per "
          "point without publishing (the direct cost; the publishing thread's share is in the CPU figures above)")
    worker = stats["worker_cpu_runs"] / max(len(on) * a.points, 1)
    print(f"  the publishing thread's CPU per point: {1e3 * worker:.3f} ms = {100 * worker / c_off:.1f} % "
          f"({1e3 * stats['worker_cpu_runs'] / max(stats['messages'], 1):.3f} ms per message); callback + thread "
          f"{100 * (per_point + worker) / c_off:.1f} % of the CPU per point without publishing")


def print_latency(a, runs):
    print(f"Remote consumer (braggscope live, a separate process on the same broker), {a.size}x{a.size} frames, "
          f"{a.rate:.0f} frames/s asked; latency = a frame's document (event: its time; fly: its line's stream "
          "datum handed to the publisher) to the frame in the maps:")
    for label, (attrs, achieved, n, wall) in runs.items():
        dropped = n - int(attrs.get("n_frames", -1))
        what = (f"{n} frames ({a.fly_shape[0]} per line at {a.rate:.0f} frames/s, {achieved:.0f} frames/s over "
                f"the run with the line overheads)" if label == "fly" else f"{n} frames at {achieved:.0f} frames/s")
        print(f"  {label:9s} {what} ({wall:.1f} s): latency median "
              f"{1e3 * attrs['latency_median_s']:.1f} ms (goal <= 100), p99 {1e3 * attrs['latency_p99_s']:.1f} ms "
              f"(goal <= 1000), max {1e3 * attrs['latency_max_s']:.1f} ms, {int(attrs.get('n_latencies', -1))} "
              f"frames timed; dropped {dropped}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="nats://127.0.0.1:4222")
    p.add_argument("--points", type=int, default=2000, help="points per measured run")
    p.add_argument("--size", type=int, default=128, help="detector rows = cols")
    p.add_argument("--rate", type=float, default=200.0, help="frames/s of the latency runs")
    p.add_argument("--replay-points", type=int, default=2000, help="points of the replayed run")
    p.add_argument("--repeats", type=int, default=3, help="off/on pairs of the overhead runs")
    p.add_argument("--profile", help="write the consumer's cProfile statistics (main thread) to this file")
    p.add_argument("--only", choices=("overhead", "latency"), help="run one of the two parts")
    p.add_argument("--fly", action="store_true",
                   help="add a fly map over Channel Access (caproto simulator) to the latency runs")
    p.add_argument("--fly-shape", type=int, nargs=3, default=(40, 20, 2), metavar=("NX", "NY", "NETA"),
                   help="points of the fly map: per line, lines per angle, angles")
    a = p.parse_args(argv)
    if a.fly and (a.fly_shape[0] < 2 or a.fly_shape[1] < 1 or a.fly_shape[2] < 1):
        p.error("--fly-shape: NX >= 2, NY >= 1, NETA >= 1")
    stream = f"BENCH_{uuid.uuid4().hex[:8]}"
    subject = f"bench.{stream}.documents"
    try:
        if a.only != "latency":
            with tempfile.TemporaryDirectory() as tmp:
                print_overhead(a, *overhead(a.url, stream, subject, tmp, a.points, a.size, a.repeats))
        if a.only != "overhead":
            with tempfile.TemporaryDirectory() as tmp:
                runs, depth = latency(a.url, stream, subject, tmp, a.points, a.replay_points, a.size, a.rate,
                                      a.profile, tuple(a.fly_shape) if a.fly else None)
            print_latency(a, runs)
            print(f"  publisher's deepest queue {depth} documents")
    finally:
        delete_stream(a.url, stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
