"""The catalog writer's worker thread: order, stop barrier, errors reach the RunEngine."""

import threading
import time

import pytest
from bluesky import RunEngine
from bluesky import plans as bp
from ophyd.sim import det, motor

from braggscope.storage import BackgroundWriter
from braggscope.storage.background import KeptByWriter


class SlowRecorder:
    """A document callback that takes its time, records the thread and can fail on one event."""

    def __init__(self, delay=0.002, fail_on_seq=None):
        self.delay, self.fail_on_seq = delay, fail_on_seq
        self.docs, self.threads = [], set()

    def __call__(self, name, doc):
        time.sleep(self.delay)
        self.threads.add(threading.get_ident())
        if name == "event" and doc["seq_num"] == self.fail_on_seq:
            raise OSError("catalog unreachable (simulated)")
        self.docs.append((name, doc.get("seq_num")))


def test_documents_written_in_order_off_the_runengine_thread_and_complete_at_stop():
    rec = SlowRecorder()
    RE = RunEngine()
    RE.subscribe(BackgroundWriter(rec))
    RE(bp.scan([det], motor, 0, 1, 25))
    # complete when the plan returns: stop waited for the queue
    names = [n for n, _ in rec.docs]
    assert names[0] == "start" and names[-1] == "stop" and names.count("event") == 25
    assert [s for n, s in rec.docs if n == "event"] == list(range(1, 26))
    assert threading.get_ident() not in rec.threads


def test_runengine_is_not_stalled_by_a_slow_writer():
    delay, n = 0.1, 20
    RE = RunEngine()
    rec = SlowRecorder(delay=delay)
    RE.subscribe(BackgroundWriter(rec))
    written_at_event = []
    RE.subscribe(lambda name, doc: written_at_event.append(len(rec.docs)) if name == "event" else None)
    RE(bp.count([det], n))
    # the RunEngine emitted its last event long before the writer had written the events before it
    # (no timing: a count of what the writer had handled when the RunEngine moved on)
    assert written_at_event[-1] < n // 2
    assert [s for name, s in rec.docs if name == "event"] == list(range(1, n + 1))  # all written at stop


def test_writer_error_fails_the_run_and_the_next_run_writes_again():
    rec = SlowRecorder(delay=0.0, fail_on_seq=3)
    RE = RunEngine()
    RE.subscribe(BackgroundWriter(rec))
    with pytest.raises(RuntimeError, match="catalog writer failed: OSError: catalog unreachable"):
        RE(bp.count([det], 50, delay=0.01))
    rec.fail_on_seq = None
    rec.docs.clear()
    RE(bp.count([det], 3))
    assert [n for n, _ in rec.docs] == ["start", "descriptor", "event", "event", "event", "stop"]


def test_a_run_that_does_not_wait_at_its_stop_is_written_while_the_next_one_goes_on(tmp_path, capsys):
    """catalog_wait_at_stop=False (an operando tracking run): its stop returns with its documents still
    queued (the writer held by a gate, no timing), the next run's stop waits for both, the journal keeps the
    first run until the catalog has it."""
    from braggscope.storage.background import NO_WAIT_KEY

    gate, docs = threading.Event(), []

    def callback(name, doc):
        assert gate.wait(10.0)
        docs.append((name, doc.get("run_start", doc.get("uid"))))

    writer = BackgroundWriter(callback, spool_dir=tmp_path, confirm_s=0.5)
    RE = RunEngine()
    RE.subscribe(writer)
    first = RE(bp.count([det], 3, md={NO_WAIT_KEY: False}))[0]  # returns although nothing is written yet
    assert docs == [] and writer.journal.path(first).exists()
    assert "not confirmed" not in capsys.readouterr().err  # a stop that waited would have said so after 0.5 s
    threading.Timer(0.2, gate.set).start()  # the writer goes on while the next run is taken
    second = RE(bp.count([det], 2))[0]
    assert [n for n, _ in docs] == ["start", "descriptor", "event", "event", "event", "stop",
                                    "start", "descriptor", "event", "event", "stop"]
    assert docs[5] == ("stop", first) and docs[-1] == ("stop", second)
    assert not writer.journal.path(first).exists() and not writer.journal.path(second).exists()


