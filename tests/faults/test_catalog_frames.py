"""Frames read through the catalog (Tiled's own HDF5 adapter), after an interrupted exposure.

Ctrl-C twice during an exposure leaves a frame in the detector file that no event names; the point
is taken again on resume. The catalog records each event's frame number (the datum's
``point_number``) and serves each event's own frame, to any Tiled reader, not the file's first n.
Frames encode the motor positions at exposure time, an independent truth."""

import h5py
import numpy as np
import pytest
from bluesky.utils import RunEngineInterrupted

from braggscope import storage
from braggscope.core.setup import ScanSetup
from braggscope.plans import sxdm_map
from braggscope.storage import frames as storage_frames

from .conftest import SHAPE, interrupt_at

SETUP = ScanSetup(energy_kev=8.33, distance_m=0.5, pixel_m=55e-6, cch=(4, 5), detector_shape=SHAPE, delta=18.0)


@pytest.mark.parametrize("phase", ["trigger", "read"])
def test_the_catalog_serves_each_events_frame_after_an_interrupted_exposure(inprocess, phase, monkeypatch):
    RE, client, d, _ = inprocess
    interrupt_at(RE, phase, d.det, 3)
    sample = f"catalog-frames-{phase}"
    with pytest.raises(RunEngineInterrupted):
        RE(sxdm_map([d.det], d.pix, (10, 14, 3), d.piy, (20, 22, 2), d.eta, [10.0], sample=sample, setup=SETUP))
    RE.msg_hook = None
    assert RE.resume().exit_status == "success"
    (run,) = storage.find_runs(client, sample=sample)
    with h5py.File(d.det.last_path, "r") as f:
        assert f["/entry/data/data"].shape[0] == 7  # 6 events, and the interrupted exposure's frame
    table = run["primary"].read(["pix", "piy"])
    expected = np.stack([np.round(np.asarray(table["pix"]) * 1000), np.round(np.asarray(table["piy"]) * 1000)], 1)
    image = run["primary"]["mpx1x4_image"]  # Tiled's array client: the server reads the file
    assert image.shape == (6,) + SHAPE
    frames = np.asarray(image.read())
    np.testing.assert_array_equal(frames[:, 0, :2], expected)
    np.testing.assert_array_equal(np.asarray(image[4])[0, :2], expected[4])  # one frame, sliced by the server
    # the readers agree, straight from the file and through the catalog (as for a remote catalog)
    np.testing.assert_array_equal(np.asarray(storage.event_frames(run))[:, 0, :2], expected)
    monkeypatch.setattr(storage_frames, "_direct_hdf5", lambda *args: None)
    np.testing.assert_array_equal(np.asarray(storage.event_frames(run))[:, 0, :2], expected)
