"""Fly scan vs step scan of the same map over Channel Access, and the detector's sustained frame rate.

Side by side in one run (the caproto simulator in real time, on loopback, the catalog written):

1. **Detector pipeline** (``bench_sim_frames.pipeline_rates``): render + compress + write of 516 x 516
   frames in one thread as the simulated Maxipix's external-trigger writer does, beside the previous
   path (whole frame, h5py filter, a flush per frame); frames/s and CPU ms per frame (goal >= 500/s).
2. **Fly map** (``sxdm_fly``): wall time over its pure exposure (points x dwell; goal <= 1.15), the
   per-line overhead (wall less exposure, per line; goal <= 50 ms; and the median from one line's counts to
   the next's less the exposure, the run's start and end excluded), where a line's time goes (the
   flyer's ``kickoff_s``/``sweep_s``/``duration_s``, the catalog's backlog at the stop document), and the
   CPU seconds each process used meanwhile (this one: RunEngine, flyer, catalog writer thread; the
   simulator; the catalog server).
3. **Live maps' lag**: a ``LiveSXDM`` behind a ``LiveMapDispatcher`` (its own thread, as the session
   runs it: the RunEngine never waits for it); frames not yet in the maps when the stop document is
   emitted (goal: at most one line), and how long after the stop the last frame was in.
4. **Step map** (``sxdm_map``, detector AcquireTime = dwell) of the same grid, or of its first
   ``--step-rows`` rows at the first angle, extrapolated per point (said in the output): the speed-up
   of the fly map (goal >= 3).

Usage::

    python benchmarks/bench_fly.py                 # 50 x 50 points, 2 angles, 5 ms; step map on 4 rows
    python benchmarks/bench_fly.py --full          # 100 x 100 points, 3 angles, 5 ms
    python benchmarks/bench_fly.py --nx 20 --ny 10 --neta 2 --dwell 0.005 [--step-rows 0 (all)] [--no-step]
    python benchmarks/bench_fly.py --no-catalog --no-step   # the control path alone (no catalog writer)
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


def _cpu_of(pids) -> dict:
    """CPU seconds (user + system, children included) of processes, by pid."""
    import psutil

    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            out[pid] = float("nan")
    return out


def _processes(root: Path) -> dict:
    """This process, and the simulator and catalog server started for this run (their command lines
    name the run's temporary directory)."""
    import psutil

    found = {os.getpid(): "this process (RunEngine, flyer, catalog writer thread)"}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if str(root) in line and proc.info["pid"] != os.getpid():
            found[proc.info["pid"]] = "simulator" if "sim" in line and "catalog" not in line else "catalog server"
    return found


def main(argv=None) -> int:
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
    parser.add_argument("--no-live", action="store_true", help="no live maps (the control path and catalog alone)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.full:
        args.nx, args.ny, args.neta = 100, 100, 3
    for name in ("nx", "ny", "neta"):
        if getattr(args, name) < (2 if name != "neta" else 1):
            parser.error(f"--{name} too small")
    if not args.dwell > 0:
        parser.error("--dwell must be > 0")

    from bluesky import RunEngine
    from bluesky import plan_stubs as bps

    from braggscope.analysis.live import LiveSXDM
    from braggscope.analysis.live.dispatch import LiveMapDispatcher
    from braggscope.app.beamline.runengine import install_baseline
    from braggscope.app.beamline.simulator import scratch_config, start_simulator, stop_simulator
    from braggscope import storage
    from braggscope.devices.ca_client import release_devices
    from braggscope.devices.factory import make_devices
    from braggscope.devices.fly import make_flyer
    from braggscope.plans import sxdm_map
    from braggscope.plans.fly import sxdm_fly
    from braggscope.simulators.beamline import SimulatedBeamline

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_sim_frames import pipeline_rates

    results = {"nx": args.nx, "ny": args.ny, "neta": args.neta, "dwell_s": args.dwell}
    print(f"detector: render + compress + write of 516x516 frames ({args.frames}) ...", flush=True)
    rates = pipeline_rates(args.frames)
    results.update(detector_fps_516=round(rates["fly"][0], 1), detector_cpu_ms=round(rates["fly"][1], 2),
                   detector_baseline_fps_516=round(rates["baseline"][0], 1),
                   detector_baseline_cpu_ms=round(rates["baseline"][1], 2))
    print(f"  fly path {results['detector_fps_516']} frames/s, {results['detector_cpu_ms']} CPU ms/frame "
          f"(goal >= 500/s); previous path {results['detector_baseline_fps_516']} frames/s, "
          f"{results['detector_baseline_cpu_ms']} CPU ms/frame", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-fly-") as tmp:
        root = Path(tmp)
        cfg = scratch_config(root)
        handle = start_simulator(cfg, state_file=root / "sim.json", set_env=True, exit_with_parent=True)
        devices = {}
        try:
            devices = d = make_devices(cfg, connect_timeout=60.0)
            flyer = make_flyer(d, cfg)
            RE = RunEngine(call_returns_result=True)
            if not args.no_catalog:
                storage.subscribe_writer(RE, storage.open_catalog(cfg))
            results["catalog"] = not args.no_catalog
            install_baseline(RE, d)
            setup = SimulatedBeamline.from_config(cfg).bragg_setup()
            cx, cy = setup["center_um"]
            half = float(setup["extent_um"])
            xr, yr = (cx - half, cx + half, args.nx), (cy - half, cy + half, args.ny)
            etas = list(np.linspace(setup["eta_start"], setup["eta_stop"], args.neta))
            RE(bps.mv(d["delta"], setup["delta"], d["nu"], 0.0, d["phi"], 0.0, d["eta"], etas[0]))
            points = args.nx * args.ny * args.neta
            exposure = points * args.dwell
            results["points"], results["exposure_s"] = points, round(exposure, 3)

            live = LiveSXDM(announce=False, batch_size=args.nx)
            at_stop = {}

            def before_live(name, doc):
                if name == "stop":
                    at_stop["frames"] = live.n_frames
                    at_stop["time"] = time.monotonic()

            dispatcher = LiveMapDispatcher(live, maxsize=4096)
            tokens = [RE.subscribe(before_live)] + ([] if args.no_live else [RE.subscribe(dispatcher)])
            reports = []
            count = flyer._count

            def counted():  # the flyer's per-line timings
                report = count()
                reports.append(dict(report, t_done=time.monotonic()))
                return report

            flyer._count = counted
            procs = _processes(root)
            cpu0 = _cpu_of(procs)
            print(f"fly map: {args.nx} x {args.ny} x {args.neta} points at {args.dwell * 1e3:g} ms ...", flush=True)
            t0 = time.monotonic()
            fly = RE(sxdm_fly([flyer], d["pix"], xr, d["piy"], yr, d["eta"], etas, dwell_s=args.dwell, snake=True))
            t_fly = time.monotonic() - t0
            dispatcher.wait(120)
            t_live = time.monotonic()
            dispatcher.close()
            cpu1 = _cpu_of(procs)
            flyer._count = count
            for token in tokens:
                RE.unsubscribe(token)
            lines = args.ny * args.neta
            steady = reports[1:] or reports  # the first line also draws the detector's background pool

            def median_ms(key):
                return round(1e3 * float(np.median([r[key] for r in steady])), 1)

            line_s = args.nx * args.dwell
            # steady state: from one line's counts to the next's, within an angle (no eta move), less the
            # line's exposure; the run's start and end (staging, baseline, the catalog's tail) excluded
            cycles = [b["t_done"] - a["t_done"] for a, b in zip(reports, reports[1:])
                      if a.get("eta_index") == b.get("eta_index") and b.get("attempt", 0) == 0]
            steady_ms = round(1e3 * (float(np.median(cycles)) - line_s), 1) if cycles else float("nan")
            results.update(fly_s=round(t_fly, 2), fly_over_exposure=round(t_fly / exposure, 3),
                           per_line_overhead_ms=round(1e3 * (t_fly - exposure) / lines, 1),
                           steady_line_overhead_ms=steady_ms,
                           fly_exit=fly.exit_status, live_lag_frames=points - at_stop.get("frames", 0),
                           live_frames=live.n_frames,
                           live_done_after_stop_s=round(t_live - at_stop.get("time", t_live), 2),
                           line_exposure_ms=round(1e3 * line_s, 1),
                           line_kickoff_ms=median_ms("kickoff_s"), line_sweep_ms=median_ms("sweep_s"),
                           line_duration_ms=median_ms("duration_s"),
                           catalog_backlog_at_stop_s=round(t0 + t_fly - reports[-1]["t_done"], 2),
                           cpu_s={procs[p]: round(cpu1[p] - cpu0[p], 1) for p in procs})
            print(f"  {t_fly:.2f} s = {t_fly / exposure:.2f} x exposure ({exposure:.2f} s) (goal <= 1.15); "
                  f"per-line overhead {results['per_line_overhead_ms']} ms (goal <= 50; between lines of one angle, "
                  f"median: {results['steady_line_overhead_ms']} ms); live maps "
                  f"{results['live_lag_frames']} frames behind at the stop (goal <= {args.nx}), all "
                  f"{live.n_frames} in {results['live_done_after_stop_s']} s after it", flush=True)
            print(f"  a line (median): {results['line_exposure_ms']} ms of exposure, kickoff "
                  f"{results['line_kickoff_ms']} ms, Go to stage stopped + captures written {results['line_sweep_ms']} "
                  f"ms (ramps {2e3 * float(cfg.get('fly.accel_time_s', 0.005)):g} ms), Go to frames on disk and "
                  f"counts read {results['line_duration_ms']} ms; catalog still writing after the last line: "
                  f"{results['catalog_backlog_at_stop_s']} s", flush=True)
            print(f"  CPU seconds during the fly map ({t_fly:.1f} s wall, {os.cpu_count()} cores): "
                  + ", ".join(f"{name} {value}" for name, value in results["cpu_s"].items()), flush=True)

            if not args.no_step:
                d["detector"].cam.acquire_time.set(args.dwell).wait(10)
                d["detector"].cam.acquire_period.set(args.dwell).wait(10)
                rows = args.ny if args.step_rows <= 0 else min(args.step_rows, args.ny)
                sub_y = yr if rows == args.ny else (yr[0], yr[0] + (yr[1] - yr[0]) * (rows - 1) / (args.ny - 1), rows)
                sub_etas = etas if rows == args.ny else etas[:1]
                step_points = args.nx * rows * len(sub_etas)
                print(f"step map: sxdm_map of {args.nx} x {rows} x {len(sub_etas)} points of the same grid ...",
                      flush=True)
                t0 = time.monotonic()
                step = RE(sxdm_map([d["detector"]], d["pix"], xr, d["piy"], sub_y, d["eta"], sub_etas, snake=True))
                t_step = time.monotonic() - t0
                per_point = t_step / step_points
                t_step_map = per_point * points
                results.update(step_s=round(t_step, 2), step_points=step_points, step_exit=step.exit_status,
                               step_ms_per_point=round(1e3 * per_point, 1),
                               step_map_s=round(t_step_map, 1), step_extrapolated=step_points != points,
                               speedup=round(t_step_map / t_fly, 2))
                how = (f"extrapolated from {step_points} points ({t_step:.1f} s)" if step_points != points
                       else "measured")
                print(f"  {results['step_ms_per_point']} ms/point: the whole map {t_step_map:.1f} s ({how}); "
                      f"fly is {results['speedup']} x faster (goal >= 3)", flush=True)
        finally:
            try:
                release_devices(devices)
            finally:
                stop_simulator(handle)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
