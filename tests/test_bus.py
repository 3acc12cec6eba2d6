"""The document bus: publishing on NATS JetStream and ``braggscope live`` in another process or host.

Real in-process RunEngine runs (simulated beamline, HDF5 detector files) are
published; ``braggscope live`` runs as a separate process and its maps are
compared with those of a ``LiveSXDM`` fed directly in the acquisition process.
The machine's broker (127.0.0.1:4222) serves the plain tests; the outage and
slow-broker tests start their own ``nats-server`` on a free loopback port with
their own store, and the cross-host test builds two network namespaces joined
by a veth pair. Run as a script (``python tests/test_bus.py acquire ...``) this
file is the acquisition process of the cross-host test.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

NATS_URL = "nats://127.0.0.1:4222"
REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.bus


# -- the acquisition ------------------------------------------------------------------

def acquire(det_dir, callbacks, *, nx=6, ny=5, n_eta=2, rows=32):
    """One real ``sxdm_map`` run with in-process devices; returns (documents, local LiveSXDM maps, seconds)."""
    import bluesky.plan_stubs as bps
    from bluesky import RunEngine

    from braggscope.analysis.live import LiveSXDM
    from braggscope.core.config import load_config
    from braggscope.plans import sxdm_map
    from braggscope.simulators.beamline import SimulatedBeamline
    from braggscope.simulators.inprocess import make_inprocess_devices

    cfg = load_config()
    cfg.set("detector.shape", [rows, rows])
    cfg.set("detector.cch", [rows / 2.0, rows / 2.0])
    sim = SimulatedBeamline.from_config(cfg, sample="nmc622", seed=0)
    devs = make_inprocess_devices(sim, det_dir, limits=cfg["limits"])
    setup = sim.bragg_setup()
    RE = RunEngine(call_returns_result=True)
    RE(bps.mv(devs["delta"], setup["delta"], devs["nu"], 0.0, devs["phi"], 0.0))
    documents, local = [], LiveSXDM()
    RE.subscribe(lambda name, doc: documents.append((name, _identity(name, doc))))
    RE.subscribe(local)
    for cb in callbacks:
        RE.subscribe(cb)
    (cx, cy), e = setup["center_um"], setup["extent_um"]
    etas = list(np.linspace(setup["eta"] - 0.04, setup["eta"] + 0.04, n_eta))
    beam = dict(energy_kev=cfg["energy.energy_kev"], distance_m=cfg["detector.distance_m"],
                pixel_m=cfg["detector.pixel_m"], cch=cfg["detector.cch"], detector_shape=cfg["detector.shape"],
                delta=setup["delta"], nu=0.0, phi=0.0)
    t0 = time.perf_counter()
    RE(sxdm_map([devs["mpx1x4"]], devs["pix"], (cx - e, cx + e, nx), devs["piy"], (cy - e, cy + e, ny),
                devs["eta"], etas, md=beam))
    return documents, local.maps(), time.perf_counter() - t0


def _identity(name, doc):
    """What tells two documents apart (datum ids, uids, sequence numbers)."""
    key = doc.get("uid") or doc.get("datum_id")
    return f"{key}:{doc.get('seq_num', '')}"


def stream_documents(url, stream):
    """Every document stored in ``stream``, in stream order, as (name, identity)."""
    import nats

    from braggscope.app.bus import decode_batch
    from braggscope.app.bus.format import PartJoiner

    async def read():
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            out, joiner = [], PartJoiner()
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(stream, seq)
                payload = joiner.add(msg.headers, msg.data)
                if payload is not None:
                    out.extend((n, _identity(n, d)) for n, d in decode_batch(payload))
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def delete_stream(url, stream):
    import nats

    async def delete():
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1)
        try:
            await nc.jetstream().delete_stream(stream)
        except Exception:  # noqa: BLE001 - never created
            pass
        finally:
            await nc.close()

    asyncio.run(delete())


# -- processes --------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nats(port, store, host="127.0.0.1", netns=None):
    """A nats-server with JetStream on ``host:port`` storing in ``store``; waits until it accepts."""
    cmd = ["nats-server", "-a", host, "-p", str(port), "-js", "-sd", str(store)]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    probe = ["ip", "netns", "exec", netns] if netns else []
    while time.monotonic() < deadline:
        connect = f"import socket; socket.create_connection(('{host}', {port}), 0.5)"
        ok = subprocess.run(probe + [sys.executable, "-c", connect],
                            capture_output=True).returncode == 0 if netns else _accepts(host, port)
        if ok:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"nats-server on {host}:{port} did not start")


def _accepts(host, port):
    try:
        socket.create_connection((host, port), 0.5).close()
        return True
    except OSError:
        return False


def stop(proc):
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(10)


class Consumer:
    """``braggscope live`` in a subprocess; its stdout lines are collected by a thread."""

    def __init__(self, url, stream, subject, out, *, durable, runs=1, netns=None, extra=()):
        cmd = [sys.executable, "-m", "braggscope", "live", "--url", url, "--stream", stream, "--subject", subject,
               "--durable", durable, "--out", str(out), "--runs", str(runs), "--png-interval", "0.5", *extra]
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     cwd=REPO)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for("subscribed", 60)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, text, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None and not any(text in line for line in self.lines):
                time.sleep(0.2)  # let the reader thread catch the last lines
                raise AssertionError(f"braggscope live exited ({self.proc.returncode}):\n" + "\n".join(self.lines))
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from braggscope live within {timeout} s:\n" + "\n".join(self.lines))

    def finish(self, timeout=120):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop(self.proc)
            raise AssertionError("braggscope live did not finish its run:\n" + "\n".join(self.lines)) from None
        time.sleep(0.2)
        assert rc == 0, "\n".join(self.lines)
        return self.lines

    def kill(self):
        stop(self.proc)


#: Agreement of two LiveSXDM reductions of the same frames: they differ only by the float32 rounding
#: of differently sized batches (about 1e-9 1/Angstrom), far below anything physical.
TOLERANCE = {"intensity": (1e-6, 0.0), "qx": (0, 1e-8), "qy": (0, 1e-8), "qz": (0, 1e-8),
             "d_spacing": (0, 1e-8), "strain": (0, 0.01), "tilt_altitude": (0, 1e-5), "com_row": (0, 1e-4),
             "com_col": (0, 1e-4)}


def assert_same_maps(remote, local):
    for name, (rtol, atol) in TOLERANCE.items():
        np.testing.assert_allclose(np.asarray(remote[name]), np.asarray(local[name]), rtol=rtol, atol=atol,
                                   equal_nan=True, err_msg=name)
    tilted = np.asarray(local["tilt_altitude"]) > 1e-3  # the azimuth of a vanishing tilt is not defined
    turn = np.asarray(remote["tilt_azimuth"])[tilted] - np.asarray(local["tilt_azimuth"])[tilted]
    assert np.all(np.abs((turn + 180.0) % 360.0 - 180.0) < 0.01)
    np.testing.assert_array_equal(np.asarray(remote["mask"]), np.asarray(local["mask"]))
    np.testing.assert_array_equal(np.asarray(remote["complete"]).astype(bool), np.asarray(local["complete"]))
    assert bool(np.asarray(local["complete"]).all()) and int(np.asarray(local["mask"]).sum()) > 0


def remote_maps(out):
    from braggscope.analysis.sxdm.files import load_maps

    files = sorted(Path(out).glob("*_live_maps.h5"))
    assert len(files) == 1, files
    return load_maps(files[0])


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture
def broker():
    """The machine's broker, with a stream of this test's own (deleted afterwards)."""
    if not _accepts("127.0.0.1", 4222):
        pytest.skip("no nats-server with JetStream on 127.0.0.1:4222")
    name = f"BSTEST_{uuid.uuid4().hex[:10]}"
    yield NATS_URL, name, f"bstest.{name}.documents"
    delete_stream(NATS_URL, name)


@pytest.fixture
def own_broker(tmp_path):
    """A nats-server of this test on a free loopback port, with its own store; (url, port, start)."""
    if shutil.which("nats-server") is None:
        pytest.skip("nats-server is not installed")
    port = free_port()
    procs = []

    def start():
        procs.append(start_nats(port, tmp_path / "nats-store"))
        return procs[-1]

    yield f"nats://127.0.0.1:{port}", port, start
    for p in procs:
        stop(p)


@pytest.fixture(scope="module")
def fly_beamline(tmp_path_factory):
    """The simulator (motors, Maxipix, fly hardware) on loopback with 64 x 64 frames, its devices, a fly
    scanner and a RunEngine with the baseline; its own PV prefix on the port tests/conftest.py reserves
    for a module's simulator."""
    from bluesky import RunEngine
    from bluesky import plan_stubs as bps

    from braggscope.app.beamline.runengine import install_baseline
    from braggscope.app.beamline.simulator import start_simulator, stop_simulator
    from braggscope.devices.ca_client import release_devices
    from braggscope.devices.factory import make_devices
    from braggscope.devices.fly import make_flyer
    from braggscope.simulators.beamline import SimulatedBeamline
    from tests.conftest import CA_PORTS
    from tests.ioc_fixtures import module_simulator_config

    root = tmp_path_factory.mktemp("busfly")
    cfg = module_simulator_config(root, "BSBUST:", 64)
    handle = start_simulator(cfg, port=CA_PORTS["module"], state_file=root / "sim.json", set_env=False,
                             exit_with_parent=True)
    devices = {}
    try:
        devices = make_devices(cfg, connect_timeout=30.0)
        RE = RunEngine(call_returns_result=True)
        install_baseline(RE, devices)
        setup = SimulatedBeamline.from_config(cfg).bragg_setup()
        RE(bps.mv(devices["delta"], setup["delta"], devices["nu"], 0.0, devices["phi"], 0.0))
        yield {"d": devices, "flyer": make_flyer(devices, cfg), "RE": RE, "setup": setup}
    finally:
        try:
            release_devices(devices)
        finally:
            stop_simulator(handle)


