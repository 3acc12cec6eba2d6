"""The operator's scans (``ascan`` ... ``mesh``) with the simulator killed mid-exposure, over Channel Access.

``python -m tests.faults.ca_operator_scans SCAN MODE OUTDIR`` writes ``OUTDIR/result.json``; SCAN is
``ascan``, ``dscan``, ``a2scan``, ``d2scan`` or ``mesh``; MODE ``restart`` (SIGKILL 0.1 s into the 5th
exposure of 0.2 s, the simulator started again on the same port at once) or ``kill`` (not restarted).
The session's RunEngine as ``braggscope shell`` has it: the baseline, the guard (installed by the
commands) and an embedded catalog written by the catalog writer. A child process: the CA client reads
its address list once per process, and the simulator is killed.
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

from tests.faults.ca_scenarios import check_frames, setup_config, start_sim

#: Each command with its arguments (count time 0.2 s, 10 points; the mesh 9).
SCANS = {
    "ascan": lambda c, d: c.ascan(d["pix"], 49, 51, 9, 0.2),
    "dscan": lambda c, d: c.dscan(d["pix"], -1, 1, 9, 0.2),
    "a2scan": lambda c, d: c.a2scan(d["pix"], 49, 51, d["piy"], 49, 51, 9, 0.2),
    "d2scan": lambda c, d: c.d2scan(d["pix"], -1, 1, d["piy"], -1, 1, 9, 0.2),
    "mesh": lambda c, d: c.mesh(d["pix"], 49, 51, 2, d["piy"], 49, 51, 2, 0.2),
}


def run(scan: str, mode: str, out: Path) -> dict:
    from bluesky import RunEngine

    from braggscope import storage
    from braggscope.app.beamline.runengine import install_baseline
    from braggscope.app.beamline.simulator import stop_simulator
    from braggscope.app.commands import make_commands
    from braggscope.devices.factory import make_devices
    from braggscope.simulators.ioc_run import free_port

    port = free_port()
    cfg = setup_config(out, port)
    cfg.set("storage.catalog_server", "off")  # the embedded catalog, written in this process
    handles = [start_sim(cfg, out, port)]
    result = {"scan": scan, "mode": mode}
    try:
        d = make_devices(cfg, connect_timeout=20.0)
        RE = RunEngine(call_returns_result=True)
        install_baseline(RE, d)
        client = storage.open_catalog(cfg)
        storage.subscribe_writer(RE, client)
        docs = []
        RE.subscribe(lambda name, doc: docs.append((name, doc)))
        commands = make_commands(RE, d, cfg=cfg, out=lambda line: None)
        killed = {}

        def kill():
            time.sleep(0.1)  # into the 0.2 s exposure
            killed["t"] = time.monotonic()
            os.kill(handles[-1].pid, signal.SIGKILL)
            handles[-1].process.wait(5)
            if mode == "restart":  # the same port: the clients reconnect to a simulator that forgot everything
                handles.append(start_sim(cfg, out, port))
                killed["restarted"] = time.monotonic()

        triggers = []

        def hook(msg):
            if msg.command == "trigger" and getattr(msg.obj, "name", None) == "mpx1x4":
                triggers.append(msg)
                if len(triggers) == 5:
                    threading.Thread(target=kill, daemon=True).start()

        RE.msg_hook = hook
        t0 = time.monotonic()
        try:
            SCANS[scan](commands, d)
            result["error"] = ""
        except Exception as exc:  # noqa: BLE001 - reported to the parent test
            result["error"] = f"{type(exc).__name__}: {exc}"
        result["fail_s"] = time.monotonic() - killed.get("t", t0)
        RE.msg_hook = None
        stops = [doc for name, doc in docs if name == "stop"]
        result["exit_status"] = stops[-1]["exit_status"] if stops else None
        result["reason"] = stops[-1].get("reason", "") if stops else None
        result.update(check_frames(docs))
        starts = [doc for name, doc in docs if name == "start"]
        if starts:
            result.update(served_frames(storage.load_run(client, starts[-1]["uid"]), docs))
    finally:
        for handle in handles:
            stop_simulator(handle)
    return result


def served_frames(run, docs) -> dict:
    """The frames the catalog serves (Tiled's array client: the server reads the file), each compared
    with the file's frame of its event's unique id (an independent pairing) and the event's total."""
    import h5py

    from braggscope.storage.frames import UNIQUE_ID_DATASET

    table = run["primary"].read(["mpx1x4_unique_id", "mpx1x4_stats_total"])
    ids = [int(u) for u in np.asarray(table["mpx1x4_unique_id"])]
    totals = np.asarray(table["mpx1x4_stats_total"], dtype=np.float64)
    try:
        served = np.asarray(run["primary"]["mpx1x4_image"].read())
    except Exception as exc:  # noqa: BLE001 - reported
        return {"served": None, "served_error": f"{type(exc).__name__}: {exc}"}
    res = [doc for name, doc in docs if name == "resource"][0]
    with h5py.File(Path(res["root"]) / res["resource_path"], "r", swmr=True) as f:
        file_ids = [int(u) for u in f[UNIQUE_ID_DATASET][()]]
        frames = f["/entry/data/data"]
        where = all(u in file_ids and np.array_equal(served[i].reshape(frames.shape[1:]), frames[file_ids.index(u)])
                    for i, u in enumerate(ids))
    sums = [float(served[i].sum(dtype=np.float64)) for i in range(len(ids))]
    return {"served": int(served.shape[0]), "served_where_events_say": bool(where),
            "served_sums_ok": bool(np.array_equal(sums, totals))}


if __name__ == "__main__":
    scan_name, run_mode, outdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    outdir.mkdir(parents=True, exist_ok=True)
    res = run(scan_name, run_mode, outdir)
    (outdir / "result.json").write_text(json.dumps(res, indent=2, default=str))