@pytest.mark.parametrize("kept", [True, False])
def test_a_document_the_writer_kept_is_not_delivered_again(tmp_path, kept):
    """A write refused for a lost catalog is delivered again once the catalog answers, unless the
    callback raised KeptByWriter (it keeps what the document carried: delivered again, a StreamDatum
    would be counted twice)."""
    calls, refuse = [], [True]

    def callback(name, doc):
        calls.append(name)
        if name == "stream_datum" and refuse[0]:
            refuse[0] = False
            lost = ConnectionError("catalog down (test)")
            if kept:
                raise KeptByWriter("frames kept until the catalog answers") from lost
            raise lost

    writer = BackgroundWriter(callback, spool_dir=tmp_path, retry_s=0.01)
    for name in ("start", "stream_datum", "event", "stop"):
        writer(name, {"uid": name, "run_start": "start", "descriptor": "d", "seq_num": 1})
    deadline = time.monotonic() + 10
    while list(tmp_path.glob("*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not list(tmp_path.glob("*.jsonl"))
    resent = [] if kept else ["stream_datum"]
    assert calls == ["start", "stream_datum", *resent, "event", "stop"]


# -- a catalog lost and found again: every event once, each with its own frame --------------------
class Outage:
    """Refuse the requests of a catalog client (httpx.ConnectError) while ``down`` (only those whose
    path contains ``only``, if given); ``restore()`` ends it."""

    def __init__(self, client, only=None):
        import httpx

        http = client.context.http_client
        send, self.down, self.refused, self.only = http.send, False, 0, only

        def refusing(request, *args, **kwargs):
            if self.down and (self.only is None or self.only in request.url.path):
                self.refused += 1
                raise httpx.ConnectError("catalog down (test)", request=request)
            return send(request, *args, **kwargs)

        http.send = refusing
        self.restore = lambda: setattr(http, "send", send)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """An embedded catalog shared by the module's outage tests, and its directory; one try per
    request (no back-off) while it is used."""
    import tiled.client.utils

    from braggscope import storage
    from braggscope.core.config import load_config

    tmp = tmp_path_factory.mktemp("outage")
    cfg = load_config()
    cfg.set("storage.data_dir", str(tmp / "data"))
    cfg.set("storage.catalog_server", "off")
    cfg.set("detector.read_path", str(tmp / "det"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 1)
        yield storage.open_catalog(cfg), tmp


@pytest.mark.parametrize("lost_at", ["start", "descriptor", "first_event", "event", "stop"])
def test_a_run_written_across_an_outage_stores_each_event_once_with_its_frame(embedded, lost_at):
    """The catalog stops answering at the run's start, its descriptor, its first event (its table and
    frames' node not created yet), its 2nd event or (writing 50 events at a time) at the frames'
    registration of its stop, and answers again after the run ended: every event is stored once (the
    descriptor, refused several times, was routed again each time; the stop, refused after its frames
    were counted, counts them once) and the catalog serves each event's own frame (frames encode the
    point)."""
    client, tmp = embedded
    outage = Outage(client, only="/data_source/" if lost_at == "stop" else None)
    try:
        _write_across(outage, client, tmp, lost_at)
    finally:
        outage.restore()


def _write_across(outage, client, tmp, lost_at):
    import numpy as np

    from braggscope.simulators.inprocess import HDF5ImageDetector
    from braggscope.storage.catalog_writer import CatalogWriter

    n = [0]

    def render():
        n[0] += 1
        return np.full((4, 5), n[0], dtype=np.uint32)

    det = HDF5ImageDetector(render=render, write_dir=tmp / "det", shape=(4, 5))
    RE = RunEngine()
    spool = tmp / f"spool-{lost_at}"
    batch = 50 if lost_at == "stop" else 1
    writer = BackgroundWriter(CatalogWriter(client, batch_size=batch), spool_dir=spool, retry_s=0.05)
    def lose(name, doc):
        if lost_at.endswith("event"):
            if name == "event" and doc["seq_num"] == (1 if lost_at == "first_event" else 2):
                # subscribed before the writer: everything before this event is written, the event not
                # yet queued (the writer's thread otherwise lags by a varying number of documents)
                writer.flush()
                outage.down = True
        elif name == lost_at:
            outage.down = True

    RE.subscribe(lose)
    RE.subscribe(writer)
    (uid,) = RE(bp.count([det], 6, delay=0.05))
    time.sleep(0.3)  # several deliveries refused
    assert outage.refused >= 3
    outage.down = False
    deadline = time.monotonic() + 60
    while list(spool.glob("*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.flush()
    assert not list(spool.glob("*.jsonl")), "the kept documents were not delivered"
    run = client[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    table = run["primary"].base["internal"].read()
    assert list(table["seq_num"]) == [1, 2, 3, 4, 5, 6]
    # registered in the catalog: 6 frames (not only what the file holds, which a reader would serve anyway)
    (source,) = run["primary"].base["mpx1x4_image"].data_sources()
    assert source.structure["shape"][0] == 6
    frames = np.asarray(run["primary"]["mpx1x4_image"].read())
    assert frames.shape == (6, 4, 5)
    np.testing.assert_array_equal(frames[:, 0, 0], [1, 2, 3, 4, 5, 6])