def publisher(url, stream, subject, tmp_path, **kwargs):
    from braggscope.app.bus import DocumentPublisher

    return DocumentPublisher(url, stream=stream, subject=subject, spill_dir=tmp_path / "spill", **kwargs)


# -- tests --------------------------------------------------------------------------------------

def test_documents_round_trip_and_settings():
    import msgpack

    from braggscope.app.bus import bus_settings, decode_batch, encode_document
    from braggscope.core.config import load_config
    from braggscope.core.errors import ConfigError

    doc = {"uid": "u", "data": {"img": np.arange(6, dtype=np.uint32).reshape(2, 3), "x": np.float64(0.1)},
           "shape": (2, 3)}
    payload = msgpack.packb([("event", encode_document(doc))], use_bin_type=True)
    ((name, back),) = decode_batch(payload)
    assert name == "event" and back["data"]["img"] == [[0, 1, 2], [3, 4, 5]] and back["data"]["x"] == 0.1
    assert back["shape"] == [2, 3]
    # each document travels with the time the acquisition handed it to the publisher; a message of an
    # older publisher (pairs) decodes with no time
    from braggscope.app.bus import decode_timed_batch

    timed = msgpack.packb([("event", encode_document(doc), 1234.5), ("stop", encode_document({"uid": "s"}), 1236.0)],
                          use_bin_type=True)
    assert [(n, t) for n, _, t in decode_timed_batch(timed)] == [("event", 1234.5), ("stop", 1236.0)]
    assert [n for n, _ in decode_batch(timed)] == ["event", "stop"]
    assert [(n, t) for n, _, t in decode_timed_batch(payload)] == [("event", None)]
    cfg = load_config()
    assert bus_settings(cfg)["url"] == ""  # no bus unless configured
    cfg.set("bus.stream", "two words")
    with pytest.raises(ConfigError, match="bus.stream"):
        bus_settings(cfg)


