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
                      sample="toy", energy_kev=8.33, distance_m=0.5, pixel_m=55e-6, cch=(8, 12),
                      detector_shape=SHAPE, delta=18.0, nu=0.0, phi=0.0)).run_start_uids[0]
    # every document validates against event-model's schemas
    names = set()
    for name, doc in docs:
        schema_validators[DocumentNames(name)].validate(doc)
        names.add(name)
    assert {"start", "descriptor", "resource", "datum", "event", "stop"} <= names
    run = storage.load_run(client, uid)
    frames, meta = storage.sxdm_stack(run)
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
    assert meta["setup"].energy_kev == 8.33 and meta["raster"]["snake"] is True
    assert meta["eccentricity"]["x"] == [0.5, 0.0] and meta["sample"] == "toy"
    assert meta["detector"] == "mpx1x4" and meta["setup"].cch == (8.0, 12.0) and meta["exit_status"] == "success"
    np.testing.assert_allclose(meta["pix"][1, 2], np.linspace(10, 14, 5) + 0.0)
    assert [r.metadata["start"]["uid"] for r in storage.find_runs(client, sample="toy")][0] == uid
    scan_id = run.metadata["start"]["scan_id"]
    assert storage.load_run(client, scan_id).metadata["start"]["uid"] == uid
    assert storage.load_run(client, uid[:8]).metadata["start"]["uid"] == uid
    assert storage.load_run(client, -1).metadata["start"]["uid"] == uid  # the latest run


def test_rocking_round_trip(setup):
    RE, client, d, docs = setup
    uid = RE(bcdi_rocking([d.det], d.eta, 20.0, size_m=800e-9, d_spacing=2.0425, energy_kev=13.0,
                          distance_m=1.4, pixel_m=55e-6, eta_range=0.05, reflection=(0, 0, 4))).run_start_uids[0]
    frames, meta = storage.rocking_stack(storage.load_run(client, uid))
    written = _file_frames(d.det)
    np.testing.assert_array_equal(frames.compute(), written)
    assert frames.shape[0] == len(meta["eta"]) == 7
    np.testing.assert_allclose(meta["eta"], written[:, 0, 2] / 1000, atol=1e-3)
    assert meta["reflection"] == [0, 0, 4] and meta["oversampling_rocking"] >= 2


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
    frames, _ = storage.sxdm_stack(run)
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


class _FakeRun:
    def __init__(self, uid, scan_id, time_):
        self.metadata = {"start": {"uid": uid, "scan_id": scan_id, "time": time_}}


class _FakeCatalog(dict):
    """The part of a Tiled container ``load_run`` uses: keys, items and an equality search."""

    def search(self, query):
        field = query.key.split(".")[-1]
        return _FakeCatalog({k: r for k, r in self.items() if r.metadata["start"].get(field) == query.value})


def test_load_run_from_text_scan_id_uid_prefix_and_all_digit_prefix():
    runs = {"12345678-aaaa": _FakeRun("12345678-aaaa", 7, 1.0),
            "abcdef01-bbbb": _FakeRun("abcdef01-bbbb", 8, 2.0),
            "00000042-cccc": _FakeRun("00000042-cccc", 42, 3.0)}
    client = _FakeCatalog(runs)
    assert storage.load_run_from_text(client, "8") is runs["abcdef01-bbbb"]        # a scan id
    assert storage.load_run_from_text(client, "abcdef") is runs["abcdef01-bbbb"]   # a uid prefix
    # all digits but no run has that scan id: the uid prefix (a CLI got 'no run with scan_id' here)
    assert storage.load_run_from_text(client, "12345678") is runs["12345678-aaaa"]
    assert storage.load_run_from_text(client, "42") is runs["00000042-cccc"]       # scan id wins
    assert storage.load_run_from_text(client, "-1") is runs["00000042-cccc"]       # the latest
    with pytest.raises(KeyError, match="only 3 runs"):
        storage.load_run_from_text(client, "-4")
    with pytest.raises(KeyError, match="matches 0 runs"):
        storage.load_run_from_text(client, "999")
