"""A day of beamtime over Channel Access: beam dumps, refills and the shutter during step and fly maps.

One simulator per module on loopback (motors, Maxipix, machine, monitor, fly hardware), the session's
RunEngine set-up (baseline with the machine, catalog writer, the beam's suspenders and monitor, guard).
A dump or a refill is asked of the simulated machine by the test's own client: ``SIM:DumpInExposure``
(the beam dumped a set time into the next detector exposure, frame or fly pulse, whatever the load)
armed when the IOC's monitors say an exposure or a line has started, ``SIM:RefillIn``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("tiled")

from bluesky import plan_stubs as bps
from ophyd import EpicsSignal, EpicsSignalRO

from braggscope import storage
from tests.conftest import CA_PORTS
from tests.ioc_fixtures import module_simulator_config

EXPOSURE, NX, NY, DWELL = 0.05, 5, 4, 0.02
DUMP_S, RESUME_S, REFILL_S = 0.5, 0.2, 1.0


@pytest.fixture(scope="module")
def beamline(tmp_path_factory):
    from braggscope.app.beamline.runengine import recording_run_engine
    from braggscope.app.beamline.simulator import start_simulator, stop_simulator
    from braggscope.devices.ca_client import release_devices
    from braggscope.devices.factory import make_devices
    from braggscope.devices.fly import make_flyer
    from braggscope.plans.beam import BeamPolicy
    from braggscope.plans.guard import install_guard
    from braggscope.simulators.beamline import SimulatedBeamline

    root = tmp_path_factory.mktemp("beam")
    cfg = module_simulator_config(root, "BSBEAM:", 64)
    cfg.set("simulator.dump_duration_s", DUMP_S)
    cfg.set("simulator.refill_duration_s", REFILL_S)
    cfg.set("beam.resume_delay_s", RESUME_S)
    handle = start_simulator(cfg, port=CA_PORTS["module"], state_file=root / "sim.json", set_env=False,
                             exit_with_parent=True)
    devices, own = {}, []
    try:
        devices = make_devices(cfg, connect_timeout=30.0)
        flyer = make_flyer(devices, cfg)
        prefix = cfg["pv.machine"]
        own = [EpicsSignal(prefix + "SIM:DumpInExposure", name="dump"),
               EpicsSignal(prefix + "SIM:RefillIn", name="refill"),
               EpicsSignalRO(cfg["pv.detector"] + "cam1:Acquire_RBV", name="acquiring", auto_monitor=True),
               EpicsSignalRO(cfg["pv.fly"] + "STAGE:Busy_RBV", name="sweeping", auto_monitor=True)]
        for signal in own:
            signal.wait_for_connection(timeout=30)
        client = storage.open_catalog(cfg)
        RE = recording_run_engine(devices, client, beam=BeamPolicy.from_config(cfg))
        install_guard(RE)
        setup = SimulatedBeamline.from_config(cfg).bragg_setup()
        RE(bps.mv(devices["delta"], setup["delta"], devices["nu"], 0.0, devices["phi"], 0.0, devices["eta"],
                  setup["eta"]))
        devices["detector"].cam.acquire_time.set(EXPOSURE).wait(5)
        yield {"cfg": cfg, "d": devices, "flyer": flyer, "client": client, "RE": RE, "setup": setup,
               "dump": own[0], "refill": own[1], "acquiring": own[2], "sweeping": own[3]}
    finally:
        try:
            for signal in own:
                signal.destroy()
            release_devices(devices)
        finally:
            stop_simulator(handle)


def _grid(setup, nx=NX, ny=NY):
    cx, cy = setup["center_um"]
    half = float(setup["extent_um"])
    return (cx - half, cx + half, nx), (cy - half, cy + half, ny), [float(setup["eta"])]


def _on_rising(signal, nth, action):
    """Call ``action`` (on its own thread) when ``signal`` goes to 1 for the ``nth`` time; returns an undo."""
    seen = {"n": 0, "last": None}

    def callback(value=None, old_value=None, **kwargs):
        value = 1 if value in (1, "Acquire") else 0
        if value == 1 and seen["last"] == 0:
            seen["n"] += 1
            if seen["n"] == nth:
                threading.Thread(target=action, daemon=True).start()
        seen["last"] = value

    token = signal.subscribe(callback)
    return lambda: signal.unsubscribe(token)


def _step_map(b, **kwargs):
    from braggscope.plans import sxdm_map

    d = b["d"]
    xr, yr, etas = _grid(b["setup"])
    return b["RE"](sxdm_map([d["detector"]], d["pix"], xr, d["piy"], yr, d["eta"], etas, **kwargs))


def _fly_map(b, nx=8, ny=NY):
    from braggscope.plans import sxdm_fly

    d = b["d"]
    xr, yr, etas = _grid(b["setup"], nx, ny)
    return b["RE"](sxdm_fly([b["flyer"]], d["pix"], xr, d["piy"], yr, d["eta"], etas, dwell_s=DWELL))


def _suspensions(run) -> list[dict]:
    if "suspensions" not in run:
        return []
    table = run["suspensions"].read()
    keys = ("suspension_kind", "suspension_reason", "suspension_start", "suspension_end", "suspension_duration_s")
    columns = {k: list(np.asarray(table[k])) for k in keys}
    return [{k.removeprefix("suspension_"): columns[k][i] for k in keys} for i in range(len(columns[keys[0]]))]


def _same_within_noise(a, b):
    """Frame totals of two maps of the same points: independent Poisson draws of the same means."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    z = (a - b) / np.sqrt(a + b + 1.0)
    assert np.max(np.abs(z)) < 5.0, z