def test_path_map_relocates_detector_files(tmp_path):
    from braggscope.app.bus.consumer import LiveConsumer

    c = LiveConsumer(tmp_path, path_map=[("/data/id01", "/mnt/id01/")])
    assert c.map_file("/data/id01/det/a.h5") == "/mnt/id01/det/a.h5"
    assert c.map_file("/data/id011/a.h5") == "/data/id011/a.h5"  # prefix of a path component only
    res = c._relocate_resource({"root": "/", "resource_path": "data/id01/a.h5", "spec": "AD_HDF5"})
    assert res["root"] == "" and res["resource_path"] == "/mnt/id01/a.h5"


def test_live_refuses_an_unreachable_broker_in_one_line(tmp_path):
    from braggscope.app.bus.consumer import LiveConsumer
    from braggscope.app.bus.pull import consume
    from braggscope.core.errors import ServerUnreachableError

    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ServerUnreachableError, match=f"NATS server {url} unreachable after 1 s"):
        asyncio.run(consume(url, "NONE", "none.documents", LiveConsumer(tmp_path), connect_timeout_s=1.0))


def test_remote_maps_equal_local_and_stream_complete(broker, tmp_path):
    url, stream, subject = broker
    consumer = Consumer(url, stream, subject, tmp_path / "live", durable="t1")
    pub = publisher(url, stream, subject, tmp_path)
    documents, local, _ = acquire(tmp_path / "det", [pub])
    assert pub.wait(60) and pub.close() == 0
    lines = consumer.finish()
    assert_same_maps(remote_maps(tmp_path / "live"), local)
    assert stream_documents(url, stream) == documents  # nothing lost, nothing twice, in order
    png = tmp_path / "live" / "live_maps.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and any(str(png) in line for line in lines)
    assert pub.stats["over_high_water"] == 0 and pub.stats["spilled"] == 0


