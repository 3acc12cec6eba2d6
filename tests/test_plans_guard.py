"""The plans' guard (``plans.guard``) and per-point stubs (``plans.stubs``) on in-process devices.

A detector whose frame counter stalls or goes backwards records no point; a lost connection
(the ophyd connection callback a CA signal sends, here sent by hand) fails the pending move at
once and ends the run naming the PV and the point, with the closing baseline skipped; time-outs
of a plan's own guard apply inside the session's; ``step_point`` records the same events as
bluesky's ``one_nd_step`` with fewer messages. The same faults over Channel Access:
``tests/faults/test_ioc_faults.py`` and ``tests/faults/test_operator_scans.py``.
"""

import threading

import bluesky.plans as bp
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.preprocessors import SupplementalData
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import SynAxis, SynGauss
from ophyd.status import DeviceStatus

from braggscope.core.errors import ArgumentError
from braggscope.plans import sxdm_map
from braggscope.plans.guard import DetectorFrameError, DeviceLostError, guarded, install_guard
from braggscope.plans.stubs import step_point


class CountingCamera(Device):
    """A detector reporting a frame counter and a unique id per trigger, as areaDetector's HDF1 does."""

    unique_id = Cpt(Signal, value=0, kind="normal")
    num_captured = Cpt(Signal, value=0, kind="normal")
    total = Cpt(Signal, value=0.0, kind="hinted")

    def __init__(self, *args, ids=None, finish=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.ids = list(ids or [])  # the unique id each trigger brings (else one more each time)
        self.finish = finish
        self.n = 0

    def trigger(self):
        self.n += 1
        uid = self.ids[self.n - 1] if self.n <= len(self.ids) else self.n
        self.unique_id.put(uid)
        self.num_captured.put(self.n)
        self.total.put(float(uid))
        status = DeviceStatus(self)
        if self.finish:
            status.set_finished()
        return status


class PVSignal(Signal):
    """A soft signal with a PV name: the watchdog watches it as it watches an EpicsSignal."""

    pvname = "SIM:m1.RBV"


class LosableMotor(Device):
    """A motor whose moves finish only when told, and whose readback can 'lose its connection'."""

    readback = Cpt(PVSignal, value=0.0, kind="hinted")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending = []

    def set(self, value):
        status = DeviceStatus(self)
        self.pending.append((status, value))
        if len(self.pending) < 3:  # the first moves finish at once
            self.readback.put(value)
            status.set_finished()
        else:  # the third never ends by itself: the connection is lost while the plan waits for it
            threading.Timer(0.2, self.lose_connection).start()
        return status

    def lose_connection(self):
        self.readback._run_subs(sub_type=self.readback.SUB_META, obj=self.readback, connected=False)


@pytest.fixture()
def engine():
    RE = RunEngine(call_returns_result=True)
    docs, messages = [], []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE.msg_hook = messages.append
    return RE, docs, messages


def _events(docs, stream="primary"):
    descriptors = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == stream}
    return [d for n, d in docs if n == "event" and d["descriptor"] in descriptors]


def _stop(docs):
    (stop,) = [d for n, d in docs if n == "stop"]
    return stop


@pytest.mark.parametrize("ids, what", [([1, 2, 3, 3], "stalled"), ([5, 6, 7, 2], "went backwards")])
def test_a_detector_whose_unique_id_stalls_or_goes_back_records_no_point(engine, ids, what):
    RE, docs, _ = engine
    install_guard(RE)
    det, motor = CountingCamera(name="cam", ids=ids), SynAxis(name="m")
    with pytest.raises(DetectorFrameError, match=f"cam_unique_id {what} at point 3"):
        RE(bp.scan([det], motor, 0, 1, 6, per_step=step_point))
    assert _stop(docs)["exit_status"] == "fail" and what in _stop(docs)["reason"]
    assert [e["data"]["cam_unique_id"] for e in _events(docs)] == ids[:3]  # the bad point was never saved


def test_without_the_guard_the_stalled_point_would_be_recorded(engine):
    """The reference for the test above: the plain RunEngine records the stalled reading."""
    RE, docs, _ = engine
    det, motor = CountingCamera(name="cam", ids=[1, 2, 3, 3]), SynAxis(name="m")
    RE(bp.scan([det], motor, 0, 1, 6, per_step=step_point))
    assert [e["data"]["cam_unique_id"] for e in _events(docs)][:4] == [1, 2, 3, 3]


def test_a_lost_connection_fails_the_pending_move_at_once_and_skips_the_closing_baseline(engine):
    RE, docs, _ = engine
    det, motor, energy = CountingCamera(name="cam"), LosableMotor(name="m1"), SynAxis(name="energy")
    RE.preprocessors.append(SupplementalData(baseline=[energy]))  # the session's baseline, then the guard
    install_guard(RE)
    with pytest.raises(DeviceLostError, match=r"lost connection to SIM:m1.RBV of device 'm1' at point 2 "
                                              r"\(move of m1\)"):
        RE(bp.scan([det], motor, 0, 1, 5, per_step=step_point))
    assert _stop(docs)["reason"].startswith("lost connection to SIM:m1.RBV")  # the first cause
    assert len(_events(docs)) == 2 and len(_events(docs, "baseline")) == 1  # no closing baseline reading
    assert motor.pending[2][0].done and not motor.pending[2][0].success  # failed by the watchdog, not a time-out


def test_a_plans_own_time_outs_apply_inside_the_sessions_guard(engine, tmp_path):
    RE, docs, messages = engine
    install_guard(RE)
    install_guard(RE)  # idempotent
    assert len(RE.preprocessors) == 1
    det = CountingCamera(name="cam", finish=False)  # never finishes an exposure
    motors = {n: SynAxis(name=n) for n in ("pix", "piy", "eta")}
    with pytest.raises(TimeoutError, match=r"cam did not finish point 0 within 0.3 s"):
        RE(sxdm_map([det], motors["pix"], (0, 1, 2), motors["piy"], (0, 1, 2), motors["eta"], [1.0],
                    trigger_timeout_s=0.3))
    assert _stop(docs)["exit_status"] == "fail"
    assert not [m for m in messages if m.command == "null"]  # the nested guard's handshake stayed inside


def test_guard_refuses_bad_time_outs():
    with pytest.raises(ArgumentError, match="move_timeout_s must be > 0 s"):
        next(guarded(iter([]), move_timeout_s=0))


def test_step_point_records_what_one_nd_step_records_in_fewer_messages(engine):
    RE, docs, messages = engine

    def run(**kwargs):
        docs.clear()
        messages.clear()
        motor = SynAxis(name="m")
        det = SynGauss("det", motor, "m", center=0.5, Imax=100, sigma=0.3)
        RE(bp.grid_scan([det], motor, 0, 1, 3, SynAxis(name="n"), 0, 1, 2, **kwargs))
        data = [{k: v for k, v in e["data"].items()} for e in _events(docs)]
        return data, [m.command for m in messages]

    reference, ref_commands = run()  # bluesky's one_nd_step
    ours, commands = run(per_step=step_point)
    assert ours == reference
    assert commands.count("trigger") == 6 < ref_commands.count("trigger")  # the motors' do-nothing trigger skipped
    # n moves at every point, m every other: 2 + 5 + 2 moves; one wait for the moves and one for the trigger
    assert commands.count("set") == 9 == ref_commands.count("set") and commands.count("wait") == 12
    assert len(commands) < len(ref_commands)
    np.testing.assert_allclose([d["det"] for d in ours], [d["det"] for d in reference])
