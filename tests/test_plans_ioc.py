"""Plans and storage against the caproto simulators (Channel Access on loopback).

The shared session simulator (``sim_ioc``/``sim_devices``) serves the quick
tests. Scenarios that kill an IOC or need another true drift run in a child
process with a simulator of their own (its own port and CA environment):
``python tests/test_plans_ioc.py SCENARIO OUTDIR`` writes ``OUTDIR/result.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ioc

HERE = Path(__file__).resolve()


@pytest.fixture(scope="module")
def ioc_catalog(sim_config, sim_devices):
    from bluesky import RunEngine

    from braggscope import storage

    client = storage.open_catalog(sim_config)
    RE = RunEngine(call_returns_result=True)
    storage.subscribe_writer(RE, client)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return RE, client, docs


def test_ioc_sxdm_round_trip_and_schemas(sim_devices, ioc_catalog):
    import bluesky.plan_stubs as bps
    import h5py
    from event_model import DocumentNames, schema_validators

    from braggscope import storage
    from braggscope.plans import sxdm_map

    RE, client, docs = ioc_catalog
    d = sim_devices
    RE(bps.mv(d["delta"], 18.066, d["eta"], 9.0))
    docs.clear()
    uid = RE(sxdm_map([d["detector"]], d["pix"], (49, 51, 4), d["piy"], (49.5, 50.5, 3), d["eta"], [9.0, 9.03],
                      sample="nmc622")).run_start_uids[0]
    for name, doc in docs:
        schema_validators[DocumentNames(name)].validate(doc)
    stack = storage.sxdm_stack(storage.load_run(client, uid))
    frames = stack.frames
    assert frames.shape == (2, 3, 4, 512, 512) and stack.exit_status == "success"
    resources = [doc for name, doc in docs if name == "resource"]
    (resource,) = resources
    path = Path(resource["root"]) / resource["resource_path"]
    with h5py.File(path, "r") as f:
        written = f[resource["resource_kwargs"].get("path", "/entry/data/data")][()]
    got = frames.compute()
    np.testing.assert_array_equal(got[0, 0], written[:4])          # row 0 forward
    np.testing.assert_array_equal(got[0, 1, ::-1], written[4:8])   # row 1 snaked back
    np.testing.assert_array_equal(got[1, 2], written[20:24])
    # measured positions: the raster, to the motor's precision
    np.testing.assert_allclose(stack.positions["pix"][0, 0], np.linspace(49, 51, 4), atol=1e-3)


def test_ioc_limits_refused_before_motion(sim_devices):
    from braggscope.core.errors import ArgumentError
    from braggscope.plans import dry_run, sxdm_map

    d = sim_devices
    before = d["pix"].position
    low, high = d["pix"].limits
    assert (low, high) == (0.0, 100.0)  # from the motor record's soft limits over CA
    plan = sxdm_map([d["detector"]], d["pix"], (95, 105, 5), d["piy"], (49, 51, 3), d["eta"], [9.0])
    with pytest.raises(ArgumentError, match=r"outside its limits \[0, 100\]"):
        dry_run(plan)
    assert d["pix"].position == pytest.approx(before)


def test_ioc_dry_run_estimate(sim_devices):
    from braggscope.plans import dry_run, sxdm_map

    d = sim_devices
    summary = dry_run(sxdm_map([d["detector"]], d["pix"], (49, 51, 5), d["piy"], (49, 51, 4), d["eta"],
                               [9.0, 9.1]))
    assert summary.ok and summary.points == 40
    assert summary.duration_s > 40 * d["detector"].cam.acquire_time.get()


def test_ioc_bcdi_refuses_undersampling(sim_devices):
    from braggscope.core.errors import ArgumentError
    from braggscope.plans import bcdi_rocking

    d = sim_devices
    before, distance = d["eta"].position, d["detector"].distance_m.get()
    with pytest.raises(ArgumentError, match="step_deg"):
        next(iter(bcdi_rocking([d["detector"]], d["eta"], 21.37, size_m=640e-9, d_spacing=2.0425,
                               energy=8.33, step_deg=0.05)))
    d["detector"].distance_m.put(0.4)  # the detector's configuration: too close for this crystal
    try:
        with pytest.raises(ArgumentError, match="distance_m >= "):
            next(iter(bcdi_rocking([d["detector"]], d["eta"], 21.37, size_m=640e-9, d_spacing=2.0425, energy=8.33)))
    finally:
        d["detector"].distance_m.put(distance)
    assert d["eta"].position == pytest.approx(before)


def _scenario(name, tmp_path, timeout=240):
    env = dict(os.environ)
    for key in ("EPICS_CA_ADDR_LIST", "EPICS_CA_SERVER_PORT", "EPICS_CA_REPEATER_PORT"):
        env.pop(key, None)
    out = tmp_path / name
    out.mkdir()
    proc = subprocess.run([sys.executable, str(HERE), name, str(out)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=HERE.parent.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_ioc_killed_mid_scan_fails_cleanly(tmp_path):
    result = _scenario("kill", tmp_path)
    assert result["exit_status"] == "fail"
    # the guard's watchdog names the lost connection at once (the 5 s time-outs are for a stuck device)
    assert result["error"].startswith("DeviceLostError: lost connection to BSSIM:"), result["error"]
    assert result["reason_mentions_device"]
    assert result["n_catalog"] >= result["killed_after"] - 1 and result["n_catalog"] >= 3
    assert result["frames_identical"]
    assert result["simulator_gone"]


@pytest.mark.slow
def test_ioc_calibrated_map_stays_put(tmp_path):
    result = _scenario("drift", tmp_path, timeout=400)
    pixel = result["pixel_um"]
    assert result["calibration_error_um"] < pixel
    assert max(result["spread_corrected"]) < pixel
    assert result["spread_uncorrected"][0] > 2 * pixel


# -- child-process scenarios ---------------------------------------------------------------
def _child_setup(out: Path, sample="nmc622", drift=None):
    for key, value in {"EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
                       "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1", "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
                       "EPICS_CA_MAX_ARRAY_BYTES": str(64 * 1024 * 1024), "MPLBACKEND": "Agg"}.items():
        os.environ[key] = value
    from braggscope.app.beamline.simulator import start_simulator
    from braggscope.core.config import load_config

    cfg = load_config()
    cfg.set("storage.data_dir", str(out / "data"))
    cfg.set("detector.write_path", str(out / "detector"))
    cfg.set("detector.read_path", str(out / "detector"))
    cfg.set("detector.shape", [128, 128])
    cfg.set("detector.cch", [64.0, 64.0])
    cfg.set("simulator.sample", sample)
    if drift is not None:
        cfg.set("simulator.eccentricity", drift)
    (out / "detector").mkdir(parents=True, exist_ok=True)
    handle = start_simulator(cfg, state_file=out / "simulator.json", set_env=True)
    return cfg, handle


def _scenario_kill(out: Path) -> dict:
    import threading

    import bluesky.plan_stubs as bps
    import h5py
    from bluesky import RunEngine

    from braggscope import storage
    from braggscope.app.beamline.simulator import stop_simulator
    from braggscope.devices.factory import make_devices
    from braggscope.plans import sxdm_map

    cfg, handle = _child_setup(out)
    result = {}
    try:
        d = make_devices(cfg, connect_timeout=20.0)
        client = storage.open_catalog(cfg)
        RE = RunEngine(call_returns_result=True)
        storage.subscribe_writer(RE, client)
        events = []
        resources = []
        RE.subscribe(lambda name, doc: events.append(doc) if name == "event" else
                     resources.append(doc) if name == "resource" else None)
        RE(bps.mv(d["delta"], 18.066, d["eta"], 9.0))
        kill_after = 8

        def killer():
            while len(events) < kill_after:
                time.sleep(0.002)
            os.kill(handle.pid, 9)

        threading.Thread(target=killer, daemon=True).start()
        try:
            RE(sxdm_map([d["detector"]], d["pix"], (49, 51, 6), d["piy"], (49, 51, 6), d["eta"], [9.0, 9.05],
                        sample="kill-test", trigger_timeout_s=5.0, move_timeout_s=5.0))
            result["error"] = ""
        except Exception as exc:  # noqa: BLE001 - reported to the parent test
            cause = exc.__cause__ or exc.__context__
            result["error"] = f"{type(exc).__name__}: {exc} <- {cause!r}"
        (run,) = storage.find_runs(client, sample="kill-test")
        stop = run.metadata["stop"]
        result["exit_status"] = stop["exit_status"]
        result["reason"] = stop.get("reason", "")
        result["reason_mentions_device"] = any(k in result["reason"] for k in ("mpx1x4", "pix", "piy", "eta",
                                                                               "did not"))
        frames = np.asarray(run["primary"]["mpx1x4_image"].read()).reshape((-1, 128, 128))
        result["n_catalog"] = int(frames.shape[0])
        result["killed_after"] = kill_after
        res = resources[0]
        with h5py.File(Path(res["root"]) / res["resource_path"], "r", swmr=True) as f:  # writer was killed
            written = f["/entry/data/data"][: frames.shape[0]]
        result["frames_identical"] = bool(np.array_equal(frames, written))
        result["simulator_gone"] = not handle.alive()
    finally:
        stop_simulator(handle)
    return result


def _scenario_drift(out: Path) -> dict:
    import bluesky.plan_stubs as bps
    from bluesky import RunEngine

    from braggscope.app.beamline.simulator import stop_simulator
    from braggscope.core.eccentricity import EccentricityModel
    from braggscope.devices.factory import make_devices
    from braggscope.plans import calibrate_eccentricity, crystal_position, sxdm_map
    from braggscope.simulators.beamline import SimulatedBeamline

    drift = {"eta0": 21.3, "x": [20.0, 0.0], "y": [-12.0, 0.0]}
    cfg, handle = _child_setup(out, sample="lmno_bcdi", drift=drift)
    try:
        sim = SimulatedBeamline.from_config(cfg)  # the same truth the IOC renders with
        setup = sim.bragg_setup()
        d = make_devices(cfg, connect_timeout=20.0)
        RE = RunEngine(call_returns_result=True)
        RE(bps.mv(d["delta"], setup["delta"]))
        n, half = 9, 3.0
        pixel = 2 * half / (n - 1)
        cx, cy = sim.apparent_center(drift["eta0"])
        xr, yr = (cx - half, cx + half, n), (cy - half, cy + half, n)
        etas = list(np.linspace(setup["eta"] - 0.05, setup["eta"] + 0.05, 5))
        model = RE(calibrate_eccentricity([d["detector"]], d["pix"], xr, d["piy"], yr, d["eta"],
                                          etas)).plan_result.fitted
        fine = np.linspace(etas[0], etas[-1], 11)
        rel_fit = np.stack(model.offset(fine)) - np.stack(model.offset(fine[0]))[:, None]
        rel_true = np.stack(sim.eccentricity.offset(fine)) - np.stack(sim.eccentricity.offset(fine[0]))[:, None]

        def spread(m):
            rows = []
            RE(sxdm_map([d["detector"]], d["pix"], xr, d["piy"], yr, d["eta"], etas, eccentricity=m),
               {"event": lambda name, doc: rows.append((doc["data"]["pix"], doc["data"]["piy"],
                                                         doc["data"]["mpx1x4_stats_total"]))})
            t = np.array(rows).reshape(len(etas), n * n, 3)
            com = []
            for i, e in enumerate(etas):
                dx, dy = m.offset(e)
                com.append(crystal_position(t[i, :, 2], t[i, :, 0] - dx, t[i, :, 1] - dy))
            return np.ptp(np.array(com), axis=0).tolist()

        return {"pixel_um": pixel, "calibration_error_um": float(np.abs(rel_fit - rel_true).max()),
                "spread_corrected": spread(model), "spread_uncorrected": spread(EccentricityModel())}
    finally:
        stop_simulator(handle)


if __name__ == "__main__":
    scenario, outdir = sys.argv[1], Path(sys.argv[2])
    sys.path.insert(0, str(HERE.parent.parent))
    res = {"kill": _scenario_kill, "drift": _scenario_drift}[scenario](outdir)
    (outdir / "result.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