def test_a_beam_dump_mid_exposure_retakes_the_point(beamline):
    import h5py

    b = beamline
    reference = storage.load_run(b["client"], _step_map(b).run_start_uids[0])
    # armed during the 6th exposure: the 7th is cut 10 ms after it starts
    undo = _on_rising(b["acquiring"], 6, lambda: b["dump"].put(0.01))
    try:
        result = _step_map(b)
    finally:
        undo()
    assert result.exit_status == "success"
    run = storage.load_run(b["client"], result.run_start_uids[0])
    primary, ref = run["primary"].read(), reference["primary"].read()
    # every point exactly once, where the plan put it
    points = sorted(zip(np.round(primary["pix"].values, 6), np.round(primary["piy"].values, 6)))
    assert points == sorted(zip(np.round(ref["pix"].values, 6), np.round(ref["piy"].values, 6)))
    assert len(set(points)) == NX * NY
    # no frame taken without beam among the accepted ones: the monitor and the frames as undisturbed
    mon = primary["mon1"].values
    assert mon.min() > 0.8 * np.median(ref["mon1"].values)
    assert storage.sxdm_stack(run).monitor == "mon1"  # the reduction normalises by it
    totals = storage.event_frames(run).sum(axis=(1, 2)).compute()
    np.testing.assert_array_equal(totals, primary["mpx1x4_stats_total"].values)  # each event its own frame
    _same_within_noise(totals, storage.event_frames(reference).sum(axis=(1, 2)).compute())
    # the exposure the dump cut is in the file, named by no event, with a fraction of the beam
    path = b["d"]["detector"].hdf5.full_file_name.get()
    with h5py.File(path, "r", swmr=True) as f:
        ids = f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()]
        frames_total = f["/entry/data/data"][()].sum(axis=(1, 2))
    cut = [i for i, uid in enumerate(ids) if uid not in set(primary["mpx1x4_unique_id"].values.tolist())]
    assert len(ids) == NX * NY + 1 and len(cut) == 1
    retaken = cut[0]  # the next frame in the file is the same point, taken again with beam
    assert frames_total[retaken] < 0.5 * frames_total[retaken + 1]
    # the suspension is in the run: when, why, how long
    (record,) = _suspensions(run)
    assert record["kind"] == "current" and "below 10 mA" in record["reason"]
    assert DUMP_S + RESUME_S - 0.1 < record["duration_s"] < DUMP_S + RESUME_S + 3.0
    assert run.metadata["start"]["time"] < record["start"] < record["end"] < run.metadata["stop"]["time"]


def test_a_closed_shutter_pauses_the_map_and_opening_it_resumes(beamline):
    b = beamline
    machine = b["d"]["machine"]
    times = {}

    def close_then_open():
        times["closed"] = time.time()
        machine.close_shutter().wait(5)
        time.sleep(1.0)
        times["opened"] = time.time()
        machine.open_shutter().wait(5)

    undo = _on_rising(b["acquiring"], 4, close_then_open)
    try:
        result = _step_map(b)
    finally:
        undo()
    assert result.exit_status == "success"
    run = storage.load_run(b["client"], result.run_start_uids[0])
    primary = run["primary"].read()
    assert len(primary["time"]) == NX * NY
    stamps = primary["time"].values
    held = (stamps > times["closed"] + 0.1) & (stamps < times["opened"] + RESUME_S - 0.05)
    assert not held.any()  # nothing recorded while the shutter was closed
    assert primary["mon1"].values.min() > 0.8 * np.median(primary["mon1"].values)
    (record,) = _suspensions(run)
    assert record["kind"] == "shutter" and 1.0 + RESUME_S - 0.1 < record["duration_s"] < 1.0 + RESUME_S + 3.0


