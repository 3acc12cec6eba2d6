"""Fly scan vs step scan of the same map over Channel Access, and the detector's sustained frame rate.

Side by side in one run (the caproto simulator in real time, on loopback, the catalog written):

1. **Detector pipeline** (``bench_sim_frames.pipeline_rates``): render + compress + write of 516 x 516
   frames in one thread as the simulated Maxipix's external-trigger writer does, beside the previous
   path (whole frame, h5py filter, a flush per frame); frames/s and CPU ms per frame (goal >= 500/s).
2. **Fly map** (``sxdm_fly``): wall time over its pure exposure (points x dwell; goal <= 1.1), the
   per-line overhead (wall less exposure, per line; goal <= 50 ms; and the median from one line's counts to
   the next's less the exposure, the run's start and end excluded), where a line's time goes (the
   flyer's ``kickoff_s``/``sweep_s``/``duration_s``, the catalog's backlog at the stop document), and the
   CPU seconds each process used meanwhile: the acquisition process (RunEngine, flyer, catalog writer
   thread, and the live maps when they run in it) also per thread, beside its wall/exposure ratio; the
   simulator; the catalog server; ``braggscope live`` when it runs the live maps.
3. **Live maps** (``--live``): ``thread`` (default), a ``LiveSXDM`` behind a ``LiveMapDispatcher`` in the
   acquisition process (as ``braggscope shell`` runs them; the RunEngine never waits for it): frames not
   yet in the maps when the stop document is emitted (goal: at most one line) and how long after the stop
   the last frame was in; ``bus``, the documents published on a NATS broker (``--bus-url``; start one:
   ``nats-server -a 127.0.0.1 -js -sd <dir>``) and the maps made by ``braggscope live`` in a process of its
   own: how long after the stop its maps were written; ``none``.
4. **Step map** (``sxdm_map``, detector AcquireTime = dwell) of the same grid, or of its first
   ``--step-rows`` rows at the first angle, extrapolated per point (said in the output): the speed-up
   of the fly map (goal >= 3).

Usage::

    python benchmarks/bench_fly.py                 # 50 x 50 points, 2 angles, 5 ms; step map on 4 rows
    python benchmarks/bench_fly.py --full          # 100 x 100 points, 3 angles, 5 ms
    python benchmarks/bench_fly.py --nx 20 --ny 10 --neta 2 --dwell 0.005 [--step-rows 0 (all)] [--no-step]
    python benchmarks/bench_fly.py --live bus --no-step     # live maps in braggscope live, over the bus
    python benchmarks/bench_fly.py --no-catalog --no-step   # the control path alone (no catalog writer)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import psutil
from bluesky import RunEngine
from bluesky import plan_stubs as bps

from braggscope import storage
from braggscope.analysis.live import LiveSXDM
from braggscope.analysis.live.dispatch import LiveMapDispatcher
from braggscope.app.beamline.runengine import install_baseline
from braggscope.app.beamline.simulator import scratch_config, start_simulator, stop_simulator
from braggscope.devices.ca_client import release_devices
from braggscope.devices.factory import make_devices
from braggscope.devices.fly import make_flyer
from braggscope.plans import sxdm_map
from braggscope.plans.fly import sxdm_fly
from braggscope.simulators.beamline import SimulatedBeamline

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts (benchmarks/ is not a package)
from bench_sim_frames import pipeline_rates


def _cpu_of(pids) -> dict:
    """CPU seconds (user + system, children included) of processes, by pid."""
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            out[pid] = float("nan")
    return out


#: Thread names of this process, grouped: ophyd's callback dispatcher threads as one.
_THREAD_GROUPS = (("bluesky-run-engine", "RunEngine loop"), ("live-map-worker", "live maps"),
                  ("braggscope-catalog-writer", "catalog writer"), ("MainThread", "main thread"),
                  ("monitor", "ophyd callbacks"), ("metadata", "ophyd callbacks"), ("get_put", "ophyd callbacks"),
                  ("util", "ophyd callbacks"), ("debug_monitor", "ophyd callbacks"))


def _thread_cpu() -> dict:
    """CPU seconds of each live thread of this process: {native id: (group, seconds)}. Threads Python does
    not know are the Channel Access library's, or a BLAS library's (named by the OS: ``python``)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for t in psutil.Process().threads():
        name = names.get(t.id)
        if name is None:
            try:
                name = "native: " + Path(f"/proc/self/task/{t.id}/comm").read_text().strip()
            except OSError:
                name = "native"
        group = next((label for prefix, label in _THREAD_GROUPS if name.startswith(prefix)), name)
        out[t.id] = (group, t.user_time + t.system_time)
    return out


