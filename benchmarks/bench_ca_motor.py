"""Channel Access round trip of a simulated motor, with and without the TCP_NODELAY fix.

Two simulators run side by side in the same session (motors only, different PV
prefixes): one with braggscope's fix (TCP_NODELAY on accepted sockets), one as
caproto 1.3.0 ships it (Nagle on). For each we time

- ``caput(VAL, wait=True)``: put-with-callback on the motor record, a short
  move (completes at the end of the move; includes >= one 10 ms motion tick);
- ``caput(.VELO, wait=True)``: put-with-callback on a plain field (no motion);
- ``motor.set(x).wait()`` through ophyd's EpicsMotor (DMOV monitor).

Usage: ``python benchmarks/bench_ca_motor.py [--n 40]``. Numbers on a shared
2-core machine are noisy; compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _time(fn, n):
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3, statistics.mean(samples) * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="repetitions per measurement")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")

    from braggscope.app.beamline.simulator import start_simulator, stop_simulator
    from braggscope.core.config import load_config

    tmp = Path(tempfile.mkdtemp(prefix="bench-ca-"))
    handles = {}
    try:
        for label, nodelay in (("fixed", True), ("caproto", False)):
            cfg = load_config()
            prefix = "NODELAY:" if nodelay else "NAGLE:"
            cfg.set("storage.data_dir", str(tmp / label))
            for key in ("pv.piezo", "pv.diffractometer"):
                cfg.set(key, prefix)
            cfg.set("pv.energy", prefix + "energy")
            cfg.set("pv.detector", prefix + "mpx1x4:")
            cfg.set("pv.fluorescence", prefix + "xrf:")
            handles[label] = (start_simulator(cfg, with_detector=False, nodelay=nodelay,
                                              set_env=False, exit_with_parent=True), prefix)
        import os
        os.environ["EPICS_CA_ADDR_LIST"] = " ".join(h.addr_list for h, _ in handles.values())
        os.environ["EPICS_CA_AUTO_ADDR_LIST"] = "NO"
        import epics
        from ophyd import EpicsMotor

        rows = {}
        for label, (_, prefix) in handles.items():
            val, velo = epics.PV(prefix + "pix"), epics.PV(prefix + "pix.VELO")
            val.wait_for_connection(5), velo.wait_for_connection(5)
            motor = EpicsMotor(prefix + "pix", name="pix")
            motor.wait_for_connection(timeout=10)
            val.put(50.0, wait=True)
            rows[label] = {
                # each lambda is timed before the loop moves on: the loop variables are the current ones
                "caput VAL wait (move 0.01 um)": _time(lambda i: val.put(50.0 + 0.01 * (i % 2), wait=True),  # noqa: B023
                                                       args.n),
                "caput .VELO wait (no motion)": _time(lambda i: velo.put(200.0 + (i % 2), wait=True), args.n),  # noqa: B023
                "ophyd EpicsMotor.set().wait()": _time(lambda i: motor.set(50.0 + 0.01 * (i % 2)).wait(10),  # noqa: B023
                                                       args.n),
            }
        print(f"CA motor round trip, median (mean) ms over {args.n} repetitions; 2 simulators in one run")
        print(f"{'operation':34s} {'TCP_NODELAY (ours)':>22s} {'caproto default':>22s}")
        for op in rows["fixed"]:
            a, b = rows["fixed"][op], rows["caproto"][op]
            print(f"{op:34s} {a[0]:10.2f} ({a[1]:7.2f}) {b[0]:12.2f} ({b[1]:7.2f})")
    finally:
        for handle, _ in handles.values():
            stop_simulator(handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