@pytest.mark.slow
def test_fly_run_over_channel_access_maps_remotely_as_in_process(fly_beamline, broker, tmp_path):
    """An ``sxdm_fly`` run (frames and captured positions as StreamResource/StreamDatum documents, one
    per line) published on the bus: ``braggscope live`` in another process maps it as a ``LiveSXDM``
    in the acquisition process does, and times every frame from its stream datum's publication."""
    from braggscope.analysis.live import LiveSXDM
    from braggscope.plans.fly import sxdm_fly

    url, stream, subject = broker
    b, (nx, ny, n_eta) = fly_beamline, (8, 4, 5)
    d, setup = b["d"], b["setup"]
    (cx, cy), half = setup["center_um"], float(setup["extent_um"])
    etas = list(np.linspace(setup["eta_start"], setup["eta_stop"], n_eta))
    consumer = Consumer(url, stream, subject, tmp_path / "live", durable="tfly")
    pub = publisher(url, stream, subject, tmp_path)
    local, documents, published = LiveSXDM(announce=False), [], {}

    def note(name, doc):
        documents.append((name, _identity(name, doc)))
        if name == "stream_datum":
            published.setdefault("first", time.time())

    tokens = [b["RE"].subscribe(cb) for cb in (note, local, pub)]
    try:
        result = b["RE"](sxdm_fly([b["flyer"]], d["pix"], (cx - half, cx + half, nx), d["piy"],
                                  (cy - half, cy + half, ny), d["eta"], etas, dwell_s=0.005, snake=True))
    finally:
        for token in tokens:
            b["RE"].unsubscribe(token)
    assert result.exit_status == "success"
    assert pub.wait(60) and pub.close() == 0
    consumer.finish(180)
    finished = time.time()
    n = nx * ny * n_eta
    assert [name for name, _ in documents].count("stream_datum") >= 2 * ny * n_eta  # frames + positions per line
    assert stream_documents(url, stream) == documents
    assert local.declined is None and local.n_frames == n and local.off_grid == 0
    remote = remote_maps(tmp_path / "live")
    assert_same_maps(remote, local.maps())
    attrs = remote.attrs
    assert attrs["n_events"] == 0 and attrs["n_stream_frames"] == attrs["n_frames"] == attrs["n_latencies"] == n
    # each frame's latency runs from its line's stream datum (published after the first one) to the map
    assert 0 < attrs["latency_median_s"] <= attrs["latency_p99_s"] <= attrs["latency_max_s"]
    assert attrs["latency_max_s"] < finished - published["first"]