def _thread_cpu_delta(before: dict, after: dict, process_s: float) -> dict:
    """CPU seconds per thread group between two :func:`_thread_cpu` snapshots, largest first; what threads
    that ended meanwhile used is the process's CPU less the rest."""
    groups: dict = {}
    for tid, (group, seconds) in after.items():
        groups[group] = groups.get(group, 0.0) + seconds - before.get(tid, (group, 0.0))[1]
    groups["threads ended during the map"] = process_s - sum(groups.values())
    return {name: round(value, 2) for name, value in sorted(groups.items(), key=lambda kv: -kv[1])
            if abs(value) >= 0.05}


def _processes(root: Path) -> dict:
    """This process, and the simulator and catalog server started for this run (their command lines
    name the run's temporary directory)."""
    found = {os.getpid(): "acquisition process"}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if str(root) in line and proc.info["pid"] != os.getpid() and " live " not in f" {line} ":
            found[proc.info["pid"]] = "simulator" if "sim" in line and "catalog" not in line else "catalog server"
    return found


class ThreadLive:
    """Live maps in this process: a ``LiveSXDM`` behind a ``LiveMapDispatcher`` (as the shell runs them)."""

    label = "live maps in the acquisition process"

    def __init__(self, nx: int):
        self.live = LiveSXDM(announce=False, batch_size=nx)
        self.dispatcher = LiveMapDispatcher(self.live, maxsize=4096)
        self.pid = None
        self.at_stop: dict = {}

    def __call__(self, name, doc):
        if name == "stop":
            self.at_stop.update(frames=self.live.n_frames, time=time.monotonic())
        self.dispatcher(name, doc)

    def wait(self) -> dict:
        """After the run: every frame reduced; the lag figures."""
        self.dispatcher.wait(120)
        done = time.monotonic()
        return {"live_frames_at_stop": self.at_stop.get("frames"), "live_frames": self.live.n_frames,
                "live_done_after_stop_s": round(done - self.at_stop.get("time", done), 2)}

    def close(self) -> None:
        self.dispatcher.close()


class BusLive:
    """Live maps in ``braggscope live``, fed by a ``DocumentPublisher`` through the broker at ``url``."""

    label = "live maps in braggscope live (bus)"

    def __init__(self, url: str, tmp: Path):
        from braggscope.app.bus import DocumentPublisher  # needs the NATS client: in this mode only

        address = urlparse(url)
        try:
            socket.create_connection((address.hostname, address.port or 4222), timeout=2).close()
        except OSError:
            raise SystemExit(f"--live bus: no NATS broker at {url}; start one (nats-server -a 127.0.0.1 -js "
                             f"-sd <dir>) or give --bus-url") from None
        self.url, self.stream = url, f"BENCHFLY_{uuid.uuid4().hex[:8]}"
        self.subject = f"bench.{self.stream}.documents"
        self.lines: list = []
        cmd = [sys.executable, "-m", "braggscope", "live", "--url", url, "--stream", self.stream, "--subject",
               self.subject, "--durable", "benchfly", "--out", str(tmp / "live"), "--runs", "1"]
        self.consumer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         env=dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1"))
        self.pid = self.consumer.pid
        threading.Thread(target=lambda: [self.lines.append(line.rstrip()) for line in self.consumer.stdout],
                         daemon=True).start()
        self.publisher = DocumentPublisher(url, stream=self.stream, subject=self.subject, spill_dir=tmp / "spill")
        self._wait_for("subscribed", 60)
        self.at_stop: dict = {}

    def __call__(self, name, doc):
        if name == "stop":
            self.at_stop["time"] = time.monotonic()
        self.publisher(name, doc)

    def _wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline or self.consumer.poll() is not None:
                raise RuntimeError(f"braggscope live: no {text!r} line:\n" + "\n".join(self.lines))
            time.sleep(0.02)

    def wait(self) -> dict:
        self.publisher.wait(120)
        self._wait_for("maps in", 300)
        done = time.monotonic()
        return {"live_done_after_stop_s": round(done - self.at_stop.get("time", done), 2)}

    def close(self) -> None:
        self.publisher.close()
        if self.consumer.poll() is None:  # never leave the consumer behind
            self.consumer.kill()
        self.consumer.wait(10)
        from bench_bus import delete_stream  # needs the NATS client: in this mode only

        delete_stream(self.url, self.stream)


