"""The operando live view: the tracking's scans stay out of the live maps; each measurement is recorded.

A checkpoint is a tracking run (``operando_role="track"``: line and rocking scans, not maps) then the
measurement (``operando_role="measure"``: an SXDM map); the map's frames are the Gaussian-in-Q model of
tests/test_live_reduction.py, whose d-spacings come from xrayutilities.
"""

import event_model
import numpy as np
import pytest

from braggscope.analysis.live.callback import LiveSXDM
from braggscope.analysis.live.operando import LiveOperando
from tests.test_live_reduction import NX, NY, PIXELS, inline_documents, make_frames, theta0, truth_q


def tracking_documents(checkpoint):
    run = event_model.compose_run(metadata={"plan_name": "operando_track", "operando_role": "track",
                                            "campaign_id": "c1", "checkpoint": checkpoint})
    desc = run.compose_descriptor(name="primary", data_keys={"xrf": {"source": "sim", "dtype": "number",
                                                                     "shape": []}})
    return [("start", run.start_doc), ("descriptor", desc.descriptor_doc),
            ("event", desc.compose_event(data={"xrf": 12.0}, timestamps={"xrf": 0.0}, seq_num=1)),
            ("stop", run.compose_stop())]


def test_tracking_runs_stay_out_of_the_live_maps_and_measurements_are_recorded(capsys):
    th = theta0()
    etas = th + np.arange(-0.16, 0.1601, 0.02)
    frames = make_frames(etas, 2 * th)
    view = LiveOperando(LiveSXDM(background="none"))
    state = {"voltage": 3.7, "lithium": 0.9, "time_s": 500.0}
    for checkpoint in (0, 1):
        for name, doc in tracking_documents(checkpoint):
            view(name, doc)
        docs = inline_documents(etas, 2 * th, frames)
        docs[0] = ("start", dict(docs[0][1], operando_role="measure", campaign_id="c1", checkpoint=checkpoint,
                                 operando={"state": dict(state, voltage=state["voltage"] + 0.1 * checkpoint)}))
        for name, doc in docs:
            view(name, doc)
    assert capsys.readouterr().err == ""  # no "not an SXDM map" line for the tracking runs
    history = view.history()
    assert [p["checkpoint"] for p in history] == [0, 1]
    assert [p["voltage"] for p in history] == pytest.approx([3.7, 3.8])
    amp = np.array([p[3] for p in PIXELS]).reshape(NY, NX)
    d_true = 2 * np.pi / np.linalg.norm(truth_q(), axis=0)
    assert history[-1]["d_mean"] == pytest.approx(d_true[amp >= 0.2 * amp.max()].mean(), rel=2e-6)
