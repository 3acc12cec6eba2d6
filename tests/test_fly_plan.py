"""sxdm_fly over Channel Access against the simulator: catalog, reduction, faults, retries, pause.

One simulator (motors + Maxipix + fly hardware) per module on loopback, the catalog in a
temporary directory. The simulated crystal is the packaged NMC622 sample.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("tiled")

from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky.utils import RunEngineInterrupted
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal

from braggscope import storage
from braggscope.core.errors import ArgumentError
from tests.conftest import CA_PORTS
from tests.ioc_fixtures import module_simulator_config

NX, NY, DWELL = 8, 4, 0.005


class SimulatorFaults(Device):
    """The simulated fly hardware's fault switches (``FAULT:`` under ``pv.fly``; simulators/ioc_fly.py)."""

    miss_pulse = Cpt(EpicsSignal, "MissPulse")
    drop_frame = Cpt(EpicsSignal, "DropFrame")
    arm_fail = Cpt(EpicsSignal, "ArmFail")


def _attempts_accepted(name, doc):
    """The ``fly_line_accepted`` values of a ``lines`` stream document (bluesky collects them as pages)."""
    if name == "event_page" and "fly_line_accepted" in doc["data"]:
        return list(doc["data"]["fly_line_accepted"])
    return []


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from braggscope.app.beamline.runengine import install_baseline
    from braggscope.app.beamline.simulator import start_simulator, stop_simulator
    from braggscope.devices.ca_client import release_devices
    from braggscope.devices.factory import make_devices
    from braggscope.devices.fly import make_flyer
    from braggscope.simulators.beamline import SimulatedBeamline

    root = tmp_path_factory.mktemp("fly")
    cfg = module_simulator_config(root, "BSFLYT:", 128)
    handle = start_simulator(cfg, port=CA_PORTS["module"], state_file=root / "sim.json", set_env=False,
                             exit_with_parent=True)
    devices, faults = {}, None
    try:
        devices = make_devices(cfg, connect_timeout=30.0)
        flyer = make_flyer(devices, cfg)
        faults = SimulatorFaults(cfg["pv.fly"] + "FAULT:", name="fly_faults")
        faults.wait_for_connection(timeout=30)
        client = storage.open_catalog(cfg)
        RE = RunEngine(call_returns_result=True)
        storage.subscribe_writer(RE, client)
        install_baseline(RE, devices)
        setup = SimulatedBeamline.from_config(cfg).bragg_setup()
        RE(bps.mv(devices["delta"], setup["delta"], devices["nu"], 0.0, devices["phi"], 0.0))
        yield {"cfg": cfg, "d": devices, "flyer": flyer, "faults": faults, "client": client, "RE": RE,
               "setup": setup}
    finally:
        try:
            if faults is not None:
                faults.destroy()
            release_devices(devices)
        finally:
            stop_simulator(handle)


def _grid(setup, nx=NX, ny=NY, neta=5):
    cx, cy = setup["center_um"]
    half = float(setup["extent_um"])
    return (cx - half, cx + half, nx), (cy - half, cy + half, ny), \
        list(np.linspace(setup["eta_start"], setup["eta_stop"], neta))


def _fly(bench, *, snake=False, nx=NX, ny=NY, neta=5, **kwargs):
    from braggscope.plans.fly import sxdm_fly

    d = bench["d"]
    xr, yr, etas = _grid(bench["setup"], nx, ny, neta)
    return bench["RE"](sxdm_fly([bench["flyer"]], d["pix"], xr, d["piy"], yr, d["eta"], etas, dwell_s=DWELL,
                                snake=snake, **kwargs))


