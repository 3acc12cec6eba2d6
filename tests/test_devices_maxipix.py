"""Maxipix device against the simulated areaDetector IOC: documents, files, read-back.

Frames written by the IOC are resolved through ophyd's Resource/Datum documents
with the standard ``AD_HDF5`` handler (area_detector_handlers) and compared with
the HDF5 file and with the IOC's own Stats1 total (computed in the IOC before
the write and sent over Channel Access, an independent path).
"""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import pytest

pytestmark = [pytest.mark.ioc, pytest.mark.timeout(120)]


def _run_count(devices, num):
    import bluesky.plans as bp
    from bluesky import RunEngine

    RE = RunEngine({})
    docs = []
    RE(bp.count([devices["detector"], devices["pix"], devices["eta"]], num=num),
       lambda name, doc: docs.append((name, doc)))
    return docs


def _resolve(docs):
    """Datum id -> frame through the AD_HDF5 handler, as databroker would."""
    from area_detector_handlers.handlers import AreaDetectorHDF5Handler

    resources = {d["uid"]: d for n, d in docs if n == "resource"}
    handlers = {}
    frames = {}
    for name, datum in docs:
        if name != "datum":
            continue
        res = resources[datum["resource"]]
        assert res["spec"] == "AD_HDF5"
        if res["uid"] not in handlers:
            path = Path(res["root"]) / res["resource_path"]
            handlers[res["uid"]] = AreaDetectorHDF5Handler(str(path), **res["resource_kwargs"])
        frames[datum["datum_id"]] = np.asarray(handlers[res["uid"]](**datum["datum_kwargs"]))
    for handler in handlers.values():
        handler.close()
    return frames, resources


def test_describe_and_hints(sim_devices):
    det = sim_devices["detector"]
    docs = _run_count(sim_devices, num=1)
    (descriptor,) = [d for n, d in docs if n == "descriptor"]
    key = descriptor["data_keys"]["mpx1x4_image"]
    assert key["dtype_numpy"] == "<u4" and key["external"] == "FILESTORE:"
    assert tuple(key["shape"]) == (1, 512, 512)
    assert det.hints["fields"] == ["mpx1x4_stats_total", "mpx1x4_roistat1_total"]  # frame total and ROI counter
    assert det.cam.model.get() == "Maxipix (simulated)"


def test_count_documents_resolve_to_the_written_frames(sim_devices, sim_config):
    from event_model import DocumentNames, schema_validators

    docs = _run_count(sim_devices, num=3)
    for name, doc in docs:
        schema_validators[DocumentNames(name)].validate(doc)
    assert docs[-1][1]["exit_status"] == "success"
    events = [d for n, d in docs if n == "event"]
    assert len(events) == 3
    frames, resources = _resolve(docs)
    (resource,) = resources.values()
    path = Path(resource["root"]) / resource["resource_path"]
    assert path.parent == Path(sim_config["detector.read_path"])
    with h5py.File(path, "r") as f:
        on_disk = f["entry/data/data"][()]
    assert on_disk.dtype == np.uint32 and on_disk.shape == (3, 512, 512)
    for i, event in enumerate(events):
        frame = frames[event["data"]["mpx1x4_image"]]
        assert frame.shape == (1, 512, 512)
        np.testing.assert_array_equal(frame[0], on_disk[i])
        assert float(frame.sum()) == event["data"]["mpx1x4_stats_total"] > 0
        assert event["data"]["pix"] == pytest.approx(sim_devices["pix"].position)


def test_frames_follow_the_motors(sim_devices, sim_config):
    """The detector renders at the motors' positions (shared in the server):
    counts rise when the diffractometer is moved to the Bragg condition."""
    from braggscope.simulators.beamline import SimulatedBeamline

    setup = SimulatedBeamline.from_config(sim_config, seed=0).bragg_setup()
    eta, delta, pix, piy = (sim_devices[k] for k in ("eta", "delta", "pix", "piy"))
    start = {m: m.position for m in (eta, delta, pix, piy)}
    try:
        # off the Bragg condition whatever an earlier test left (2 deg in eta: far past the rocking curve)
        eta.set(setup["eta"] + 2.0).wait(60)
        off = _run_count(sim_devices, 1)
        for m, v in ((eta, setup["eta"]), (delta, setup["delta"]),
                     (pix, setup["center_um"][0]), (piy, setup["center_um"][1])):
            m.set(v).wait(60)
        on = _run_count(sim_devices, 1)
    finally:
        for m, v in start.items():
            m.set(v).wait(60)
    peak_off = [d for n, d in off if n == "event"][0]["data"]["mpx1x4_stats_max_value"]
    event_on = [d for n, d in on if n == "event"][0]["data"]
    assert event_on["eta"] == pytest.approx(setup["eta"])
    # a Bragg peak (tens of counts per pixel) appears over the ~1 count/pixel background
    assert event_on["mpx1x4_stats_max_value"] > 3 * peak_off