def test_shell_session_publishes_when_bus_url_is_set(broker, tmp_path):
    from braggscope.app.session.namespace import make_session
    from braggscope.core.config import load_config

    url, stream, subject = broker
    cfg = load_config()
    for key, value in (("storage.data_dir", str(tmp_path / "data")), ("detector.read_path", str(tmp_path / "det")),
                       ("detector.write_path", str(tmp_path / "det")), ("detector.shape", [32, 32]),
                       ("detector.cch", [16.0, 16.0]), ("bus.url", url), ("bus.stream", stream),
                       ("bus.subject", subject), ("bus.spill_dir", str(tmp_path / "spill"))):
        cfg.set(key, value)
    ns = make_session(cfg, inprocess=True, live=False, headless=True)
    try:
        documents = []
        ns["RE"].subscribe(lambda name, doc: documents.append((name, _identity(name, doc))))
        ns["RE"](ns["sxdm_map"]([ns["detector"]], ns["pix"], (49, 51, 3), ns["piy"], (49, 51, 2), ns["eta"],
                                [9.0, 9.05]))
        assert ns["bus"].wait(30)
    finally:
        ns["__cleanup__"]()
    assert documents[0][0] == "start" and documents[-1][0] == "stop"
    assert stream_documents(url, stream) == documents
    with pytest.raises(RuntimeError, match="closed"):
        ns["bus"]("start", {"uid": "x"})


def test_broker_outage_mid_run_loses_nothing_and_keeps_order(own_broker, tmp_path, caplog):
    url, port, start = own_broker
    server = start()
    stream, subject = "OUTAGE", "bstest.outage.documents"
    consumer = Consumer(url, stream, subject, tmp_path / "live", durable="t2")
    pub = publisher(url, stream, subject, tmp_path, queue_size=16, high_water=0.5)
    outage = {}

    def kill_and_restart():
        while pub.stats["documents"] < 30:
            time.sleep(0.01)
        stop(server)  # SIGKILL mid-run
        outage["killed_at"] = pub.stats["documents"]
        while pub.stats["documents"] < outage["killed_at"] + 60:  # the run goes on meanwhile
            time.sleep(0.01)
        outage["restarted_at"] = pub.stats["documents"]
        start()

    helper = threading.Thread(target=kill_and_restart)
    helper.start()
    with caplog.at_level(logging.WARNING, logger="braggscope.app.bus"):
        documents, local, _ = acquire(tmp_path / "det", [pub], nx=8, ny=6, n_eta=2)
    helper.join(60)
    assert outage.get("restarted_at"), "the broker was not restarted during the run"
    assert pub.wait(90) and pub.close() == 0
    consumer.finish(180)
    assert stream_documents(url, stream) == documents
    assert_same_maps(remote_maps(tmp_path / "live"), local)
    assert pub.stats["spilled"] > 0 and pub.stats["over_high_water"] > 0
    assert sum("high-water" in r.getMessage() for r in caplog.records) >= 1
    # the outage said once when it began and once when it ended, not once per retry
    said = [r.getMessage() for r in caplog.records]
    assert sum("does not answer" in m for m in said) == 1 and sum("answers again" in m for m in said) == 1
    assert not (tmp_path / "spill" / "bus-spill-OUTAGE.bin").exists()


def test_a_bug_in_publishing_fails_the_run_instead_of_retrying_for_ever(broker, tmp_path, monkeypatch, caplog):
    """Only the broker's failures are retried; a failure of ours (here an unencodable payload) stops the
    publisher, is logged with its traceback and fails the run at its next document."""
    from bluesky import RunEngine
    from bluesky import plans as bp
    from ophyd.sim import det

    url, stream, subject = broker
    pub = publisher(url, stream, subject, tmp_path)

    async def broken(js, batch):
        raise TypeError("cannot encode this document")

    monkeypatch.setattr(pub, "_publish", broken)
    RE = RunEngine()
    RE.subscribe(pub)
    with caplog.at_level(logging.WARNING, logger="braggscope.app.bus"):
        with pytest.raises(RuntimeError, match="bus publisher failed: TypeError"):
            for _ in range(50):  # the worker's failure reaches the RunEngine with a later document
                RE(bp.count([det], num=5, delay=0.01))
    assert isinstance(pub.error, TypeError) and pub.stats["resent"] == 0
    assert any("bus publisher stopped" in r.getMessage() and r.exc_info for r in caplog.records)
    assert pub.close() >= 1  # the documents it could not publish are kept for the next session
    assert pub.spill_path.exists()


