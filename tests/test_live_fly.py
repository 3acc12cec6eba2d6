"""Live maps of fly runs: frames placed by their captured positions, not by the order of the points.

The documents are those of an ``sxdm_fly`` run (one detector file and one position-capture file
per line, StreamResource/StreamDatum for the frames and the captured ``pix``/``piy``), written here
with lines flown in the other direction or off their commanded positions; the frames are the
Gaussian-in-Q model of tests/test_live_reduction.py (truth from xrayutilities).
"""

import event_model
import h5py
import numpy as np
import pytest

from braggscope.analysis.live.callback import LiveSXDM
from braggscope.core.eccentricity import EccentricityModel
from tests.test_live_reduction import (
    COLS,
    NX,
    NY,
    ROWS,
    check_truth,
    inline_documents,
    make_frames,
    start_metadata,
    theta0,
)

# the plan's eccentricity model: offsets up to about one grid step at the ends of the rocking range
ECC = {"eta0": float(theta0()), "x": [3.0, 0.0], "y": [-2.0, 0.0]}
X = np.linspace(0.0, 1.5, NX)  # start_metadata's commanded grid
Y = np.linspace(0.0, 1.0, NY)


@pytest.fixture(scope="module")
def scan():
    th = theta0()
    etas = th + np.arange(-0.16, 0.1601, 0.02)
    return etas, 2 * th, make_frames(etas, 2 * th)


def fly_documents(etas, delta, lines, tmp_path):
    """Documents of a fly run whose line ``(i_eta, iy)`` holds ``lines[i_eta][iy] = (frames, pix, piy)``."""
    run = event_model.compose_run(metadata=start_metadata(etas, delta, False, plan_name="sxdm_fly",
                                                          eccentricity=ECC))
    keys = {"mpx1x4_image": {"source": "sim", "dtype": "array", "shape": [ROWS, COLS], "external": "STREAM:",
                             "dtype_numpy": "<u4"}}
    for name in ("pix", "piy"):
        keys[name] = {"source": "sim", "dtype": "number", "shape": [], "external": "STREAM:"}
    desc = run.compose_descriptor(name="primary", data_keys=keys)
    docs = [("start", run.start_doc), ("descriptor", desc.descriptor_doc)]
    seq = 1
    for i_eta, rows in enumerate(lines):
        for iy, (frames, pix, piy) in enumerate(rows):
            image, pcap = tmp_path / f"line_{i_eta}_{iy}.h5", tmp_path / f"pcap_{i_eta}_{iy}.h5"
            with h5py.File(image, "w") as f:
                f.create_dataset("/entry/data/data", data=frames)
            with h5py.File(pcap, "w") as f:
                f["pix"], f["piy"] = pix, piy
            n = len(frames)
            for key, path, dataset in (("mpx1x4_image", image, "/entry/data/data"), ("pix", pcap, "/pix"),
                                       ("piy", pcap, "/piy")):
                res = run.compose_stream_resource(mimetype="application/x-hdf5", uri=f"file://localhost{path}",
                                                  data_key=key, parameters={"dataset": dataset})
                docs.append(("stream_resource", res.stream_resource_doc))
                docs.append(("stream_datum", res.compose_stream_datum(
                    indices={"start": 0, "stop": n}, seq_nums={"start": seq, "stop": seq + n},
                    descriptor=desc.descriptor_doc)))
            seq += n
    docs.append(("stop", run.compose_stop()))
    return docs


def _offsets(etas):
    """The captured positions' offsets from the commanded grid at each angle (the plan's eccentricity)."""
    return EccentricityModel.coerce(ECC, "eccentricity").offset(np.asarray(etas))


def _feed(docs):
    cb = LiveSXDM(announce=False)
    for name, doc in docs:
        cb(name, doc)
    assert cb.declined is None
    return cb


def test_lines_flown_backwards_land_where_they_were_captured(scan, tmp_path):
    """Every line swept high x to low (frames and captures in that order) while the start document
    says no snake: placed by point order they would be mirrored; by the captured x they are right."""
    etas, delta, frames = scan
    dx, dy = _offsets(etas)
    assert np.ptp(dx) > X[1] - X[0]  # the offsets move the lines by more than a grid step
    lines = [[(frames[k, iy, ::-1], X[::-1] + dx[k], np.full(NX, Y[iy] + dy[k]))
              for iy in range(NY)] for k in range(len(etas))]
    cb = _feed(fly_documents(etas, delta, lines, tmp_path))
    ds = cb.maps()
    assert cb.off_grid == 0 and cb.n_frames == frames.shape[0] * NY * NX and ds.complete.all()
    check_truth(ds)


def test_a_line_captured_one_step_off_fills_the_measured_points(scan, tmp_path):
    """Row 1 was flown one step to the right of its commanded positions (what it measured is the
    crystal one step further): its frames fill columns 1..NX-1, the last one (beyond the map) is
    not placed, column 0 of that row stays empty; every other pixel is as in the step map."""
    etas, delta, frames = scan
    step = X[1] - X[0]
    dx, dy = _offsets(etas)
    lines = []
    for k in range(len(etas)):
        rows = []
        for iy in range(NY):
            if iy == 1:
                measured = np.concatenate([frames[k, iy, 1:], frames[k, iy, -1:]])
                rows.append((measured, X + step + dx[k], np.full(NX, Y[iy] + dy[k])))
            else:
                rows.append((frames[k, iy], X + dx[k], np.full(NX, Y[iy] + dy[k])))
        lines.append(rows)
    cb = _feed(fly_documents(etas, delta, lines, tmp_path))
    fly = cb.maps()
    assert cb.off_grid == len(etas)  # one frame per angle captured beyond the last column
    expected_complete = np.ones((NY, NX), bool)
    expected_complete[1, 0] = False
    np.testing.assert_array_equal(fly.complete.values, expected_complete)
    step_map = _feed(inline_documents(etas, delta, frames)).maps()
    np.testing.assert_allclose(fly.intensity.values[expected_complete],
                               step_map.intensity.values[expected_complete], rtol=1e-9)
    np.testing.assert_allclose(fly.com_row.values[expected_complete], step_map.com_row.values[expected_complete],
                               rtol=1e-9)
