"""The catalog writer's worker thread: order, stop barrier, errors reach the RunEngine."""

import threading
import time

import pytest
from bluesky import RunEngine
from bluesky import plans as bp
from ophyd.sim import det, motor

from braggscope.core.storage import BackgroundWriter


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
    delay, n = 0.02, 20
    RE = RunEngine()
    writer = BackgroundWriter(SlowRecorder(delay=delay))
    RE.subscribe(writer)
    seen = []
    RE.subscribe(lambda name, doc: seen.append(time.monotonic()) if name == "event" else None)
    RE(bp.count([det], n))
    # the events were emitted faster than the writer handles them
    assert seen[-1] - seen[0] < 0.5 * (n - 1) * delay


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