def test_slow_consumer_and_stalled_broker_do_not_slow_the_runengine(own_broker, tmp_path, caplog):
    url, port, start = own_broker
    server = start()
    stream, subject = "SLOW", "bstest.slow.documents"
    consumer = Consumer(url, stream, subject, tmp_path / "live", durable="t3")
    # a consumer that does nothing during the run (stopped) and a broker that answers nothing
    os.kill(consumer.proc.pid, signal.SIGSTOP)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        pub = publisher(url, stream, subject, tmp_path, queue_size=20, high_water=0.5, publish_timeout_s=0.5)
        with caplog.at_level(logging.WARNING, logger="braggscope.app.bus"):
            documents, local, seconds = acquire(tmp_path / "det", [pub])
        n = len(documents)
        assert pub.stats["documents"] == n and pub.stats["published"] == 0 and pub.pending() == n
        # at most one batch (the start document) in the worker's hands, at most 20 in memory, the rest on disk
        assert pub.stats["max_depth"] >= n - 1 and pub.stats["spilled"] >= n - 21
        assert pub.stats["max_depth"] - pub.stats["spilled"] <= 20
        assert pub.stats["over_high_water"] >= n - 11
        assert sum("high-water" in r.getMessage() for r in caplog.records) == 1  # one line, not one per document
        # the RunEngine's cost per document: no wait on the bus (a wait would be >= publish_timeout_s)
        assert pub.stats["call_s_total"] / n < 5e-3
    finally:
        os.kill(server.pid, signal.SIGCONT)
        os.kill(consumer.proc.pid, signal.SIGCONT)
    assert pub.wait(90) and pub.close() == 0
    consumer.finish(180)
    assert stream_documents(url, stream) == documents
    assert_same_maps(remote_maps(tmp_path / "live"), local)


def test_consumer_restart_resumes_the_run(broker, tmp_path):
    url, stream, subject = broker
    consumer = Consumer(url, stream, subject, tmp_path / "live", durable="t4")
    pub = publisher(url, stream, subject, tmp_path)
    killed = threading.Event()

    def kill_consumer_mid_run():
        while pub.stats["published"] < 60:
            time.sleep(0.01)
        consumer.kill()
        killed.set()

    helper = threading.Thread(target=kill_consumer_mid_run)
    helper.start()
    documents, local, _ = acquire(tmp_path / "det", [pub], nx=8, ny=6)
    helper.join(60)
    assert killed.is_set() and pub.wait(60) and pub.close() == 0
    assert not list((tmp_path / "live").glob("*_live_maps.h5"))
    again = Consumer(url, stream, subject, tmp_path / "live", durable="t4")
    lines = again.finish()
    assert any("replayed" in line for line in lines), lines
    assert_same_maps(remote_maps(tmp_path / "live"), local)


def test_spill_left_at_close_is_published_by_the_next_session(own_broker, tmp_path):
    from braggscope.app.bus import DocumentPublisher

    url, port, start = own_broker  # not started: the broker is away for the whole first session
    stream, subject = "LEFT", "bstest.left.documents"
    pub = DocumentPublisher(url, stream=stream, subject=subject, spill_dir=tmp_path / "spill", queue_size=4)
    uid = str(uuid.uuid4())
    docs = [("start", {"uid": uid, "time": 0.0})] + [
        ("event", {"uid": f"e{i}", "seq_num": i + 1, "data": {"x": float(i)}}) for i in range(10)] + [
        ("stop", {"uid": "s", "run_start": uid})]
    for name, doc in docs:
        pub(name, doc)
    assert pub.close(timeout=0.5) == len(docs)
    assert (tmp_path / "spill" / "bus-spill-LEFT.bin").is_file()
    start()
    pub2 = DocumentPublisher(url, stream=stream, subject=subject, spill_dir=tmp_path / "spill")
    assert pub2.wait(30) and pub2.close() == 0
    assert stream_documents(url, stream) == [(n, _identity(n, d)) for n, d in docs]
    assert not (tmp_path / "spill" / "bus-spill-LEFT.bin").exists()