@pytest.mark.slow
def test_fly_map_reduces_like_the_step_map(bench, tmp_path):
    from braggscope.analysis.sxdm import reduce_map
    from braggscope.plans import sxdm_map

    d = bench["d"]
    from braggscope.analysis.live import LiveSXDM

    xr, yr, etas = _grid(bench["setup"], neta=7)
    live = LiveSXDM(announce=False)
    token = bench["RE"].subscribe(live)
    try:
        fly = _fly(bench, snake=True, neta=7)
    finally:
        bench["RE"].unsubscribe(token)
    assert fly.exit_status == "success"
    step_uid = bench["RE"](sxdm_map([d["detector"]], d["pix"], xr, d["piy"], yr, d["eta"], etas,
                                    snake=True)).run_start_uids[0]
    run = storage.load_run(bench["client"], fly.run_start_uids[0])
    stack = storage.sxdm_stack(run)
    assert stack.frames.shape == (7, NY, NX, 128, 128)
    # captured positions on the commanded grid within the encoder resolution (1 nm)
    res = float(bench["d"]["fly"].stage_.enc_res.get())
    pix = stack.positions["pix"]
    np.testing.assert_allclose(pix, np.broadcast_to(np.linspace(*xr), pix.shape), atol=res + 1e-9)
    np.testing.assert_allclose(stack.x, np.linspace(*xr), atol=res + 1e-9)
    fly_maps = reduce_map(stack, progress=False)
    step_stack = storage.sxdm_stack(storage.load_run(bench["client"], step_uid))
    step_maps = reduce_map(step_stack, progress=False)
    both = fly_maps.mask.values & step_maps.mask.values
    assert both.sum() >= 0.5 * step_maps.mask.values.sum() > 0
    fly_total = float(stack.frames.sum().compute())
    assert fly_total > 0 and fly_total == pytest.approx(float(step_stack.frames.sum().compute()), rel=0.05)
    # the live maps filled line by line from the stream datums: every frame, the same intensity map
    assert live.declined is None and live.n_frames == 7 * NY * NX
    live_intensity = live.maps()["intensity"].values
    assert np.corrcoef(live_intensity.ravel(), fly_maps["intensity"].values.ravel())[0, 1] > 0.99
    # the command line reduces the fly run like a step run
    from braggscope.analysis.sxdm.files import load_maps
    from braggscope.app.cli.main import main
    from braggscope.core.config import save_config

    save_config(bench["cfg"], tmp_path / "beamline.toml")
    out = tmp_path / "fly_maps.h5"
    assert main(["--config", str(tmp_path / "beamline.toml"), "reduce", "sxdm", fly.run_start_uids[0][:8],
                 "--out", str(out), "--quiet"]) == 0
    cli_maps = load_maps(out)
    np.testing.assert_allclose(cli_maps.x.values, np.linspace(*xr), atol=res + 1e-9)
    np.testing.assert_array_equal(cli_maps.mask.values, fly_maps.mask.values)
    for name in ("strain", "tilt_altitude", "tilt_azimuth"):
        a, b = fly_maps[name].values[both], step_maps[name].values[both]
        # fly and step maps are independent Poisson draws of the same crystal: they differ by their
        # noise (~1 % of the map's spread at this brightness), far less than the crystal's contrast
        assert np.nanmedian(np.abs(a - b)) < 0.05 * np.nanstd(b), name


def test_missed_pulse_and_dropped_frame_are_retried(bench):
    fault = bench["faults"]
    docs = []
    token = bench["RE"].subscribe(lambda name, doc: docs.append((name, doc)))
    try:
        fault.miss_pulse.set(3).wait(5)
        fly = _fly(bench, ny=3, neta=1)
        fault.drop_frame.set(5).wait(5)
        fly2 = _fly(bench, ny=3, neta=1)
    finally:
        bench["RE"].unsubscribe(token)
    for result in (fly, fly2):
        assert result.exit_status == "success"
        run = storage.load_run(bench["client"], result.run_start_uids[0])
        assert storage.sxdm_stack(run).shape == (1, 3, NX)
        lines = run["lines"].read()
        assert list(np.asarray(lines["fly_line_accepted"])) == [0, 1, 1, 1]
        assert int(np.asarray(lines["fly_line_attempt"])[1]) == 1
    first = storage.load_run(bench["client"], fly.run_start_uids[0])["lines"].read()
    assert int(np.asarray(first["fly_line_pulses"])[0]) == NX - 1
    second = storage.load_run(bench["client"], fly2.run_start_uids[0])["lines"].read()
    assert int(np.asarray(second["fly_line_dropped"])[0]) == 1
    assert int(np.asarray(second["fly_line_frames"])[0]) == NX - 1
    # the short attempts' rows are kept, marked superseded; every row of the run's files is named by it
    for result in (fly, fly2):
        _files_accounted_for(bench, result.run_start_uids[0])