class NoLive:
    label = "no live maps"
    pid = None

    def __call__(self, name, doc):
        pass

    def wait(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="100 x 100 points, 3 angles")
    parser.add_argument("--nx", type=int, default=50)
    parser.add_argument("--ny", type=int, default=50)
    parser.add_argument("--neta", type=int, default=2)
    parser.add_argument("--dwell", type=float, default=0.005, help="s per point")
    parser.add_argument("--no-step", action="store_true", help="skip the step map")
    parser.add_argument("--no-catalog", action="store_true",
                        help="no catalog writer (isolates the control path; the goals are for a written catalog)")
    parser.add_argument("--step-rows", type=int, default=4,
                        help="rows of the step map (first angle), extrapolated per point; 0: the whole map")
    parser.add_argument("--frames", type=int, default=300, help="frames for the detector rate")
    parser.add_argument("--live", choices=("thread", "bus", "none"), default="thread",
                        help="where the live maps run: a thread of this process (as the shell), braggscope live "
                             "over the bus, or nowhere")
    parser.add_argument("--no-live", action="store_const", dest="live", const="none", help="--live none")
    parser.add_argument("--bus-url", default="nats://127.0.0.1:4222", help="the broker of --live bus")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.full:
        args.nx, args.ny, args.neta = 100, 100, 3
    for name in ("nx", "ny", "neta"):
        if getattr(args, name) < (2 if name != "neta" else 1):
            parser.error(f"--{name} too small")
    if not args.dwell > 0:
        parser.error("--dwell must be > 0")
    return args


def _detector_rates(args, results) -> None:
    print(f"detector: render + compress + write of 516x516 frames ({args.frames}) ...", flush=True)
    rates = pipeline_rates(args.frames)
    results.update(detector_fps_516=round(rates["fly"][0], 1), detector_cpu_ms=round(rates["fly"][1], 2),
                   detector_baseline_fps_516=round(rates["baseline"][0], 1),
                   detector_baseline_cpu_ms=round(rates["baseline"][1], 2))
    print(f"  fly path {results['detector_fps_516']} frames/s, {results['detector_cpu_ms']} CPU ms/frame "
          f"(goal >= 500/s); previous path {results['detector_baseline_fps_516']} frames/s, "
          f"{results['detector_baseline_cpu_ms']} CPU ms/frame", flush=True)