def test_a_beam_dump_mid_line_flies_the_line_again(beamline):
    b = beamline
    reference = storage.load_run(b["client"], _fly_map(b).run_start_uids[0])
    # armed as the 2nd line starts: its next frame is cut 10 ms into its exposure
    undo = _on_rising(b["sweeping"], 2, lambda: b["dump"].put(0.01))
    try:
        result = _fly_map(b)
    finally:
        undo()
    assert result.exit_status == "success"
    run = storage.load_run(b["client"], result.run_start_uids[0])
    lines = run["lines"].read()
    status = [str(v) for v in np.asarray(lines["fly_line_status"])]
    lost = np.asarray(lines["fly_line_beam_lost"]).astype(bool)
    rows = np.asarray(lines["fly_line_row"])
    assert lost.sum() == 1 and status[int(np.flatnonzero(lost)[0])] == "superseded"
    assert status.count("accepted") == NY and sorted(rows[~lost].tolist()) == list(range(NY))
    assert rows[lost][0] == rows[np.flatnonzero(lost)[0] + 1]  # the lost line flown again next
    # the map: every point once, each with beam, as undisturbed within noise
    stack, ref = storage.sxdm_stack(run), storage.sxdm_stack(reference)
    assert stack.frames.shape == ref.frames.shape == (1, NY, 8, 64, 64)
    assert stack.monitor == "mon1" and stack.monitor_values().shape == (1, NY, 8)  # captured per frame
    primary = run["primary"].read()
    assert primary["mon1"].values.min() > 0.8 * np.median(reference["primary"].read()["mon1"].values)
    _same_within_noise(stack.frames.sum(axis=(-2, -1)).compute(), ref.frames.sum(axis=(-2, -1)).compute())
    # the lost attempt's rows are kept in the files, and they show the beam going
    import h5py

    i = int(np.flatnonzero(lost)[0])
    first, n = int(np.asarray(lines["fly_line_pcap_first"])[i]), int(np.asarray(lines["fly_line_positions"])[i])
    with h5py.File(str(np.asarray(lines["fly_line_pcap_file"])[i]), "r", swmr=True) as f:
        assert f["mon1"][first:first + n].min() < 0.2 * np.median(primary["mon1"].values)
    assert [r["kind"] for r in _suspensions(run)] == ["current"]


def test_a_refill_due_during_a_line_delays_that_line(beamline):
    b = beamline
    machine = b["d"]["machine"]
    refill = {}

    def on_status(value=None, timestamp=None, **kwargs):  # the IOC's time of the change, not this callback's
        if value == "refill":
            refill.setdefault("start", timestamp)
        elif "start" in refill:
            refill.setdefault("end", timestamp)

    token = machine.status.subscribe(on_status, run=False)
    undo = _on_rising(b["sweeping"], 2, lambda: b["refill"].put(0.6))
    try:
        result = _fly_map(b, ny=6)
    finally:
        undo()
        machine.status.unsubscribe(token)
    assert result.exit_status == "success" and {"start", "end"} <= set(refill)
    run = storage.load_run(b["client"], result.run_start_uids[0])
    lines = run["lines"].read()
    assert not np.asarray(lines["fly_line_beam_lost"]).any()  # no line was caught by the refill
    # each sweep, from the stage's Go until it stopped (the event's time is the count's, a little later)
    starts = np.asarray(lines["time"]) - np.asarray(lines["fly_line_duration_s"])
    ends = starts + np.asarray(lines["fly_line_sweep_s"])
    overlap = (starts < refill["end"]) & (ends > refill["start"])
    assert not overlap.any()
    assert (starts > refill["end"]).any()  # the rest of the map came after the refill
    kinds = [r["kind"] for r in _suspensions(run)]
    assert "refill" in kinds
    (held,) = [r for r in _suspensions(run) if r["kind"] == "refill"]
    assert "held for the refill" in held["reason"] and held["end"] >= refill["end"] - 0.1