def _files_accounted_for(bench, uid):
    """The run left one detector file and one capture file, both named in its ``lines`` stream; the
    attempts' rows tile them end to end (a superseded attempt's rows are kept, before its retry's); the
    primary stream serves the accepted attempts' rows, read through the catalog as from the files."""
    from pathlib import Path

    import h5py
    import hdf5plugin  # noqa: F401

    from braggscope.storage.sources import local_source

    run = storage.load_run(bench["client"], uid)
    lines = run["lines"].read()
    status = [str(v) for v in np.asarray(lines["fly_line_status"])]
    accepted = np.asarray(lines["fly_line_accepted"]).astype(bool)
    assert status == ["accepted" if a else "superseded" for a in accepted]
    image, pcap = ({str(v) for v in np.asarray(lines[key])} for key in ("fly_line_image_file", "fly_line_pcap_file"))
    assert len(image) == len(pcap) == 1
    image, pcap = image.pop(), pcap.pop()
    tag = "_".join(Path(image).name.split("_")[:2])  # fly_<stamp>_000000.h5 and fly_<stamp>_pcap_000000.h5
    on_disk = {str(p) for p in Path(bench["cfg"]["detector.write_path"]).glob(f"{tag}_*.h5")}
    assert on_disk == {image, pcap}
    frames, positions = np.asarray(lines["fly_line_frames"]), np.asarray(lines["fly_line_positions"])
    first_frame, first_position = np.asarray(lines["fly_line_image_first"]), np.asarray(lines["fly_line_pcap_first"])
    np.testing.assert_array_equal(first_frame, np.concatenate([[0], np.cumsum(frames)[:-1]]))
    np.testing.assert_array_equal(first_position, np.concatenate([[0], np.cumsum(positions)[:-1]]))
    with h5py.File(image, "r", swmr=True) as f:  # SWMR, as the in-process catalog opened it
        on_file = f["entry/data/data"][()]
    with h5py.File(pcap, "r", swmr=True) as f:
        pix_on_file = f["pix"][()]
    assert on_file.shape[0] == frames.sum() and pix_on_file.shape[0] == positions.sum()
    rows = np.concatenate([np.arange(a, a + n) for a, n, ok in zip(first_frame, frames, accepted) if ok])
    assert [str(p) for p in local_source(run["primary"]["mpx1x4_image"]).paths] == [image]
    np.testing.assert_array_equal(run["primary"]["mpx1x4_image"].read(), on_file[rows])  # through the catalog
    captured = np.concatenate([np.arange(a, a + n) for a, n, ok in zip(first_position, positions, accepted) if ok])
    np.testing.assert_array_equal(np.asarray(run["primary"]["pix"].read()), pix_on_file[captured])
    stack = storage.sxdm_stack(run).frames  # from the files directly
    np.testing.assert_array_equal(np.asarray(stack).reshape(on_file[rows].shape), on_file[rows])


def test_trigger_unit_that_will_not_arm_fails_the_run(bench):
    from bluesky.utils import FailedStatus

    fault = bench["faults"]
    RE = bench["RE"]
    armed = {"lines": 0}

    def break_after_two(name, doc):
        for _ in _attempts_accepted(name, doc):
            armed["lines"] += 1
            if armed["lines"] == 2:
                fault.arm_fail.put(1)

    token = RE.subscribe(break_after_two)
    try:
        with pytest.raises(Exception) as info:
            _fly(bench, ny=4, neta=1)
    finally:
        RE.unsubscribe(token)
        fault.arm_fail.set(0).wait(5)
    assert isinstance(info.value, (FailedStatus, RuntimeError))
    run = storage.find_runs(bench["client"], plan_name="sxdm_fly")[0]
    assert run.metadata["stop"]["exit_status"] == "fail"
    reason = run.metadata["stop"]["reason"]  # the scanner's own words, not bluesky's Status(...) repr
    assert "did not start" in reason and "did not arm" in reason and "Status(" not in reason, reason
    # the lines taken before the failure (the two seen, and the one flying when the unit broke: a line is
    # documented while the next sweeps) are in the run and readable
    taken = int(np.asarray(run["lines"].read()["fly_line_accepted"]).sum())
    assert taken == 3
    assert run["primary"]["mpx1x4_image"].shape[0] == taken * NX
    assert np.asarray(run["primary"]["pix"].read()).shape == (taken * NX,)


