"""Per-point cost of a step scan over Channel Access vs in-process, side by side.

The same ``sxdm_map`` plan (default 10 x 10 points x 2 angles = 200 points)
runs on

1. in-process devices: ``ophyd.sim``-based motors and an in-process 512x512
   detector writing HDF5 (``braggscope.simulators.inprocess``), rendering with
   the same simulator physics as the IOC (the baseline);
2. the caproto simulator over CA (EpicsMotor + areaDetector Maxipix with
   its HDF5 plugin), exactly the devices used at the beamline;
3. (2) plus the catalog writer (embedded Tiled catalog, background thread, batch of 50 events);
4. (2) with the simulator in real time (``--realtime``, for reference);
5. (2) with bluesky's own ``one_nd_step`` per point instead of braggscope's
   ``plans.stubs.step_point`` (``--stock-step``, for reference: bluesky's plan
   stubs capture the caller's stack each, and trigger the motors too);
6. (2) with the simulator serving one fixed frame (``--fixed-frame``: the
   first frame rendered, then no rendering at all; Stats and the HDF5 write
   still run): what Channel Access costs when the simulator's physics costs
   nothing, a floor for any work on the simulated detector's frame path.

The in-process devices have no dead time (moves are instant, exposure
is not waited out), so (2) and (3) run the simulator with
``simulator.realtime = false``: moves take no travel time and a frame only
the time to render and save it (the 10 ms exposure still sets the counts).
The difference to (1) is then the control-system overhead alone. (4) is what
`braggscope sim` does by default: 10 ms exposure, piezo at 200 um/s.

Configurations are measured in interleaved rounds (best of ``--repeats``)
so machine load affects all alike. Goal: (2) within 1.5x of (1). Beside the
wall time, the CPU time per point of this process and of the simulator
process (the run of the best total): on a loaded machine the wall time
mostly measures waiting for a core, the CPU time what each point costs. Run:
``python benchmarks/bench_scan_overhead.py`` (``--points-x 10 --points-y 10
--etas 2 --repeats 3``); ``--phases`` prints where each configuration spends
its time per point; ``--demo`` also times ``braggscope demo sxdm --quick``.
Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

for _k, _v in {"EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
               "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1", "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
               "EPICS_CA_MAX_ARRAY_BYTES": str(64 * 1024 * 1024), "MPLBACKEND": "Agg"}.items():
    os.environ.setdefault(_k, _v)

BASE = "in-process (ophyd.sim + HDF5 512x512)"
CA = "caproto over CA (EpicsMotor + AD HDF5)"
CATALOG = "CA + embedded catalog writer"
REALTIME = "CA, simulator in real time (10 ms exposure)"
STOCK = "CA, bluesky's one_nd_step per point"
FIXED = "CA, simulator serving one fixed frame"
#: The goal of issue 19: a point over CA at most this many times the in-process point.
GOAL = 1.5

#: Plan messages grouped into the phases of one point.
PHASES = {"set": "move", "wait:move": "move", "wait:set": "move", "trigger": "trigger", "wait:trigger": "trigger",
          "create": "read + event", "read": "read + event", "save": "read + event"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points-x", type=int, default=10)
    parser.add_argument("--points-y", type=int, default=10)
    parser.add_argument("--etas", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (best is kept)")
    parser.add_argument("--realtime", action="store_true",
                        help="also time the simulator in real time (exposure and motor travel)")
    parser.add_argument("--phases", action="store_true", help="print ms/point per phase")
    parser.add_argument("--stock-step", action="store_true",
                        help="also time the map with bluesky's one_nd_step per point (for reference)")
    parser.add_argument("--fixed-frame", action="store_true",
                        help="also time the map with the simulator serving one fixed frame (no rendering)")
    parser.add_argument("--demo", action="store_true", help="also time `braggscope demo sxdm --quick`")
    args = parser.parse_args(argv)
    if min(args.points_x, args.points_y, args.etas, args.repeats) < 1:
        parser.error("--points-x, --points-y, --etas and --repeats must be >= 1")
    import bluesky.plan_stubs as bps
    import numpy as np
    from bluesky import RunEngine

    from braggscope import storage
    from braggscope.app.beamline.simulator import apply_client_env, start_simulator, stop_simulator
    from braggscope.core.config import load_config
    from braggscope.devices.factory import make_devices
    from braggscope.plans import sxdm_map
    from braggscope.simulators.beamline import SimulatedBeamline
    from braggscope.simulators.inprocess import make_inprocess_devices

    tmp = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    cfg = load_config()
    for key, value in (("storage.data_dir", tmp / "data"), ("detector.write_path", tmp / "det"),
                       ("detector.read_path", tmp / "det")):
        cfg.set(key, str(value))
    cfg.set("storage.catalog_server", "off")  # (3) measures the embedded catalog, not the local server over HTTP
    (tmp / "det").mkdir()
    sim = SimulatedBeamline.from_config(cfg)
    setup = sim.bragg_setup()
    cx, cy = setup["center_um"]
    nx, ny, ne = args.points_x, args.points_y, args.etas
    n = nx * ny * ne
    etas = list(np.linspace(setup["eta"] - 0.05, setup["eta"] + 0.05, ne))

    def plan_for(d, det):
        return lambda: sxdm_map([det], d["pix"], (cx - 1, cx + 1, nx), d["piy"], (cy - 1, cy + 1, ny), d["eta"], etas)

    def stock_plan_for(d, det):  # the same points, bluesky's one_nd_step per point, the same guard
        from bluesky import plans as bp
        from cycler import cycler

        from braggscope.plans.guard import guarded
        from braggscope.plans.sxdm import sxdm_points

        eta_p, y_p, x_p = sxdm_points((cx - 1, cx + 1, nx), (cy - 1, cy + 1, ny), etas)
        trajectory = cycler(d["eta"], list(eta_p)) + cycler(d["piy"], list(y_p)) + cycler(d["pix"], list(x_p))
        return lambda: guarded(bp.scan_nd([det], trajectory), trigger_timeout_s=30.0, move_timeout_s=300.0)

    best = collections.defaultdict(lambda: float("inf"))
    phases, cpu = {}, {}
    sim_pid = {}

    def run(label, RE, make_plan):
        timer = _PhaseTimer()
        RE.msg_hook = timer
        pid = sim_pid.get(label, sim_pid.get("pid"))
        c0, s0 = time.process_time(), _process_cpu(pid)
        t0 = time.perf_counter()
        RE(make_plan())
        ms = 1e3 * (time.perf_counter() - t0) / n
        c1, s1 = time.process_time(), _process_cpu(pid)
        RE.msg_hook = None
        if ms < best[label]:
            best[label], phases[label] = ms, {k: 1e3 * v / n for k, v in timer.totals().items()}
            cpu[label] = (1e3 * (c1 - c0) / n, 1e3 * (s1 - s0) / n if label != BASE else 0.0)

    RE = RunEngine()
    local = make_inprocess_devices(sim, tmp / "det", limits=cfg["limits"])
    RE(bps.mv(local["delta"], setup["delta"]))
    local_plan = plan_for(local, local["mpx1x4"])

    # (2)-(3) and (4) run on two simulators at once (different PV prefixes and
    # ports): CA client settings are fixed at the first connection of a process
    cfg.set("simulator.realtime", False)
    handles = [start_simulator(cfg, state_file=tmp / "sim.json", set_env=False, exit_with_parent=True)]
    sim_pid["pid"] = handles[0].pid
    try:
        if args.realtime:
            rt_cfg = _other_simulator(cfg, "BSRT", realtime=True)
            handles.append(start_simulator(rt_cfg, state_file=tmp / "sim-rt.json", set_env=False,
                                           exit_with_parent=True))
            sim_pid[REALTIME] = handles[-1].pid
        if args.fixed_frame:
            ff_cfg = _other_simulator(cfg, "BSFF", realtime=False, renderer="fixed_frame:fixed_frame_renderer")
            # the simulator process imports the renderer factory from this folder
            path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
            with mock.patch.dict(os.environ, PYTHONPATH=path):
                handles.append(start_simulator(ff_cfg, state_file=tmp / "sim-ff.json", set_env=False,
                                               exit_with_parent=True))
            sim_pid[FIXED] = handles[-1].pid
        apply_client_env(handles[0].port)
        os.environ["EPICS_CA_ADDR_LIST"] = " ".join(h.addr_list for h in handles)
        d = make_devices(cfg, connect_timeout=30.0)
        RE_ca, RE_cat = RunEngine(), RunEngine()
        storage.subscribe_writer(RE_cat, storage.open_catalog(cfg))
        RE_ca(bps.mv(d["delta"], setup["delta"], d["eta"], etas[0]))
        ca_plan = plan_for(d, d["detector"])
        RE_ca(ca_plan())  # warm-up: first connections, file creation
        RE(local_plan())
        rounds = [(BASE, RE, local_plan), (CA, RE_ca, ca_plan), (CATALOG, RE_cat, ca_plan)]
        if args.stock_step:
            rounds.append((STOCK, RE_ca, stock_plan_for(d, d["detector"])))
        if args.realtime:
            d_rt = make_devices(rt_cfg, connect_timeout=30.0)
            RE_rt = RunEngine()
            RE_rt(bps.mv(d_rt["delta"], setup["delta"], d_rt["eta"], etas[0]))
            rounds.append((REALTIME, RE_rt, plan_for(d_rt, d_rt["detector"])))
        if args.fixed_frame:
            d_ff = make_devices(ff_cfg, connect_timeout=30.0)
            RE_ff = RunEngine()
            RE_ff(bps.mv(d_ff["delta"], setup["delta"], d_ff["eta"], etas[0]))
            rounds.append((FIXED, RE_ff, plan_for(d_ff, d_ff["detector"])))
        for _ in range(args.repeats):
            for label, engine, make_plan in rounds:
                run(label, engine, make_plan)
    finally:
        for handle in handles:
            stop_simulator(handle)

    base = best[BASE]
    print(f"\nstep-scan cost per point, sxdm_map {nx}x{ny}x{ne} = {n} points "
          f"(best of {args.repeats} interleaved rounds; 2 shared cores)")
    print(f"{'configuration':45s} {'ms/point':>9s} {'vs in-process':>14s} {'CPU ms/point: here':>19s} "
          f"{'simulator':>10s}")
    for label, ms in best.items():
        here, simulator = cpu[label]
        print(f"{label:45s} {ms:9.1f} {ms / base:13.2f}x {here:19.2f} {simulator:10.2f}")
    ratio = best[CA] / base
    print(f"over CA / in-process: {ratio:.2f}x (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'not met'}); "
          f"Channel Access adds {best[CA] - base:.1f} ms per point ({cpu[CA][0] - cpu[BASE][0]:.1f} ms of CPU "
          f"here, {cpu[CA][1]:.1f} in the simulator); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
          "cores")
    if args.phases:
        names = ["move", "trigger", "read + event", "other"]
        print("\nms/point by phase (RunEngine message time; the run of the best total)")
        print(f"{'configuration':45s} " + " ".join(f"{k:>12s}" for k in names))
        for label, parts in phases.items():
            print(f"{label:45s} " + " ".join(f"{parts.get(k, 0.0):12.2f}" for k in names))
    if args.demo:
        import subprocess

        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "braggscope", "demo", "sxdm", "--quick", "--out", str(tmp / "demo")],
                       check=True, env={**os.environ, "BRAGGSCOPE_CONFIG": ""})
        print(f"{'demo sxdm --quick (wall)':45s} {time.perf_counter() - t0:9.1f} s")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _other_simulator(cfg, head: str, **simulator):
    """A copy of ``cfg`` for a second simulator: PV prefixes starting ``head`` instead of their first
    part, the same files, ``simulator.<key>`` set from ``simulator``."""
    from braggscope.core.config import load_config

    other = load_config()
    for key in ("storage.data_dir", "detector.write_path", "detector.read_path"):
        other.set(key, cfg[key])
    for key, prefix in cfg["pv"].items():  # every prefix: two servers of one PV name would answer a search both
        if prefix:
            other.set(f"pv.{key}", head + prefix.partition(":")[1] + prefix.partition(":")[2])
    for key, value in simulator.items():
        other.set(f"simulator.{key}", value)
    return other


def _process_cpu(pid) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc), 0 without one."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _PhaseTimer:
    """``RunEngine.msg_hook`` charging the time until the next message to this message's phase."""

    def __init__(self):
        self._totals = collections.defaultdict(float)
        self._last = None

    def __call__(self, msg):
        now = time.perf_counter()
        if self._last is not None:
            self._totals[self._last[1]] += now - self._last[0]
        key = msg.command
        if key == "wait":
            key = "wait:" + str(msg.kwargs.get("group", "")).split("-")[0]
        self._last = (now, PHASES.get(key, "other"))

    def totals(self):
        return dict(self._totals)


if __name__ == "__main__":
    sys.exit(main())
