"""The Maxipix's datum names the frame's index in the HDF5 file, not ophyd's count of triggers.

An exposure the file plugin writes without a trigger of ours (an interrupted exposure taken again,
an acquisition started from a panel) puts a frame in the file that ophyd's datum counter does not
see; the datum of the next event must still name that event's own frame."""

import time

import h5py
import numpy as np
import pytest

from braggscope.storage.frames import UNIQUE_ID_DATASET

pytestmark = [pytest.mark.ioc, pytest.mark.timeout(120)]


def _take(det):
    det.trigger().wait(10)
    reading = det.read()
    datums = [doc for name, doc in det.collect_asset_docs() if name == "datum"]
    (datum,) = [d for d in datums if d["datum_id"] == reading["mpx1x4_image"]["value"]]
    return reading, datum["datum_kwargs"]["point_number"]


def test_the_datum_names_the_files_frame_after_a_frame_ophyd_did_not_trigger(sim_devices):
    det = sim_devices["detector"]
    det.stage()
    try:
        first, index = _take(det)
        assert index == 0 and first["mpx1x4_num_captured"]["value"] == 1
        det.cam.acquire.put(1)  # a frame written without ophyd's trigger (no datum for it)
        deadline = time.monotonic() + 10
        while det.hdf5.num_captured.get() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        while det.cam.acquire.get() != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert det.hdf5.num_captured.get() == 2
        second, index = _take(det)  # ophyd's counter says 1; the file holds it at 2
        assert index == 2 == second["mpx1x4_num_captured"]["value"] - 1
        path = det.hdf5.full_file_name.get()
    finally:
        det.unstage()
    with h5py.File(path, "r") as f:  # the frame the datum names is the event's (unique id, frame total)
        assert int(f[UNIQUE_ID_DATASET][index]) == int(second["mpx1x4_unique_id"]["value"])
        assert float(np.asarray(f["/entry/data/data"][index], dtype=np.float64).sum()) == \
            float(second["mpx1x4_stats_total"]["value"])