def test_a_document_over_the_brokers_limit_travels_in_parts(broker, tmp_path):
    """A start document of 2.5 MB (a long ``sample``) on a broker whose messages hold 1 MB: published in
    parts, read back whole and in order by a consumer (braggscope live's), and the next run is unaffected."""
    from bluesky import RunEngine
    from bluesky import plans as bp
    from ophyd.sim import det

    from braggscope.app.bus.consumer import LiveConsumer
    from braggscope.app.bus.format import HEADER_PART, PartJoiner

    url, stream, subject = broker
    pub = publisher(url, stream, subject, tmp_path)
    RE, docs = RunEngine(), []
    RE.subscribe(pub)
    RE.subscribe(lambda name, doc: docs.append((name, _identity(name, doc))))
    big = "x" * (5 * 2**19)
    (uid,) = RE(bp.count([det], num=3), sample=big)
    RE(bp.count([det], num=2))
    assert pub.wait(30) and pub.close() == 0 and pub.error is None
    assert pub.stats["split"] == 1
    assert stream_documents(url, stream) == docs  # every document, once, in order

    async def messages():
        import nats

        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            return [await js.get_msg(stream, s) for s in range(info.state.first_seq, info.state.last_seq + 1)]
        finally:
            await nc.close()

    msgs = asyncio.run(messages())
    assert sum(1 for m in msgs if HEADER_PART in (m.headers or {})) >= 3
    consumer = LiveConsumer(tmp_path / "live", echo=lambda line: None)
    for m in msgs:
        consumer.feed_message(m.headers, m.data)
    assert consumer.documents == len(docs)
    joiner = PartJoiner()
    assert joiner.add({HEADER_PART: "1/2", "Braggscope-Run": uid, "Braggscope-Index": "0"}, b"b") is None
    assert joiner.add({HEADER_PART: "0/2", "Braggscope-Run": uid, "Braggscope-Index": "0"}, b"a") == b"ab"


def test_a_poisoned_spill_is_set_aside_not_replayed_for_ever(broker, tmp_path, caplog, monkeypatch):
    """A spill file that cannot be read, or whose documents the broker refuses for good, is moved aside
    with one warning line; the session's own runs are published."""
    from bluesky import RunEngine
    from bluesky import plans as bp
    from ophyd.sim import det

    from braggscope.app.bus import DocumentPublisher

    url, stream, subject = broker
    spill = tmp_path / "spill"
    spill.mkdir()
    (spill / f"bus-spill-{stream}.bin").write_bytes(b"\x05\x00\x00\x00\xc1\xc1\xc1\xc1\xc1")
    with caplog.at_level(logging.WARNING, logger="braggscope.app.bus"):
        pub = publisher(url, stream, subject, tmp_path)
    assert any("cannot be read" in r.getMessage() for r in caplog.records)
    assert len(list(spill.glob(f"bus-quarantine-{stream}-*.bin"))) == 1
    RE, docs = RunEngine(), []
    RE.subscribe(pub)
    RE.subscribe(lambda name, doc: docs.append((name, _identity(name, doc))))
    RE(bp.count([det], num=2))
    assert pub.wait(30) and pub.close() == 0 and stream_documents(url, stream) == docs

    # documents left by an earlier session that the broker refuses for good: quarantined, not retried
    left = str(uuid.uuid4())
    first = DocumentPublisher("nats://127.0.0.1:1", stream=stream, subject=subject, spill_dir=spill)
    first("start", {"uid": left, "time": 0.0})
    first("stop", {"uid": "s", "run_start": left})
    assert first.close(timeout=0.2) == 2
    refused = []

    async def refuse_old(self, js, batch):
        if batch[0][1] == left:
            refused.append(batch[0][0])
            raise TypeError("refused for good (test)")
        return await original(self, js, batch)

    original = DocumentPublisher._publish
    monkeypatch.setattr(DocumentPublisher, "_publish", refuse_old)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="braggscope.app.bus"):
        second = DocumentPublisher(url, stream=stream, subject=subject, spill_dir=spill)
        RE2 = RunEngine()
        RE2.subscribe(second)
        RE2(bp.count([det], num=1))
        assert second.wait(30) and second.error is None and second.close() == 0
    assert refused == ["start", "stop"] and second.stats["quarantined"] == 2
    assert any("set aside" in r.getMessage() for r in caplog.records)
    assert not (spill / f"bus-spill-{stream}.bin").exists()


