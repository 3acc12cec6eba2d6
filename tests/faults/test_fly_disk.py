"""A full disk for a fly map's detector file (issue 20 point 6): the line the writer could not write ends
the run at once, without retries, and the stop reason is the writer's own message.

The simulator (its own process, which writes the files) puts the run's detector and capture files on a
1 MiB tmpfs (root only; skipped where mounting is not permitted); the disk is filled once two lines are in,
when the capture file's chunks are already allocated, so that the detector's frames are what no longer fit.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tiled")

from braggscope import storage
from tests.conftest import CA_PORTS
from tests.ioc_fixtures import module_simulator_config

from .disk import fill, tmpfs

NX, NY, DWELL = 16, 8, 0.01


def test_a_fly_detector_writer_error_ends_the_run_at_once_with_its_message(tmp_path):
    from bluesky import RunEngine
    from bluesky import plan_stubs as bps

    from braggscope.app.beamline.runengine import install_baseline
    from braggscope.app.beamline.simulator import start_simulator, stop_simulator
    from braggscope.devices.ca_client import release_devices
    from braggscope.devices.factory import make_devices
    from braggscope.devices.fly import make_flyer
    from braggscope.plans.fly import FlyLineError, sxdm_fly
    from braggscope.simulators.beamline import SimulatedBeamline

    small = tmp_path / "small"
    small.mkdir()
    with tmpfs(small, "1m"):
        cfg = module_simulator_config(tmp_path, "BSDISK:", 64)
        for key in ("detector.write_path", "detector.read_path"):
            cfg.set(key, str(small))
        handle = start_simulator(cfg, port=CA_PORTS["module"], state_file=tmp_path / "sim.json", set_env=False,
                                 exit_with_parent=True)
        devices, filled = {}, []
        try:
            devices = make_devices(cfg, connect_timeout=30.0)
            flyer = make_flyer(devices, cfg)
            client = storage.open_catalog(cfg)
            RE = RunEngine(call_returns_result=True)
            storage.subscribe_writer(RE, client)
            install_baseline(RE, devices)
            setup = SimulatedBeamline.from_config(cfg).bragg_setup()
            RE(bps.mv(devices["delta"], setup["delta"], devices["nu"], 0.0, devices["phi"], 0.0))

            def fill_after_two_lines(name, doc):
                if name == "event_page" and "fly_line_accepted" in doc["data"] and not filled:
                    if sum(doc["data"]["fly_line_accepted"]) and doc["data"]["fly_line_row"][-1] >= 1:
                        filled.append(fill(small, 4096))

            cx, cy = setup["center_um"]
            half = float(setup["extent_um"])
            plan = sxdm_fly([flyer], devices["pix"], (cx - half, cx + half, NX), devices["piy"],
                            (cy - half, cy + half, NY), devices["eta"], [float(setup["eta"])], dwell_s=DWELL)
            with pytest.raises(FlyLineError, match="could not write its frames"):
                RE(plan, fill_after_two_lines)
        finally:
            try:
                release_devices(devices)
            finally:
                stop_simulator(handle)
                for filler in filled:
                    filler.unlink(missing_ok=True)
    assert filled, "the disk was never filled: no line documented"
    run = storage.find_runs(client, plan_name="sxdm_fly")[0]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "fail"
    assert "No space left on device" in stop["reason"] and "retries" not in stop["reason"], stop["reason"]
    lines = run["lines"].read()
    status = [str(v) for v in np.asarray(lines["fly_line_status"])]
    rows = list(np.asarray(lines["fly_line_row"]))
    assert status[-1] == "write error" and "No space left" in str(np.asarray(lines["fly_line_writer_error"])[-1])
    assert rows.count(rows[-1]) == 1  # the line that could not be written was not flown again
    assert all(s == "accepted" for s in status[:-1]) and len(status) >= 2
