"""plans/beam.py in process (ophyd soft signals, no IOC): suspensions retake the point, every suspension is
recorded, a point exposed without beam never ends a run as success, the monitor rides with every point."""

from __future__ import annotations

import threading
import time

import bluesky.plans as bp
import pytest
from bluesky import RunEngine
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import DeviceStatus

from braggscope.devices.machine import BeamWatch
from braggscope.plans.beam import BeamLostError, BeamPolicy, beam_checked, describe_policy, install_beam


class SoftMachine(Device):
    current = Cpt(Signal, value=200.0)
    shutter = Cpt(Signal, value=1)
    refill_countdown = Cpt(Signal, value=-1.0)


class Counter(Device):
    """A detector counting for ``acquire_time`` s; ``during`` is called while it counts (the beam goes)."""

    acquire_time = Cpt(Signal, value=0.05, kind="config")
    counts = Cpt(Signal, value=0, kind="hinted")

    def __init__(self, *args, during=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.during, self.triggers = during, 0

    def trigger(self):
        self.triggers += 1
        status = DeviceStatus(self)
        n = self.triggers

        def count():
            if self.during is not None:
                self.during(n)
            time.sleep(self.acquire_time.get())
            self.counts.put(n)
            status.set_finished()

        threading.Thread(target=count, daemon=True).start()
        return status


def _dump_at(machine, trigger_number, back_after_s):
    """A ``during`` callback: the current drops in that trigger's exposure and comes back later."""
    def during(n):
        if n == trigger_number:
            machine.current.put(0.0)
            threading.Timer(back_after_s, machine.current.put, (200.0,)).start()
    return during


def _collect(RE, plan):
    docs = []
    result = RE(plan, lambda name, doc: docs.append((name, doc)))
    return result, docs


def _events(docs, stream="primary"):
    descriptors = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == stream}
    return [d for n, d in docs if n == "event" and d["descriptor"] in descriptors]


def test_a_dump_during_a_point_suspends_the_run_and_the_point_is_taken_again():
    machine = SoftMachine(name="machine")
    det = Counter(name="det", during=_dump_at(machine, 3, 0.3))
    RE = RunEngine(call_returns_result=True)
    handle = install_beam(RE, {"machine": machine}, BeamPolicy(resume_delay_s=0.1))
    result, docs = _collect(RE, bp.count([det], num=5))
    assert result.exit_status == "success"
    events = _events(docs)
    assert [e["data"]["det_counts"] for e in events] == [1, 2, 4, 5, 6]  # trigger 3 was not kept
    assert det.triggers == 6
    (record,) = [e["data"] for e in _events(docs, "suspensions")]
    assert record["suspension_kind"] == "current" and "below 10 mA" in record["suspension_reason"]
    assert 0.3 <= record["suspension_duration_s"] < 2.0
    assert record["suspension_end"] - record["suspension_start"] == pytest.approx(record["suspension_duration_s"])
    assert handle["log"].records[-1]["kind"] == "current"


def test_a_closed_shutter_holds_the_run_until_it_opens():
    machine = SoftMachine(name="machine")

    def during(n):
        if n == 2:
            machine.shutter.put(0)
            threading.Timer(0.4, machine.shutter.put, (1,)).start()

    det = Counter(name="det", during=during)
    RE = RunEngine(call_returns_result=True)
    install_beam(RE, {"machine": machine}, BeamPolicy(resume_delay_s=0.1))
    t0 = time.monotonic()
    result, docs = _collect(RE, bp.count([det], num=3))
    assert result.exit_status == "success" and time.monotonic() - t0 >= 0.5
    assert [e["data"]["det_counts"] for e in _events(docs)] == [1, 3, 4]
    (record,) = [e["data"] for e in _events(docs, "suspensions")]
    assert record["suspension_kind"] == "shutter" and record["suspension_duration_s"] >= 0.4


def test_a_point_exposed_without_beam_and_not_taken_again_fails_the_run():
    """No suspender (the watch alone): the check before the point's save refuses it."""
    machine = SoftMachine(name="machine")
    det = Counter(name="det", during=_dump_at(machine, 2, 0.05))
    watch = BeamWatch(machine, current_floor_ma=10.0)
    RE = RunEngine(call_returns_result=True)
    RE.preprocessors.append(lambda plan: beam_checked(plan, watch=watch))
    docs = []
    with pytest.raises(BeamLostError, match="point 1: the beam was down"):
        RE(bp.count([det], num=3), lambda name, doc: docs.append((name, doc)))
    assert len(_events(docs)) == 1  # the point without beam was not recorded
    assert [d for n, d in docs if n == "stop"][0]["exit_status"] == "fail"


def test_the_monitor_is_counted_and_read_with_every_point_for_the_detectors_exposure():
    det = Counter(name="det")
    det.acquire_time.put(0.02)
    mon = Counter(name="mon1")
    RE = RunEngine(call_returns_result=True)
    install_beam(RE, {"mon1": mon}, BeamPolicy())
    result, docs = _collect(RE, bp.count([det], num=3))
    events = _events(docs)
    assert result.exit_status == "success" and [e["data"]["mon1_counts"] for e in events] == [1, 2, 3]
    assert mon.acquire_time.get() == 0.02  # set to the detector's exposure once per run
    # a plan that counts the monitor itself: counted once per point, not twice
    result, docs = _collect(RE, bp.count([det, mon], num=2))
    assert [e["data"]["mon1_counts"] for e in _events(docs)] == [4, 5] and mon.triggers == 5
    # outside a run (ct) nothing is added
    assert det.triggers == 5


def test_the_banner_line_says_what_suspends_the_runs():
    machine, mon = SoftMachine(name="machine"), Counter(name="mon1")
    line = describe_policy(BeamPolicy(current_floor_ma=15.0, resume_delay_s=3.0), machine, mon)
    assert line == ("suspend while ring current < 15 mA or shutter closed (resume 3 s after); "
                    "mon1 counted with every point")
    assert "do not suspend" in describe_policy(BeamPolicy(), None, None)
    assert "suspenders off" in describe_policy(BeamPolicy(suspend=False), machine, None)
