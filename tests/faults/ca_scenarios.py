"""IOC faults over Channel Access, each in a child process with a simulator of its own.

``python -m tests.faults.ca_scenarios SCENARIO OUTDIR`` writes ``OUTDIR/result.json``.
A child process is needed because the CA client reads its address list once per
process, and because these scenarios kill and restart the simulator.

Scenarios (a 3 x 2 x 2 map, eta 1.0 then 2.0 deg, eta moving at 2 deg/s, 0.3 s exposures):
``kill_move`` (SIGKILL 0.15 s into the eta move between the two angles), ``kill_trigger``
(0.1 s into the 4th exposure), ``kill_between`` (between points 3 and 4),
``restart_same_port`` (killed between points 3 and 4 and restarted on the same port before
point 4 starts), ``restart_new_port`` (the same on a new port, then ``reconnect`` and a new run).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

ETAS = [1.0, 2.0]


def setup_config(out: Path, port: int):
    os.environ.update({"EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
                       "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1", "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
                       "EPICS_CA_MAX_ARRAY_BYTES": str(64 * 1024 * 1024), "MPLBACKEND": "Agg"})
    from braggscope.core.config import load_config

    cfg = load_config()
    cfg.set("storage.data_dir", str(out / "data"))
    cfg.set("detector.write_path", str(out / "detector"))
    cfg.set("detector.read_path", str(out / "detector"))
    cfg.set("detector.shape", [32, 32])
    cfg.set("detector.cch", [16.0, 16.0])
    cfg.set("simulator.velocities", {"eta": 2.0})
    cfg.set("simulator.ca_server_port", port)
    (out / "detector").mkdir(parents=True, exist_ok=True)
    return cfg


def start_sim(cfg, out: Path, port: int):
    from braggscope.app.beamline.simulator import start_simulator, state_file_for

    return start_simulator(cfg, port=port, state_file=state_file_for(cfg), set_env=True, exit_with_parent=True)


def _plan(d, sample):
    from braggscope.core.setup import ScanSetup
    from braggscope.plans import sxdm_map

    setup = ScanSetup(energy_kev=8.33, distance_m=0.5, pixel_m=55e-6, cch=(16, 16), detector_shape=(32, 32),
                      delta=18.0)
    return sxdm_map([d["detector"]], d["pix"], (40, 42, 3), d["piy"], (40, 41, 2), d["eta"], ETAS, snake=False,
                    sample=sample, setup=setup, trigger_timeout_s=20.0, move_timeout_s=300.0)


def check_frames(docs) -> dict:
    """Pair each recorded event with its frame by unique id in the detector file and compare the
    frame's sum with the detector's recorded total (independent of braggscope's readers)."""
    import h5py

    from braggscope.storage.frames import UNIQUE_ID_DATASET

    primary = {doc["uid"] for name, doc in docs if name == "descriptor" and doc["name"] == "primary"}
    events = [doc for name, doc in docs if name == "event" and doc["descriptor"] in primary]
    resources = [doc for name, doc in docs if name == "resource"]
    if not events:
        return {"events": 0, "frames_ok": True, "etas_ok": True}
    res = resources[0]
    with h5py.File(Path(res["root"]) / res["resource_path"], "r", swmr=True) as f:
        ids = list(f[UNIQUE_ID_DATASET][()])
        frames = f["/entry/data/data"]
        ok = True
        for ev in events:
            uid = int(ev["data"]["mpx1x4_unique_id"])
            if uid not in ids:
                ok = False
                break
            total = float(frames[ids.index(uid)].sum(dtype=np.float64))
            ok &= total == float(ev["data"]["mpx1x4_stats_total"])
        n_file = len(ids)
    etas = [float(ev["data"]["eta"]) for ev in events if "eta" in ev["data"]]
    return {"events": len(events), "frames_in_file": n_file, "frames_ok": bool(ok),
            "etas_ok": all(min(abs(e - t) for t in ETAS) < 1e-6 for e in etas)}


def run_scenario(name: str, out: Path) -> dict:
    from bluesky import RunEngine

    from braggscope.app.beamline.simulator import stop_simulator
    from braggscope.devices.factory import make_devices
    from braggscope.simulators.ioc_run import free_port
    from braggscope.storage import keep_abort_reason

    port = free_port()
    cfg = setup_config(out, port)
    handle = start_sim(cfg, out, port)
    result = {"scenario": name}
    handles = [handle]
    try:
        d = make_devices(cfg, connect_timeout=20.0)
        d["detector"].cam.acquire_time.put(0.3, wait=True)
        d["eta"].set(ETAS[0]).wait(10)
        RE = RunEngine(call_returns_result=True)
        keep_abort_reason(RE)
        docs = []
        RE.subscribe(lambda n, doc: docs.append((n, doc)))
        killed = {}

        def kill():
            killed["t"] = time.monotonic()
            os.kill(handles[-1].pid, signal.SIGKILL)
            handles[-1].process.wait(5)

        def later(delay, then=kill):
            threading.Thread(target=lambda: (time.sleep(delay), then()), daemon=True).start()

        counts = {}

        def hook(msg):
            key = (msg.command, getattr(msg.obj, "name", None))
            counts[key] = counts.get(key, 0) + 1
            n = counts[key]
            if name == "kill_move" and key == ("set", "eta") and n == 2:
                later(0.15)
            elif name == "kill_trigger" and key == ("trigger", "mpx1x4") and n == 4:
                later(0.1)
            elif name in ("kill_between", "restart_same_port", "restart_new_port") \
                    and key == ("checkpoint", None) and n == 4:
                kill()
                if name != "kill_between":  # the IOC is back (positions reset) before point 4 starts
                    new_port = port if name == "restart_same_port" else free_port()
                    handles.append(start_sim(cfg, out, new_port))
                time.sleep(0.5)

        RE.msg_hook = hook
        t0 = time.monotonic()
        try:
            RE(_plan(d, name))
            result["error"] = ""
        except Exception as exc:  # noqa: BLE001 - reported to the parent test
            result["error"] = f"{type(exc).__name__}: {exc}"
        result["fail_s"] = time.monotonic() - killed.get("t", t0)
        stops = [doc for n, doc in docs if n == "stop"]
        result["exit_status"] = stops[0]["exit_status"] if stops else None
        result["reason"] = stops[0].get("reason", "") if stops else None
        result.update(check_frames(docs))
        if name == "restart_new_port":
            result.update(_reconnect_and_run(cfg, handles[-1], out))
    finally:
        for h in handles:
            stop_simulator(h)
    return result


def _reconnect_and_run(cfg, handle, out: Path) -> dict:
    """The session's reconnect() onto the simulator now on a new port, then a complete run."""
    from braggscope.app.session.reconnect import reconnect_devices

    try:
        d = reconnect_devices(cfg, timeout=20.0)
    except Exception as exc:  # noqa: BLE001 - reported
        return {"reconnected": False, "reconnect_error": f"{type(exc).__name__}: {exc}"}
    from bluesky import RunEngine

    d["detector"].cam.acquire_time.put(0.01, wait=True)
    d["eta"].set(ETAS[0]).wait(10)
    RE = RunEngine(call_returns_result=True)
    docs = []
    result = RE(_plan(d, "after-reconnect"), lambda n, doc: docs.append((n, doc)))
    check = check_frames(docs)
    return {"reconnected": True, "after_exit_status": result.exit_status, "after_events": check["events"],
            "after_frames_ok": check["frames_ok"], "after_port": handle.port}


if __name__ == "__main__":
    scenario, outdir = sys.argv[1], Path(sys.argv[2])
    outdir.mkdir(parents=True, exist_ok=True)
    res = run_scenario(scenario, outdir)
    (outdir / "result.json").write_text(json.dumps(res, indent=2, default=str))