# -- two hosts: network namespaces ----------------------------------------------------------------

NETNS_ADDR = ("10.213.77.1", "10.213.77.2")  # a private /30 that exists only inside the two namespaces


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def two_hosts():
    """Namespaces ``acq`` (broker + acquisition) and ``ana`` (consumer) joined by a veth pair."""
    if shutil.which("ip") is None or shutil.which("nats-server") is None:
        pytest.skip("needs iproute2 and nats-server")
    tag = f"{os.getpid() % 100000}"
    acq, ana, veth_a, veth_b = f"bsacq{tag}", f"bsana{tag}", f"bsva{tag}", f"bsvb{tag}"
    if _ip("netns", "add", acq, check=False).returncode != 0:
        pytest.skip("'ip netns add' is not permitted here")
    try:
        _ip("netns", "add", ana)
        _ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        _ip("link", "set", veth_a, "netns", acq)
        _ip("link", "set", veth_b, "netns", ana)
        for ns, dev, addr in ((acq, veth_a, NETNS_ADDR[0]), (ana, veth_b, NETNS_ADDR[1])):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield acq, ana
    finally:
        for ns in (acq, ana):  # removing a namespace removes its end of the veth pair, and the pair
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _ip("netns", "del", ns, check=False)


def test_documents_cross_a_network_between_two_hosts(two_hosts, tmp_path):
    acq, ana = two_hosts
    url = f"nats://{NETNS_ADDR[0]}:4222"
    server = start_nats(4222, tmp_path / "nats-store", host=NETNS_ADDR[0], netns=acq)
    consumer = None
    try:
        # the analysis host mounts the detector directory elsewhere: a link stands for that mount
        (tmp_path / "det").mkdir()
        (tmp_path / "mnt").symlink_to(tmp_path / "det")
        consumer = Consumer(url, "XHOST", "bstest.xhost.documents", tmp_path / "live", durable="x1", netns=ana,
                            extra=["--path-map", f"{tmp_path / 'det'}={tmp_path / 'mnt'}"])
        acq_run = subprocess.run(["ip", "netns", "exec", acq, sys.executable, str(Path(__file__).resolve()),
                                  "acquire", "--url", url, "--stream", "XHOST", "--subject",
                                  "bstest.xhost.documents", "--out", str(tmp_path)],
                                 capture_output=True, text=True, timeout=300, cwd=REPO)
        assert acq_run.returncode == 0, acq_run.stdout + acq_run.stderr
        consumer.finish(180)
        from braggscope.analysis.sxdm.files import load_maps

        assert_same_maps(remote_maps(tmp_path / "live"), load_maps(tmp_path / "local_maps.h5"))
        # the consumer's namespace has no route to the acquisition's loopback: the documents crossed the veth
        probe = subprocess.run(["ip", "netns", "exec", ana, sys.executable, "-c",
                                "import socket; socket.create_connection(('127.0.0.1', 4222), 1)"],
                               capture_output=True)
        assert probe.returncode != 0
    finally:
        if consumer is not None:
            consumer.kill()
        stop(server)


def _acquire_main(argv):
    """The acquisition host of the cross-host test: publish one run, save the local maps."""
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["acquire"])
    p.add_argument("--url")
    p.add_argument("--stream")
    p.add_argument("--subject")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    from braggscope.analysis.sxdm.files import save_maps

    pub = publisher(a.url, a.stream, a.subject, a.out)
    documents, local, _ = acquire(a.out / "det", [pub])
    if not pub.wait(60) or pub.close():
        raise SystemExit(f"documents left unpublished: {pub.stats}")
    save_maps(local, a.out / "local_maps.h5")
    return 0


if __name__ == "__main__":
    sys.exit(_acquire_main(sys.argv[1:]))