def _fly_map(args, rig, live, results, root) -> None:
    """The fly map with the live maps subscribed; its figures into ``results``."""
    RE, d, flyer = rig["RE"], rig["d"], rig["flyer"]
    points = args.nx * args.ny * args.neta
    exposure = points * args.dwell
    results["points"], results["exposure_s"] = points, round(exposure, 3)
    reports = []  # (the flyer's count of each attempt, when it was counted)

    def counted(value, **kwargs):
        if value is not None:
            reports.append((value, time.monotonic()))

    count_token = flyer.last_line.subscribe(counted, run=False)
    token = RE.subscribe(live)
    procs = _processes(root)
    if live.pid is not None:
        procs[live.pid] = "braggscope live"
    cpu0, threads0 = _cpu_of(procs), _thread_cpu()
    print(f"fly map: {args.nx} x {args.ny} x {args.neta} points at {args.dwell * 1e3:g} ms ({live.label}) ...",
          flush=True)
    t0 = time.monotonic()
    try:
        fly = RE(sxdm_fly([flyer], d["pix"], rig["x"], d["piy"], rig["y"], d["eta"], rig["etas"],
                          dwell_s=args.dwell, snake=True))
        t_fly = time.monotonic() - t0
        results.update(live.wait())
        cpu1, threads1 = _cpu_of(procs), _thread_cpu()  # before the live maps' thread ends
    finally:
        RE.unsubscribe(token)
        flyer.last_line.unsubscribe(count_token)
    own = cpu1[os.getpid()] - cpu0[os.getpid()]
    results.update(fly_s=round(t_fly, 2), fly_over_exposure=round(t_fly / exposure, 3), fly_exit=fly.exit_status,
                   per_line_overhead_ms=round(1e3 * (t_fly - exposure) / (args.ny * args.neta), 1),
                   cpu_s={procs[p]: round(cpu1[p] - cpu0[p], 1) for p in procs},
                   acquisition_cpu_s=round(own, 2), acquisition_cpu_over_wall=round(own / t_fly, 3),
                   acquisition_thread_cpu_s=_thread_cpu_delta(threads0, threads1, own),
                   catalog_backlog_at_stop_s=round(t0 + t_fly - reports[-1][1], 2),
                   run_start_s=round(reports[0][1] - reports[0][0].duration_s - reports[0][0].kickoff_s - t0, 2))
    if results.get("live_frames_at_stop") is not None:
        results["live_lag_frames"] = points - results["live_frames_at_stop"]
    _line_figures(args, reports, results)
    _print_fly(args, results, t_fly, exposure, rig["cfg"])


def _line_figures(args, reports, results) -> None:
    """Medians over the lines but the first (it also draws the detector's background pool)."""
    steady = reports[1:] or reports
    line_s = args.nx * args.dwell
    # steady state: from one line's counts to the next's, within an angle (no eta move), less the line's
    # exposure; the run's start and end (staging, baseline, the catalog's tail) excluded
    cycles = [tb - ta for (a, ta), (b, tb) in itertools.pairwise(reports) if a.eta_index == b.eta_index
              and b.attempt == 0]

    def median_ms(key):
        return round(1e3 * float(np.median([getattr(r, key) for r, _ in steady])), 1)

    results.update(steady_line_overhead_ms=round(1e3 * (float(np.median(cycles)) - line_s), 1) if cycles else None,
                   line_exposure_ms=round(1e3 * line_s, 1), line_kickoff_ms=median_ms("kickoff_s"),
                   line_sweep_ms=median_ms("sweep_s"), line_duration_ms=median_ms("duration_s"))


def _print_fly(args, results, t_fly, exposure, cfg) -> None:
    lag = results.get("live_lag_frames")
    live = f"live maps {lag} frames behind at the stop (goal <= {args.nx}), " if lag is not None else ""
    print(f"  {t_fly:.2f} s = {t_fly / exposure:.2f} x exposure ({exposure:.2f} s) (goal <= 1.1); per-line overhead "
          f"{results['per_line_overhead_ms']} ms (goal <= 50; between lines of one angle, median: "
          f"{results['steady_line_overhead_ms']} ms); {live}all in {results.get('live_done_after_stop_s')} s after "
          f"the stop", flush=True)
    print(f"  a line (median): {results['line_exposure_ms']} ms of exposure, kickoff {results['line_kickoff_ms']} ms, "
          f"Go to stage stopped + captures written {results['line_sweep_ms']} ms (ramps "
          f"{2e3 * float(cfg.get('fly.accel_time_s', 0.005)):g} ms), Go to frames on disk and counts read "
          f"{results['line_duration_ms']} ms; catalog still writing after the last line: "
          f"{results['catalog_backlog_at_stop_s']} s; from the plan's start to the first kickoff "
          f"{results['run_start_s']} s", flush=True)
    print(f"  CPU seconds during the fly map ({t_fly:.1f} s wall, {os.cpu_count()} cores): "
          + ", ".join(f"{name} {value}" for name, value in results["cpu_s"].items()), flush=True)
    own = results["acquisition_cpu_s"]
    print(f"  acquisition process: {own:.1f} CPU s = {own / t_fly:.2f} of a core beside {t_fly / exposure:.2f} x the "
          f"exposure; by thread: " + ", ".join(f"{k} {v}" for k, v in results["acquisition_thread_cpu_s"].items()),
          flush=True)


