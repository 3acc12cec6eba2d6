"""Ctrl-C twice (an immediate pause) at every phase of a point, then resume, stop or abort.

An interrupted exposure leaves a frame in the detector file that no event names (the point is
taken again on resume): the readers must still give every event its own frame. Frames encode the
motor positions at exposure time, an independent truth.
"""

import h5py
import numpy as np
import pytest
from bluesky.utils import RunEngineInterrupted

from braggscope import storage
from braggscope.plans import sxdm_map

from .conftest import SHAPE, assert_frames_where_events_say, interrupt_at

PHASES = {"move": ("set", "pix", 3), "trigger": ("trigger", "det", 3), "read": ("read", "det", 3),
          "save": ("save", None, 3)}


def _map(d, sample):
    from braggscope.core.setup import ScanSetup

    setup = ScanSetup(energy_kev=8.33, distance_m=0.5, pixel_m=55e-6, cch=(4, 5), detector_shape=SHAPE, delta=18.0)
    return sxdm_map([d.det], d.pix, (10, 14, 3), d.piy, (20, 22, 2), d.eta, [10.0], sample=sample, setup=setup)


@pytest.mark.parametrize("phase", sorted(PHASES))
@pytest.mark.parametrize("then", ["resume", "stop", "abort"])
def test_immediate_pause_at_each_phase(inprocess, phase, then):
    RE, client, d, docs = inprocess
    command, target, nth = PHASES[phase]
    interrupt_at(RE, command, getattr(d, target) if target else None, nth)
    sample = f"pause-{phase}-{then}"
    with pytest.raises(RunEngineInterrupted):
        RE(_map(d, sample))
    assert RE.state == "paused"
    RE.msg_hook = None
    if then == "resume":
        result = RE.resume()
    elif then == "stop":
        result = RE.stop()
    else:
        result = RE.abort("operator abort: sample moved")
    (run,) = storage.find_runs(client, sample=sample)
    stop = run.metadata["stop"]
    # the run says what happened
    expected = {"resume": "success", "stop": "success", "abort": "abort"}[then]
    assert stop["exit_status"] == expected == result.exit_status
    if then == "abort":
        assert stop["reason"] == "operator abort: sample moved"
    n_events = stop["num_events"].get("primary", 0)
    if then == "resume":
        assert n_events == 6
        stack = storage.sxdm_stack(run)
        got = np.asarray(stack.frames)
        np.testing.assert_array_equal(got[0, :, :, 0, 0], np.round(stack.positions["pix"][0] * 1000))
        np.testing.assert_array_equal(got[0, :, :, 0, 0], np.tile(np.round(np.linspace(10, 14, 3) * 1000), (2, 1)))
    else:
        assert 2 <= n_events < 6
    # every frame on disk is where its event says
    report = assert_frames_where_events_say(run)
    assert report["events"] == n_events
    with h5py.File(d.det.last_path, "r") as f:
        in_file = f["/entry/data/data"].shape[0]
    if phase in ("trigger", "read"):
        # the interrupted exposure's frame is in the file; no event names it
        assert in_file == n_events + 1
        assert not report["frames_in_order"] or then != "resume"
    else:  # paused before the exposure or after the event: nothing to skip
        assert in_file == n_events and report["frames_in_order"]
