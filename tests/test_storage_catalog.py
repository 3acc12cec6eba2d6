"""Embedded catalog: round trips, document schemas, failures, pause/resume/abort (no EPICS)."""

import threading
import time

import h5py
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.utils import FailedStatus, RunEngineInterrupted
from event_model import DocumentNames, schema_validators

from braggscope import storage
from braggscope.core.config import load_config
from braggscope.core.eccentricity import EccentricityModel
from braggscope.core.setup import ScanSetup
from braggscope.plans import bcdi_rocking, sxdm_map
from braggscope.simulators.inprocess import HDF5ImageDetector, LimitedSynAxis

SHAPE = (16, 24)


class Devices:
    """Motors and a detector whose frame encodes the motor positions (an independent truth)."""

    def __init__(self, write_dir):
        self.pix = LimitedSynAxis(name="pix", limits=(0, 100))
        self.piy = LimitedSynAxis(name="piy", limits=(0, 100))
        self.eta = LimitedSynAxis(name="eta", limits=(-5, 120))
        self.fail_after = None
        self.count = 0
        self.det = HDF5ImageDetector(render=self.render, write_dir=write_dir, shape=SHAPE)

    def render(self):
        self.count += 1
        if self.fail_after is not None and self.count > self.fail_after:
            raise TimeoutError("mpx1x4: no response from the IOC (simulated kill)")
        rng = np.random.default_rng(self.count)
        frame = rng.poisson(3.0, SHAPE).astype(np.uint32)
        frame[0, 0] = int(round(self.pix.position * 1000))
        frame[0, 1] = int(round(self.piy.position * 1000))
        frame[0, 2] = int(round(self.eta.position * 1000))
        return frame


@pytest.fixture(scope="session")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    cfg = load_config()
    cfg.set("storage.data_dir", str(root / "data"))
    cfg.set("detector.read_path", str(root / "detector"))
    client = storage.open_catalog(cfg)
    return cfg, client, root / "detector"


@pytest.fixture()
def setup(catalog):
    cfg, client, det_dir = catalog
    devs = Devices(det_dir)
    docs = []
    RE = RunEngine(call_returns_result=True)
    storage.subscribe_writer(RE, client)
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return RE, client, devs, docs


def _file_frames(det):
    with h5py.File(det.last_path, "r") as f:
        return f["/entry/data/data"][()]


def test_sxdm_round_trip_and_schemas(setup):
    RE, client, d, docs = setup
    model = EccentricityModel(eta0=10.0, x=(0.5, 0.0), y=(-0.25, 0.0))
    etas = [9.5, 10.0, 10.5]
    uid = RE(sxdm_map([d.det], d.pix, (10, 14, 5), d.piy, (20, 23, 4), d.eta, etas, eccentricity=model,
                      sample="toy", setup=ScanSetup(energy_kev=8.33, distance_m=0.5, pixel_m=55e-6, cch=(8, 12),
                                                    detector_shape=SHAPE, delta=18.0))).run_start_uids[0]
    # every document validates against event-model's schemas
    names = set()
    for name, doc in docs:
        schema_validators[DocumentNames(name)].validate(doc)
        names.add(name)
    assert {"start", "descriptor", "resource", "datum", "event", "stop"} <= names
    run = storage.load_run(client, uid)
    stack = storage.sxdm_stack(run)
    frames = stack.frames
    assert frames.shape == (3, 4, 5) + SHAPE and frames.dtype == np.uint32
    written = _file_frames(d.det)
    got = frames.compute()
    # independent check of the raster order: the frames encode where the motors were
    for i, e in enumerate(etas):
        dx, dy = model.offset(e)
        for j, y in enumerate(np.linspace(20, 23, 4)):
            for k, x in enumerate(np.linspace(10, 14, 5)):
                f = got[i, j, k]
                assert f[0, 0] == round((x + dx) * 1000) and f[0, 1] == round((y + dy) * 1000)
                assert f[0, 2] == round(e * 1000)
    # identical to what the detector wrote, frame by frame (snake: row 1 reversed)
    np.testing.assert_array_equal(got[0, 0], written[:5])
    np.testing.assert_array_equal(got[0, 1, ::-1], written[5:10])
    assert stack.setup.energy_kev == 8.33 and stack.metadata["raster"]["snake"] is True
    assert stack.eccentricity["x"] == [0.5, 0.0] and stack.metadata["sample"] == "toy"
    assert stack.setup.detector == "mpx1x4" and stack.setup.cch == (8.0, 12.0) and stack.exit_status == "success"
    assert stack.source == f"run {uid}" and (stack.fast, stack.slow) == ("pix", "piy")
    np.testing.assert_allclose(stack.positions["pix"][1, 2], np.linspace(10, 14, 5) + 0.0)
    assert [r.metadata["start"]["uid"] for r in storage.find_runs(client, sample="toy")][0] == uid
    scan_id = run.metadata["start"]["scan_id"]
    assert storage.load_run(client, scan_id).metadata["start"]["uid"] == uid
    assert storage.load_run(client, uid[:8]).metadata["start"]["uid"] == uid
    assert storage.load_run(client, -1).metadata["start"]["uid"] == uid  # the latest run


