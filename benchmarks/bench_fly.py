"""Fly scan vs step scan of the same map over Channel Access, and the detector's sustained frame rate.

Side by side in one run (the caproto simulator in real time, on loopback, the catalog written):

1. **Step map** (``sxdm_map``, detector AcquireTime = dwell) and **fly map** (``sxdm_fly``)
   of the same grid: wall times, the fly map's wall time over its pure exposure
   (points x dwell; goal <= 1.15), the per-line overhead (fly wall time less exposure,
   per line; goal <= 50 ms) and the speed-up over the step map (goal >= 3).
2. **Live maps' lag**: a ``LiveSXDM`` subscribed to the fly map; frames not yet in the
   maps when the stop document arrives (goal: at most one line).
3. **Detector sustained rate**: render + centroid + Blosc-LZ4-bitshuffle HDF5 write of
   516 x 516 frames in one thread, as the simulated Maxipix does in external-trigger
   mode (goal >= 500 frames/s).

Usage::

    python benchmarks/bench_fly.py                 # 20 x 10 points, 2 angles, 5 ms (a few minutes on 2 cores)
    python benchmarks/bench_fly.py --full          # 100 x 100 points, 3 angles, 5 ms
    python benchmarks/bench_fly.py --nx 40 --ny 20 --neta 2 --dwell 0.005 [--no-step] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def detector_rate(n_frames: int = 200, shape=(516, 516)) -> float:
    """Frames/s of render + stats + compressed write (one thread), as the simulated Maxipix."""
    import h5py
    import hdf5plugin

    from braggscope.core.config import load_config
    from braggscope.simulators.beamline import SimulatedBeamline
    from braggscope.simulators.ioc_detector import frame_stats

    cfg = load_config()
    cfg.set("detector.shape", list(shape))
    cfg.set("detector.cch", [shape[0] / 2, shape[1] / 2])
    beamline = SimulatedBeamline.from_config(cfg, seed=1)
    setup = beamline.bragg_setup()
    cx, cy = setup["center_um"]
    pos = {"pix": cx, "piy": cy, "piz": 0.0, "eta": setup["eta"], "delta": setup["delta"], "nu": 0.0,
           "phi": 0.0, "energy": setup["energy_kev"]}
    with tempfile.TemporaryDirectory() as tmp:
        with h5py.File(Path(tmp) / "frames.h5", "w", libver="latest") as f:
            data = f.create_dataset("/entry/data/data", shape=(0,) + tuple(shape), maxshape=(None,) + tuple(shape),
                                    chunks=(1,) + tuple(shape), dtype=np.uint32,
                                    **hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.BITSHUFFLE))
            t0 = time.perf_counter()
            for i in range(n_frames):
                frame = beamline.render(dict(pos, pix=cx + 0.01 * i), 0.005).astype(np.uint32, copy=False)
                frame_stats(frame)
                data.resize(i + 1, axis=0)
                data[i] = frame
                data.flush()
            return n_frames / (time.perf_counter() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="100 x 100 points, 3 angles")
    parser.add_argument("--nx", type=int, default=20)
    parser.add_argument("--ny", type=int, default=10)
    parser.add_argument("--neta", type=int, default=2)
    parser.add_argument("--dwell", type=float, default=0.005, help="s per point")
    parser.add_argument("--no-step", action="store_true", help="skip the step map")
    parser.add_argument("--frames", type=int, default=200, help="frames for the detector rate")
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
    from braggscope.app.beamline import install_baseline
    from braggscope.app.simctl import start_simulator, stop_simulator
    from braggscope.core import storage
    from braggscope.core.config import load_config
    from braggscope.devices.ca_client import release_devices
    from braggscope.devices.factory import make_devices
    from braggscope.devices.fly import make_flyer
    from braggscope.plans import sxdm_map
    from braggscope.plans.fly import sxdm_fly
    from braggscope.simulators.beamline import SimulatedBeamline

    results = {"nx": args.nx, "ny": args.ny, "neta": args.neta, "dwell_s": args.dwell}
    print(f"detector: render + compress + write of 516x516 frames ({args.frames}) ...", flush=True)
    results["detector_fps_516"] = round(detector_rate(args.frames), 1)
    print(f"  {results['detector_fps_516']} frames/s (goal >= 500)", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-fly-") as tmp:
        root = Path(tmp)
        (root / "detector").mkdir()
        cfg = load_config()
        for key in ("detector.write_path", "detector.read_path"):
            cfg.set(key, str(root / "detector"))
        cfg.set("storage.data_dir", str(root))
        handle = start_simulator(cfg, state_file=root / "sim.json", set_env=True, exit_with_parent=True)
        devices = {}
        try:
            devices = d = make_devices(cfg, connect_timeout=60.0)
            flyer = make_flyer(d, cfg)
            RE = RunEngine(call_returns_result=True)
            storage.subscribe_writer(RE, storage.open_catalog(cfg))
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

            tokens = [RE.subscribe(before_live), RE.subscribe(live)]
            print(f"fly map: {args.nx} x {args.ny} x {args.neta} points at {args.dwell * 1e3:g} ms ...", flush=True)
            t0 = time.monotonic()
            fly = RE(sxdm_fly([flyer], d["pix"], xr, d["piy"], yr, d["eta"], etas, dwell_s=args.dwell, snake=True))
            t_fly = time.monotonic() - t0
            for token in tokens:
                RE.unsubscribe(token)
            lines = args.ny * args.neta
            results.update(fly_s=round(t_fly, 2), fly_over_exposure=round(t_fly / exposure, 3),
                           per_line_overhead_ms=round(1e3 * (t_fly - exposure) / lines, 1),
                           fly_exit=fly.exit_status, live_lag_frames=points - at_stop.get("frames", 0),
                           live_frames=live.n_frames)
            print(f"  {t_fly:.2f} s = {t_fly / exposure:.2f} x exposure ({exposure:.2f} s) (goal <= 1.15); "
                  f"per-line overhead {results['per_line_overhead_ms']} ms (goal <= 50); live maps "
                  f"{results['live_lag_frames']} frames behind at the stop (goal <= {args.nx})", flush=True)

            if not args.no_step:
                d["detector"].cam.acquire_time.set(args.dwell).wait(10)
                d["detector"].cam.acquire_period.set(args.dwell).wait(10)
                print("step map: the same grid with sxdm_map ...", flush=True)
                t0 = time.monotonic()
                step = RE(sxdm_map([d["detector"]], d["pix"], xr, d["piy"], yr, d["eta"], etas, snake=True))
                t_step = time.monotonic() - t0
                results.update(step_s=round(t_step, 2), step_exit=step.exit_status,
                               speedup=round(t_step / t_fly, 2), step_ms_per_point=round(1e3 * t_step / points, 1))
                print(f"  {t_step:.2f} s ({results['step_ms_per_point']} ms/point); fly is "
                      f"{results['speedup']} x faster (goal >= 3)", flush=True)
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
