"""The detector ROI counter: areaDetector ROI1:/ROIStat1: served by the simulator, read over CA.

Every event's ``<det>_roistat1_total`` equals the frame in the HDF5 file summed
inside the window set with ``set_roi`` (frames paired by their unique id).
"""

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from bluesky import RunEngine

from braggscope.app.commands import make_commands, read_roi, set_roi
from braggscope.core.errors import ArgumentError
from braggscope.simulators.beamline import SimulatedBeamline
from braggscope.simulators.ioc_detector import UNIQUE_ID_DATASET, roi_bounds


def test_roi_bounds_as_the_roi_plugin():
    assert roi_bounds((10, 20), 2, 3, 5, 4) == (3, 7, 2, 7)
    assert roi_bounds((10, 20), 15, 8, 10, 10) == (8, 10, 15, 20)  # clipped to the frame
    assert roi_bounds((10, 20), 2, 3, 5, 4, enable_x=0) == (3, 7, 0, 20)  # a disabled axis spans it all
    assert roi_bounds((10, 20), 25, 0, 5, 4) == (0, 4, 20, 20)  # past the edge: empty


@pytest.mark.ioc
def test_roi_sum_over_ca_equals_the_frame_in_the_roi(sim_devices, sim_config, tmp_data_dir):
    det = sim_devices["detector"]
    rows, cols = (int(n) for n in det.frame_shape.get())
    bragg = SimulatedBeamline.from_config(sim_config).bragg_setup()
    window = (rows // 2 - 30, rows // 2 + 10, cols // 2 - 20, cols // 2 + 45)
    assert set_roi(det, *window) == window
    assert read_roi(det) == window
    with pytest.raises(ArgumentError, match="col1"):
        set_roi(det, 0, 10, 0, cols + 1)
    RE = RunEngine(call_returns_result=True)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(bps.mv(sim_devices["delta"], bragg["delta"], sim_devices["eta"], bragg["eta"],
              sim_devices["pix"], bragg["center_um"][0], sim_devices["piy"], bragg["center_um"][1]))
    RE(bp.scan([det], sim_devices["eta"], bragg["eta"] - 0.05, bragg["eta"] + 0.05, 4))
    events = [d for n, d in docs if n == "event" and f"{det.name}_roistat1_total" in d["data"]]
    resource = [d for n, d in docs if n == "resource"][0]
    path = "/" + resource["resource_path"].lstrip("/")
    with h5py.File(path, "r", swmr=True) as f:
        frames, ids = f["/entry/data/data"][()], f[UNIQUE_ID_DATASET][()]
    r0, r1, c0, c1 = window
    assert len(events) == 4
    totals = []
    for ev in events:
        frame = frames[int(np.flatnonzero(ids == ev["data"][f"{det.name}_unique_id"])[0])]
        totals.append(ev["data"][f"{det.name}_roistat1_total"])
        assert totals[-1] == frame[r0:r1, c0:c1].sum(dtype=np.int64)
        assert ev["data"][f"{det.name}_stats_total"] == frame.sum(dtype=np.int64)
    assert max(totals) > 0
    descriptor = [d for n, d in docs if n == "descriptor" and d["name"] == "primary"][0]
    config = descriptor["configuration"][det.name]["data"]
    assert (config[f"{det.name}_roi1_min_y"], config[f"{det.name}_roi1_size_x"]) == (r0, c1 - c0)  # recorded
    assert f"{det.name}_roistat1_total" in descriptor["hints"][det.name]["fields"]

    # ct() over CA: the ROI counter of one count equals the frame it wrote, summed in the window
    values = make_commands(RE, sim_devices, out=lambda line: None).ct(0.01, det)
    with h5py.File(det.hdf5.full_file_name.get(), "r", swmr=True) as f:
        frame = f["/entry/data/data"][-1]
    assert values[f"{det.name}_roistat1_total"] == frame[r0:r1, c0:c1].sum(dtype=np.int64)
    set_roi(det, 0, rows, 0, cols)