def test_pause_between_lines_and_resume(bench):
    from braggscope.plans.fly import sxdm_fly

    d, RE = bench["d"], bench["RE"]
    xr, yr, etas = _grid(bench["setup"], NX, 3, 2)
    seen = {"n": 0}

    def pause_once(name, doc):
        for _ in _attempts_accepted(name, doc):
            seen["n"] += 1
            if seen["n"] == 2:  # as Ctrl-C once would: a deferred pause, asked from another thread
                threading.Thread(target=RE.request_pause, kwargs={"defer": True}).start()

    token = RE.subscribe(pause_once)
    try:
        with pytest.raises(RunEngineInterrupted):
            RE(sxdm_fly([bench["flyer"]], d["pix"], xr, d["piy"], yr, d["eta"], etas, dwell_s=DWELL))
        assert RE.state == "paused"
        assert seen["n"] < 6  # paused before the last line
        result = RE.resume()
    finally:
        RE.unsubscribe(token)
    assert result.exit_status == "success"
    stack = storage.sxdm_stack(storage.load_run(bench["client"], result.run_start_uids[0]))
    assert stack.shape == (2, 3, NX)
    np.testing.assert_allclose(stack.positions["piy"][:, :, 0], np.broadcast_to(np.linspace(*yr)[None, :], (2, 3)),
                               atol=1e-3)


def test_immediate_pauses_keep_every_line_once(bench):
    """Immediate pauses (Ctrl-C twice) as a line is kicked off (the trigger unit armed) and as a line is
    documented. After each resume the map goes on; every line is flown once (a replay from the checkpoint
    would fly a kicked-off line again), at its slow position, and every row of the run's files is named."""
    from braggscope.plans.fly import sxdm_fly

    d, RE = bench["d"], bench["RE"]
    xr, yr, etas = _grid(bench["setup"], NX, 4, 2)
    counts = {"armed": 0, "documented": 0}

    def at_arming(value, old_value, **kwargs):  # the trigger unit armed: a kickoff in progress
        if value == 1 and old_value != 1:
            counts["armed"] += 1
            if counts["armed"] in (2, 6):
                threading.Thread(target=RE.request_pause, kwargs={"defer": False}).start()

    def at_documents(name, doc):
        for _ in _attempts_accepted(name, doc):
            counts["documented"] += 1
            if counts["documented"] == 4:
                threading.Thread(target=RE.request_pause, kwargs={"defer": False}).start()

    armed = d["fly"].pcomp.armed.subscribe(at_arming, run=False)
    token = RE.subscribe(at_documents)
    pauses, result = 0, None
    try:
        try:
            result = RE(sxdm_fly([bench["flyer"]], d["pix"], xr, d["piy"], yr, d["eta"], etas, dwell_s=DWELL))
        except RunEngineInterrupted:
            pauses += 1
        while result is None:
            try:
                result = RE.resume()
            except RunEngineInterrupted:
                pauses += 1
    finally:
        RE.unsubscribe(token)
        d["fly"].pcomp.armed.unsubscribe(armed)
    assert pauses >= 2 and result.exit_status == "success"
    run = storage.load_run(bench["client"], result.run_start_uids[0])
    assert list(np.asarray(run["lines"].read()["fly_line_accepted"])) == [1] * 8  # no line flown twice
    stack = storage.sxdm_stack(run)
    assert stack.shape == (2, 4, NX)
    np.testing.assert_allclose(stack.positions["piy"][:, :, 0], np.broadcast_to(np.linspace(*yr)[None, :], (2, 4)),
                               atol=1e-3)
    _files_accounted_for(bench, result.run_start_uids[0])