def test_file_is_readable_while_capturing(sim_devices):
    """SWMR: a live reader follows the file while the plugin still holds it open."""
    det = sim_devices["detector"]
    det.stage()
    try:
        for _ in range(2):
            det.trigger().wait(10)
        path = det.hdf5._fn
        with h5py.File(path, "r", swmr=True) as f:
            dset = f["entry/data/data"]
            assert dset.shape[0] == 2
            assert dset[1].sum() == det.stats.total.get()
        assert det.hdf5.capture.get() == 1
    finally:
        det.unstage()
    assert det.hdf5.capture.get() == 0


def test_bad_file_path_fails_clearly(sim_devices):
    det = sim_devices["detector"]
    old = det.hdf5.write_path_template
    det.hdf5.write_path_template = "/nonexistent-braggscope/a/b/c/d/"
    det.hdf5.read_path_template = "/nonexistent-braggscope/a/b/c/d/"
    try:
        with pytest.raises(OSError, match="does not exist"):
            det.stage()
    finally:
        det.unstage()
        det.hdf5.write_path_template = old
        det.hdf5.read_path_template = old


def test_unreachable_prefix_names_the_pv(sim_ioc, sim_config):
    from braggscope.core.config import Config
    from braggscope.devices.factory import connect, make_devices

    cfg = Config(dict(sim_config))
    cfg.set("pv", dict(sim_config["pv"], piezo="NOPE:"))
    devices = make_devices(cfg)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="NOPE:pix"):
        connect({"piezo": devices["piezo"]}, timeout=1.0)
    assert time.monotonic() - t0 < 10
    with pytest.raises(ValueError, match="pv.piezo"):
        cfg.set("pv", dict(sim_config["pv"], piezo=""))
        make_devices(cfg)


def test_image_waveform_matches_the_file(sim_devices):
    """image1:ArrayData (LONG over CA) carries the same frame as the HDF5 file."""
    import epics

    det = sim_devices["detector"]
    prefix = det.prefix + "image1:"
    det.stage()
    try:
        det.trigger().wait(10)
        path = det.hdf5._fn
        with h5py.File(path, "r", swmr=True) as f:
            last = f["entry/data/data"][-1]
    finally:
        det.unstage()
    rows = epics.caget(prefix + "ArraySize1_RBV")
    cols = epics.caget(prefix + "ArraySize0_RBV")
    data = epics.caget(prefix + "ArrayData", timeout=10)
    assert (rows, cols) == last.shape
    assert data.size == rows * cols          # not truncated
    np.testing.assert_array_equal(data.reshape(rows, cols), last.astype(np.int32))


def test_failed_acquisition_fails_the_trigger_status(sim_devices):
    """Capture on but no file open (directory gone): the IOC reports Error, ophyd raises."""
    det = sim_devices["detector"]
    det.stage()
    try:
        det.hdf5.capture.set(0).wait(5)
        det.hdf5.file_path.set("/nonexistent-braggscope/a/b/c/d/").wait(5)  # not creatable
        det.hdf5.capture.set(1).wait(5)
        with pytest.raises(Exception, match="acquisition failed"):
            det.trigger().wait(10)
    finally:
        det.unstage()
    det.stage()                 # recovers: a good path works again
    try:
        det.trigger().wait(10)
    finally:
        det.unstage()


def test_a_fly_scanner_creates_lazy_components_without_waiting_for_each(sim_ioc):
    """ophyd waits up to 1 s for each lazy component it creates (the cam's ``array_size`` group): on a
    busy machine that timed out while the fly scanner connected. Created here with no server at all,
    nothing waits; the fly scanner's single wait then reports what did not connect."""
    from braggscope.devices.fly import _instantiate_without_waiting
    from braggscope.devices.maxipix import Maxipix

    det = Maxipix("NOWHERE:mpx:", name="offline")
    try:
        _instantiate_without_waiting(det)  # before: TimeoutError "NOWHERE:mpx:cam1:ArraySizeX_RBV ... 1.0-second"
        assert {"array_size_x", "array_size_y", "array_size_z"} <= set(det.cam.array_size._signals)
        assert "dropped_frames" in det.cam._signals
        with pytest.raises(TimeoutError):
            det.wait_for_connection(all_signals=True, timeout=0.5)
    finally:
        det.destroy()


def test_the_configuration_reads_right_after_the_connection(sim_ioc, sim_config, tmp_path):
    """A fresh process reads the detector's configuration as soon as make_devices returns (demo bcdi's
    first step): the lazy configuration signals (cam.acquire_time ...) are connected with the rest."""
    import subprocess
    import sys

    from braggscope.core.config import save_config

    config = save_config(sim_config, tmp_path / "config.toml")
    probe = ("import sys; from braggscope.core.config import load_config; "
             "from braggscope.devices.factory import make_devices; "
             "det = make_devices(load_config(sys.argv[1]), connect_timeout=60.0)['detector']; "
             "print(det.read_configuration()[det.name + '_cam_acquire_time']['value'])")
    done = subprocess.run([sys.executable, "-c", probe, str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) > 0
