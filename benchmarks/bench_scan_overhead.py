"""Per-point cost of a step scan over Channel Access vs in-process, side by side.

The same ``sxdm_map`` plan (default 10 x 10 points x 2 angles = 200 points)
runs on

1. in-process devices: ``ophyd.sim``-based motors and an in-process 512x512
   detector writing HDF5 (``braggscope.plans.sim_detector``), rendering with
   the same simulator physics as the IOC (the baseline);
2. the caproto simulator over CA (EpicsMotor + areaDetector Maxipix with
   its HDF5 plugin), exactly the devices used at the beamline;
3. (2) plus the catalog writer (embedded Tiled catalog, batch of 20 events).

Goal: CA within 2x of in-process. Run: ``python benchmarks/bench_scan_overhead.py``
(``--points-x 10 --points-y 10 --etas 2``); ``--demo`` also times
``braggscope demo sxdm --quick``. Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for _k, _v in {"EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
               "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1", "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
               "EPICS_CA_MAX_ARRAY_BYTES": str(64 * 1024 * 1024), "MPLBACKEND": "Agg"}.items():
    os.environ.setdefault(_k, _v)


def _time_plan(RE, make_plan, n_points, repeats=2):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        RE(make_plan())
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best / n_points


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points-x", type=int, default=10)
    parser.add_argument("--points-y", type=int, default=10)
    parser.add_argument("--etas", type=int, default=2)
    parser.add_argument("--demo", action="store_true", help="also time `braggscope demo sxdm --quick`")
    args = parser.parse_args(argv)
    import bluesky.plan_stubs as bps
    import numpy as np
    from bluesky import RunEngine

    from braggscope import storage
    from braggscope.config import load_config
    from braggscope.devices.factory import make_devices
    from braggscope.plans import sxdm_map
    from braggscope.plans.sim_detector import make_inprocess_devices
    from braggscope.simctl import start_simulator, stop_simulator
    from braggscope.simulators.beamline import SimulatedBeamline

    tmp = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    cfg = load_config()
    for key, value in (("storage.data_dir", tmp / "data"), ("detector.write_path", tmp / "det"),
                       ("detector.read_path", tmp / "det")):
        cfg.set(key, str(value))
    (tmp / "det").mkdir()
    sim = SimulatedBeamline.from_config(cfg)
    setup = sim.bragg_setup()
    cx, cy = setup["center_um"]
    nx, ny, ne = args.points_x, args.points_y, args.etas
    n = nx * ny * ne
    etas = list(np.linspace(setup["eta"] - 0.05, setup["eta"] + 0.05, ne))

    def plan_for(d, det):
        return lambda: sxdm_map([det], d["pix"], (cx - 1, cx + 1, nx), d["piy"], (cy - 1, cy + 1, ny), d["eta"], etas)

    results = {}
    RE = RunEngine()
    local = make_inprocess_devices(sim, tmp / "det", limits=cfg["limits"])
    RE(bps.mv(local["delta"], setup["delta"]))
    results["in-process (ophyd.sim + HDF5 512x512)"] = _time_plan(RE, plan_for(local, local["mpx1x4"]), n)

    handle = start_simulator(cfg, state_file=tmp / "sim.json", set_env=True)
    try:
        d = make_devices(cfg, connect_timeout=30.0)
        RE_ca = RunEngine()
        RE_ca(bps.mv(d["delta"], setup["delta"], d["eta"], etas[0]))
        results["caproto over CA (EpicsMotor + AD HDF5)"] = _time_plan(RE_ca, plan_for(d, d["detector"]), n)
        client = storage.open_catalog(cfg)
        storage.subscribe_writer(RE_ca, client)
        results["CA + embedded catalog writer"] = _time_plan(RE_ca, plan_for(d, d["detector"]), n)
    finally:
        stop_simulator(handle)

    base = results["in-process (ophyd.sim + HDF5 512x512)"]
    print(f"\nstep-scan cost per point, sxdm_map {nx}x{ny}x{ne} = {n} points (best of 2; 2 shared cores)")
    print(f"{'configuration':45s} {'ms/point':>9s} {'vs in-process':>14s}")
    for name, ms in results.items():
        print(f"{name:45s} {ms:9.1f} {ms / base:13.2f}x")
    if args.demo:
        import subprocess

        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "braggscope", "demo", "sxdm", "--quick", "--out", str(tmp / "demo")],
                       check=True, env={**os.environ, "BRAGGSCOPE_CONFIG": ""})
        print(f"{'demo sxdm --quick (wall)':45s} {time.perf_counter() - t0:9.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