def test_arguments_refused_before_motion(bench):
    from braggscope.plans.fly import sxdm_fly

    d = bench["d"]
    before = d["pix"].position
    xr, yr, etas = _grid(bench["setup"])
    with pytest.raises(ArgumentError, match="dwell_s"):
        list(sxdm_fly([bench["flyer"]], d["pix"], xr, d["piy"], yr, d["eta"], etas, dwell_s=0.0002))
    with pytest.raises(ArgumentError, match="um/s"):
        list(sxdm_fly([bench["flyer"]], d["pix"], (0.0, 90.0, 3), d["piy"], yr, d["eta"], etas, dwell_s=0.001))
    with pytest.raises(ArgumentError, match="dwell_s"):
        list(sxdm_fly([bench["flyer"]], d["pix"], xr, d["piy"], yr, d["eta"], etas, dwell_s=float("nan")))
    with pytest.raises(ArgumentError, match="fly scanner"):
        list(sxdm_fly([d["detector"]], d["pix"], xr, d["piy"], yr, d["eta"], etas, dwell_s=DWELL))
    assert d["pix"].position == before


@pytest.mark.slow
def test_fly_calibration_maps_agree_with_the_step_calibration(bench):
    from braggscope.app.commands import make_commands
    from braggscope.plans import calibrate_eccentricity

    d, setup = bench["d"], bench["setup"]
    cx, cy = setup["center_um"]
    half, n = float(setup["extent_um"]) + 1.0, 9
    etas = list(np.linspace(setup["eta"], setup["eta"] + 0.33, 4))  # where the reflection shows
    ranges = (d["pix"], (cx - half, cx + half, n), d["piy"], (cy - half, cy + half, n), d["eta"], etas)
    # flown as the operator's session does it: calibrate(..., fly=True) with the session's fly scanner
    commands = make_commands(bench["RE"], d, cfg=bench["cfg"])
    fly = commands.calibrate(*ranges[1:4:2], etas, fly=True, dwell_s=DWELL, quadratic=False, cfg=None)
    d["detector"].cam.acquire_time.set(DWELL).wait(10)
    step = bench["RE"](calibrate_eccentricity([d["detector"]], *ranges, intensity_field="mpx1x4_stats_total",
                                              quadratic=False)).plan_result
    assert fly.signal == step.signal == "diffraction" and len(fly.eta) == len(step.eta) >= 3
    # the same crystal positions at every angle (frame totals of the flown maps = the step maps' Stats1
    # totals, up to their Poisson noise): well within a map pixel
    pixel = 2 * half / (n - 1)
    assert np.max(np.abs(np.asarray(fly.x_um) - np.asarray(step.x_um))) < 0.2 * pixel
    assert np.max(np.abs(np.asarray(fly.y_um) - np.asarray(step.y_um))) < 0.2 * pixel


def test_dry_run_estimates_the_fly_map(bench):
    from braggscope.plans import dry_run
    from braggscope.plans.dryrun import FLY_LINE_OVERHEAD_S
    from braggscope.plans.fly import sxdm_fly

    d = bench["d"]
    nx = 200  # long lines: a step scan's per-point cost (15 ms a point) would add 36 s
    xr, yr, etas = _grid(bench["setup"], nx, NY, 3)
    before = d["pix"].position
    summary = dry_run(sxdm_fly([bench["flyer"]], d["pix"], xr, d["piy"], yr, d["eta"], etas, dwell_s=DWELL))
    assert summary.plan_names == ["sxdm_fly"] and summary.points == nx * NY * 3 and summary.ok
    flown = nx * NY * 3 * DWELL + NY * 3 * FLY_LINE_OVERHEAD_S
    # the lines' dwell and overhead, and the moves of eta and the slow axis at the motors' velocities
    # (at most the way to the start, then each range up and back at every angle): nothing per point
    y_way = abs(yr[0] - d["piy"].position) + 2 * 3 * abs(yr[1] - yr[0])
    eta_way = abs(etas[0] - d["eta"].position) + abs(etas[-1] - etas[0])
    moves = y_way / float(d["piy"].velocity.get()) + eta_way / float(d["eta"].velocity.get())
    assert flown <= summary.duration_s <= flown + moves
    assert d["pix"].position == before


