"""Detector trigger-to-file rate: simulated Maxipix over CA vs the same work in-process.

- "CA + IOC": ophyd ``Maxipix`` staged (HDF5 capture on), ``trigger().wait()``
  repeated; each trigger renders a 512x512 frame in the IOC from
  SimulatedBeamline, appends it to the SWMR HDF5 file, flushes, updates Stats1
  and only then ends the acquisition.
- "RunEngine count": ``bluesky.plans.count`` of the detector (documents included).
- baseline "in-process": the same render + HDF5 append + flush in this process,
  no Channel Access.

Exposure (AcquireTime) is 1 ms, below the render time, so the figures are overheads. Usage:
``python benchmarks/bench_ca_detector.py [--n 40]``; noisy on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="frames per measurement")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")

    import h5py
    import numpy as np

    from braggscope.app.beamline.simulator import scratch_config, start_simulator, stop_simulator
    from braggscope.simulators.beamline import SimulatedBeamline

    tmp = Path(tempfile.mkdtemp(prefix="bench-det-"))
    cfg = scratch_config(tmp)

    # baseline: in-process render + append + flush
    beamline = SimulatedBeamline.from_config(cfg, seed=0)
    positions = {"pix": 50.0, "piy": 50.0, "piz": 50.0, "eta": 0.0, "phi": 0.0, "nu": 0.0,
                 "delta": 0.0, "energy": float(cfg["energy.energy_kev"])}
    rows, cols = beamline.shape
    with h5py.File(tmp / "baseline.h5", "w", libver="latest") as f:
        dset = f.create_dataset("entry/data/data", shape=(0, rows, cols), maxshape=(None, rows, cols),
                                chunks=(1, rows, cols), dtype=np.uint32)
        f.swmr_mode = True
        t0 = time.perf_counter()
        for i in range(args.n):
            frame = beamline.render(positions, 0.001)
            dset.resize(i + 1, axis=0)
            dset[i] = frame
            dset.flush()
        baseline = (time.perf_counter() - t0) / args.n

    handle = start_simulator(cfg, exit_with_parent=True)
    try:
        import bluesky.plans as bp
        from bluesky import RunEngine

        from braggscope.devices.factory import make_devices

        devices = make_devices(cfg, connect_timeout=20)
        det = devices["detector"]
        det.cam.acquire_time.set(0.001).wait(5)
        det.cam.acquire_period.set(0.0).wait(5)
        det.stage()
        try:
            det.trigger().wait(10)  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.n):
                det.trigger().wait(10)
            triggered = (time.perf_counter() - t0) / args.n
        finally:
            det.unstage()
        RE = RunEngine({})
        t0 = time.perf_counter()
        RE(bp.count([det], num=args.n))
        counted = (time.perf_counter() - t0) / args.n
    finally:
        stop_simulator(handle)

    print(f"Maxipix 512x512 uint32, {args.n} frames, exposure 1 ms (overhead only)")
    print(f"{'path':44s} {'ms/frame':>9s} {'frames/s':>9s}")
    for label, t in (("baseline: in-process render + HDF5 append", baseline),
                     ("CA + IOC: staged trigger().wait()", triggered),
                     ("CA + IOC: RunEngine count (with documents)", counted)):
        print(f"{label:44s} {t * 1e3:9.1f} {1 / t:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