def _step_map(args, rig, results) -> None:
    """The step map of the same grid (or its first rows), per point; the fly map's speed-up."""
    RE, d = rig["RE"], rig["d"]
    xr, yr, etas = rig["x"], rig["y"], rig["etas"]
    d["detector"].cam.acquire_time.set(args.dwell).wait(10)
    d["detector"].cam.acquire_period.set(args.dwell).wait(10)
    rows = args.ny if args.step_rows <= 0 else min(args.step_rows, args.ny)
    sub_y = yr if rows == args.ny else (yr[0], yr[0] + (yr[1] - yr[0]) * (rows - 1) / (args.ny - 1), rows)
    sub_etas = etas if rows == args.ny else etas[:1]
    step_points, points = args.nx * rows * len(sub_etas), results["points"]
    print(f"step map: sxdm_map of {args.nx} x {rows} x {len(sub_etas)} points of the same grid ...", flush=True)
    t0 = time.monotonic()
    step = RE(sxdm_map([d["detector"]], d["pix"], xr, d["piy"], sub_y, d["eta"], sub_etas, snake=True))
    t_step = time.monotonic() - t0
    per_point = t_step / step_points
    results.update(step_s=round(t_step, 2), step_points=step_points, step_exit=step.exit_status,
                   step_ms_per_point=round(1e3 * per_point, 1), step_map_s=round(per_point * points, 1),
                   step_extrapolated=step_points != points, speedup=round(per_point * points / results["fly_s"], 2))
    how = f"extrapolated from {step_points} points ({t_step:.1f} s)" if step_points != points else "measured"
    print(f"  {results['step_ms_per_point']} ms/point: the whole map {per_point * points:.1f} s ({how}); "
          f"fly is {results['speedup']} x faster (goal >= 3)", flush=True)


def _rig(args, cfg) -> dict:
    """Devices, the fly scanner and a RunEngine (catalog, baseline) on the simulator; the map's grid."""
    d = make_devices(cfg, connect_timeout=60.0)
    rig = {"d": d, "cfg": cfg}
    rig["flyer"] = make_flyer(d, cfg)
    rig["RE"] = RE = RunEngine(call_returns_result=True)
    if not args.no_catalog:
        storage.subscribe_writer(RE, storage.open_catalog(cfg))
    install_baseline(RE, d)
    setup = SimulatedBeamline.from_config(cfg).bragg_setup()
    (cx, cy), half = setup["center_um"], float(setup["extent_um"])
    rig["x"], rig["y"] = (cx - half, cx + half, args.nx), (cy - half, cy + half, args.ny)
    rig["etas"] = list(np.linspace(setup["eta_start"], setup["eta_stop"], args.neta))
    RE(bps.mv(d["delta"], setup["delta"], d["nu"], 0.0, d["phi"], 0.0, d["eta"], rig["etas"][0]))
    return rig


def main(argv=None) -> int:
    args = _parse(argv)
    results = {"nx": args.nx, "ny": args.ny, "neta": args.neta, "dwell_s": args.dwell,
               "catalog": not args.no_catalog, "live": args.live}
    _detector_rates(args, results)
    with tempfile.TemporaryDirectory(prefix="bench-fly-") as tmp:
        root = Path(tmp)
        cfg = scratch_config(root)
        handle = start_simulator(cfg, state_file=root / "sim.json", set_env=True, exit_with_parent=True)
        rig, live = {}, None
        try:
            rig = _rig(args, cfg)
            live = {"thread": lambda: ThreadLive(args.nx), "bus": lambda: BusLive(args.bus_url, root),
                    "none": NoLive}[args.live]()
            _fly_map(args, rig, live, results, root)
            live.close()
            live = None
            if not args.no_step:
                _step_map(args, rig, results)
        finally:
            try:
                if live is not None:
                    live.close()
                release_devices(rig.get("d", {}))
            finally:
                stop_simulator(handle)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