def test_rocking_round_trip(setup):
    RE, client, d, docs = setup
    d.det.distance_m.put(1.4)  # the detector's configuration (pixel: 55 um by default)
    uid = RE(bcdi_rocking([d.det], d.eta, 20.0, size_m=800e-9, d_spacing=2.0425, energy=13.0,
                          eta_range=0.05, reflection=(0, 0, 4))).run_start_uids[0]
    stack = storage.rocking_stack(storage.load_run(client, uid))
    written = _file_frames(d.det)
    np.testing.assert_array_equal(stack.frames.compute(), written)
    assert stack.frames.shape[0] == stack.n_eta == 7
    np.testing.assert_allclose(stack.eta, written[:, 0, 2] / 1000, atol=1e-3)
    assert stack.d_spacing == 2.0425 and stack.size_m == 800e-9
    assert stack.metadata["reflection"] == [0, 0, 4] and stack.metadata["oversampling_rocking"] >= 2


def test_failure_mid_scan_keeps_frames(setup):
    RE, client, d, docs = setup
    d.fail_after = 7
    with pytest.raises(FailedStatus) as err:
        RE(sxdm_map([d.det], d.pix, (10, 14, 5), d.piy, (20, 23, 4), d.eta, [10.0], sample="fail-test"))
    assert "no response from the IOC" in str(err.value.__cause__)
    (run,) = storage.find_runs(client, sample="fail-test")
    assert run.metadata["stop"]["exit_status"] == "fail"
    assert "mpx1x4" in run.metadata["stop"]["reason"]
    frames = np.asarray(run["primary"]["mpx1x4_image"].read())
    frames = frames.reshape((-1,) + SHAPE)
    np.testing.assert_array_equal(frames, _file_frames(d.det))
    assert frames.shape[0] == 7
    with pytest.raises(ValueError, match="incomplete: 7 of 20 points"):
        storage.sxdm_stack(run)


def _slow(devs, delay=0.02):
    render = devs.det._render

    def slow_render():
        time.sleep(delay)
        return render()

    devs.det._render = slow_render


def _request_from_thread(devs, after, action):
    """Call ``action`` from another thread once ``after`` frames were taken (like Ctrl-C)."""

    def target():
        t0 = time.monotonic()
        while devs.count < after and time.monotonic() - t0 < 20:
            time.sleep(0.005)
        action()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def test_pause_resume_loses_nothing(setup):
    RE, client, d, docs = setup
    _slow(d)
    _request_from_thread(d, 5, lambda: RE.request_pause(defer=True))  # the first Ctrl-C
    with pytest.raises(RunEngineInterrupted):
        RE(sxdm_map([d.det], d.pix, (10, 14, 5), d.piy, (20, 23, 4), d.eta, [10.0, 11.0], sample="pause-test"))
    assert RE.state == "paused"
    taken = d.count
    assert 5 <= taken < 40
    RE.resume()
    (run,) = storage.find_runs(client, sample="pause-test")
    assert run.metadata["stop"]["exit_status"] == "success"
    frames = storage.sxdm_stack(run).frames
    assert frames.shape[:3] == (2, 4, 5)
    # nothing lost, nothing doubled: each frame still encodes its own raster position
    got = frames.compute()
    np.testing.assert_array_equal(got[1, 0, :, 0, 0], np.round(np.linspace(10, 14, 5) * 1000))
    assert len(np.unique(got[:, :, :, 0, :2].reshape(-1, 2), axis=0)) == 20


def test_abort_keeps_frames_taken(setup):
    RE, client, d, docs = setup
    _slow(d)
    _request_from_thread(d, 4, lambda: RE.request_pause(defer=False))  # Ctrl-C twice: pause now
    with pytest.raises(RunEngineInterrupted):
        RE(sxdm_map([d.det], d.pix, (10, 14, 5), d.piy, (20, 23, 4), d.eta, [10.0], sample="abort-test"))
    assert RE.state == "paused"
    RE.abort("operator abort")
    (run,) = storage.find_runs(client, sample="abort-test")
    assert run.metadata["stop"]["exit_status"] == "abort"
    frames = np.asarray(run["primary"]["mpx1x4_image"].read()).reshape((-1,) + SHAPE)
    np.testing.assert_array_equal(frames, _file_frames(d.det)[: frames.shape[0]])
    # every point whose event was emitted before the abort is in the catalog (the point being
    # measured at the immediate pause is discarded, as bluesky does)
    uid = run.metadata["start"]["uid"]
    descriptors = {doc["uid"] for name, doc in docs if name == "descriptor" and doc["run_start"] == uid}
    emitted = sum(1 for name, doc in docs if name == "event" and doc["descriptor"] in descriptors)
    assert frames.shape[0] == emitted >= 3