def test_position_capture_writes_one_file_while_capture_is_on(bench, tmp_path):
    """The simulated PCAP appends every armed line to the file that Capture = 1 opened; without an open
    file a line captures nothing and says so; a missing directory is refused."""
    import h5py

    hw = bench["d"]["fly"]
    pcap, pcomp, stage = hw.pcap, hw.pcomp, hw.stage_
    for sig, value in ((stage.start, 1.0), (stage.stop_at, 2.0), (stage.velocity, 100.0), (pcomp.start, 1.0),
                       (pcomp.step, 0.25), (pcomp.width, 0.001), (pcomp.pulses, 4),
                       (pcap.file_path, str(tmp_path)), (pcap.file_name, "cap"), (pcap.file_number, 7)):
        sig.set(value).wait(10)

    def line():
        pcomp.arm.put(1, wait=True)
        stage.go.put(1, wait=True, timeout=30)
        return str(pcomp.status.get(use_monitor=False))

    try:
        pcap.capture.set(1).wait(10)
        assert line() == "done: 4 pulses" and line() == "done: 4 pulses"
        assert int(pcap.captured.get(use_monitor=False)) == 8
        path = str(pcap.full_file_name.get(use_monitor=False))
        assert path == str(tmp_path / "cap_000007.h5")
        pcap.capture.set(0).wait(10)
        with h5py.File(path, "r") as f:
            assert [f[name].shape for name in ("pix", "piy", "time")] == [(8,)] * 3
            np.testing.assert_allclose(f["pix"][:4], f["pix"][4:], atol=2e-3)  # the same line twice
        assert "not captured" in line()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cap_000007.h5"]
        pcap.file_path.set(str(tmp_path / "absent")).wait(10)
        pcap.capture.put(1, wait=True, timeout=10)  # refused: stays 0, no file
        assert int(pcap.capture.get(use_monitor=False)) == 0
        assert not (tmp_path / "absent").exists()
    finally:
        pcap.capture.put(0, wait=True)


def test_a_run_whose_files_cannot_open_fails_before_motion(bench, tmp_path):
    from braggscope.plans.fly import sxdm_fly

    d, flyer = bench["d"], bench["flyer"]
    hdf = flyer.detector.hdf5
    write, read = hdf.write_path_template, hdf.read_path_template
    before = (d["piy"].position, d["eta"].position)
    xr, yr, etas = _grid(bench["setup"], NX, 2, 1)
    hdf.write_path_template = hdf.read_path_template = str(tmp_path / "absent") + "/"
    try:
        with pytest.raises(RuntimeError, match="did not open its file.*detector.write_path"):
            bench["RE"](sxdm_fly([flyer], d["pix"], xr, d["piy"], yr, d["eta"], etas, dwell_s=DWELL))
    finally:
        hdf.write_path_template, hdf.read_path_template = write, read
    assert (d["piy"].position, d["eta"].position) == before
    assert int(hdf.capture.get(use_monitor=False)) == 0


def test_kmap_flies_the_sessions_map_with_its_eccentricity(bench):
    from braggscope.app.commands import make_commands
    from braggscope.core.eccentricity import EccentricityModel

    d = bench["d"]
    xr, yr, etas = _grid(bench["setup"], NX, 2, 2)
    model = EccentricityModel(eta0=float(etas[0]), x=(0.2, 0.0), y=(-0.1, 0.0))
    commands = make_commands(bench["RE"], d, cfg=bench["cfg"], eccentricity=model, out=lambda *a: None)
    result = commands.kmap(xr, yr, etas, DWELL, snake=True)
    run = storage.load_run(bench["client"], result.run_start_uids[0])
    start = run.metadata["start"]
    assert start["plan_name"] == "sxdm_fly" and start["shape"] == [2, 2, NX]
    assert EccentricityModel.coerce(start["eccentricity"], "e") == model
    stack = storage.sxdm_stack(run)
    assert stack.shape == (2, 2, NX)
    # every line flown where the model puts the crystal at its angle: captured x less the offset on the grid
    dx, _ = model.offset(np.asarray(etas))
    res = float(d["fly"].stage_.enc_res.get())
    pix = stack.positions["pix"]
    np.testing.assert_allclose(pix - np.asarray(dx)[:, None, None],
                               np.broadcast_to(np.linspace(*xr), pix.shape), atol=res + 1e-9)
    assert commands.flyer() is commands.flyer()  # made once
