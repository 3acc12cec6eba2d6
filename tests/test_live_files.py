"""File-backed frames: AD_HDF5 resource/datum and StreamResource/StreamDatum.

The HDF5 files are written here, by a writer thread that lags behind the
documents (the callback must retry until the frames are in the file).
"""

import os
import threading
import time

import event_model
import h5py
import numpy as np
import pytest

from braggscope.analysis.live.callback import LiveSXDM
from braggscope.analysis.live.frames import FrameNotReady, FrameResolver, read_hdf5_rows
from tests.test_live_reduction import COLS, ROWS, check_truth, make_frames, raster_order, start_metadata, theta0

DSET = "/entry/data/data"


@pytest.fixture(scope="module")
def scan():
    th = theta0()
    etas = th + np.arange(-0.16, 0.1601, 0.01)
    frames = make_frames(etas, 2 * th)
    order = raster_order(etas, True)
    stack = np.stack([frames[c] for c in order])  # acquisition order, as a file writer would
    return etas, 2 * th, stack


def _write(path, frames):
    """Write a complete file next to ``path`` and move it in place (atomic on POSIX)."""
    tmp = f"{path}.part"
    with h5py.File(tmp, "w") as f:
        f.create_dataset(DSET, data=frames, chunks=(1,) + frames.shape[1:])
    os.replace(tmp, path)


def write_lagging(path, stack, n_first, delay_s, step=50):
    """Write the first ``n_first`` frames now, then grow the file in a thread after ``delay_s``.

    Each growth step replaces the file by a longer one, as a writer flushing
    in blocks would make it look to a reader that opens it afresh.
    """
    _write(path, stack[:n_first])

    def grow():
        time.sleep(delay_s)
        for k1 in range(n_first + step, len(stack) + step, step):
            _write(path, stack[:min(k1, len(stack))])
            time.sleep(0.01)

    t = threading.Thread(target=grow, daemon=True)
    t.start()
    return t


def ad_hdf5_documents(etas, delta, stack, tmp_path):
    run = event_model.compose_run(metadata=start_metadata(etas, delta, True))
    docs = [("start", run.start_doc)]
    desc = run.compose_descriptor(name="primary", data_keys={
        "mpx1x4_image": {"source": "PV:HDF1", "dtype": "array", "shape": [ROWS, COLS],
                         "external": "FILESTORE:", "dtype_numpy": "<u4"}})
    docs.append(("descriptor", desc.descriptor_doc))
    res = run.compose_resource(spec="AD_HDF5", root=str(tmp_path), resource_path="scan.h5",
                               resource_kwargs={"frame_per_point": 1})
    docs.append(("resource", res.resource_doc))
    for k in range(len(stack)):
        datum = res.compose_datum(datum_kwargs={"point_number": k})
        docs.append(("datum", datum))
        docs.append(("event", desc.compose_event(
            data={"mpx1x4_image": datum["datum_id"]}, timestamps={"mpx1x4_image": 0.0},
            filled={"mpx1x4_image": False}, seq_num=k + 1)))
    docs.append(("stop", run.compose_stop()))
    return docs


def test_ad_hdf5_datum_frames_with_writer_lagging(scan, tmp_path):
    etas, delta, stack = scan
    docs = ad_hdf5_documents(etas, delta, stack, tmp_path)
    writer = write_lagging(tmp_path / "scan.h5", stack, n_first=40, delay_s=0.3)
    cb = LiveSXDM(frame_timeout_s=20.0)
    t0 = time.monotonic()
    for name, doc in docs:
        cb(name, doc)
    waited = time.monotonic() - t0
    writer.join(10)
    assert waited >= 0.25  # it really had to wait for the writer
    ds = cb.maps()
    assert ds.complete.all()
    check_truth(ds)


def test_stream_resource_datum_frames(scan, tmp_path):
    etas, delta, stack = scan
    path = tmp_path / "stream.h5"
    writer = write_lagging(path, stack, n_first=10, delay_s=0.2)
    run = event_model.compose_run(metadata=start_metadata(etas, delta, True))
    desc = run.compose_descriptor(name="primary", data_keys={
        "mpx1x4_image": {"source": "sim", "dtype": "array", "shape": [ROWS, COLS],
                         "external": "STREAM:", "dtype_numpy": "<u4"},
        "eta": {"source": "sim", "dtype": "number", "shape": []}})
    sres = run.compose_stream_resource(mimetype="application/x-hdf5",
                                       uri=f"file://localhost{path}", data_key="mpx1x4_image",
                                       parameters={"dataset": DSET, "chunk_shape": [1, ROWS, COLS]})
    cb = LiveSXDM()
    cb("start", run.start_doc)
    cb("descriptor", desc.descriptor_doc)
    cb("stream_resource", sres.stream_resource_doc)
    n = len(stack)
    for k0 in range(0, n, 37):
        k1 = min(k0 + 37, n)
        cb("stream_datum", sres.compose_stream_datum(
            indices={"start": k0, "stop": k1}, seq_nums={"start": k0 + 1, "stop": k1 + 1},
            descriptor=desc.descriptor_doc))
        for k in range(k0, k1):  # events carry only the other fields
            cb("event", desc.compose_event(data={"eta": 0.0}, timestamps={"eta": 0.0},
                                           seq_num=k + 1))
    cb("stop", run.compose_stop())
    writer.join(10)
    check_truth(cb.maps())


def test_read_retries_then_times_out_with_clear_error(tmp_path):
    path = tmp_path / "short.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(DSET, data=np.zeros((2, 4, 4), np.uint32))
    assert read_hdf5_rows(str(path), DSET, 1, 2).shape == (1, 4, 4)
    t0 = time.monotonic()
    with pytest.raises(FrameNotReady, match="has 2 frames, need 3"):
        read_hdf5_rows(str(path), DSET, 2, 3, timeout_s=0.3)
    assert 0.25 < time.monotonic() - t0 < 2.0
    with pytest.raises(FrameNotReady, match="file not found"):
        read_hdf5_rows(str(tmp_path / "missing.h5"), DSET, 0, 1, timeout_s=0.05)
    with pytest.raises(ValueError, match="start"):
        read_hdf5_rows(str(path), DSET, 3, 1)
    resolver = FrameResolver()
    with pytest.raises(KeyError, match="no datum document"):
        resolver.frame("nope")
    resolver.resource({"uid": "r", "spec": "TIFF", "root": "", "resource_path": "x",
                       "resource_kwargs": {}})
    resolver.datum({"datum_id": "r/0", "resource": "r", "datum_kwargs": {"point_number": 0}})
    with pytest.raises(ValueError, match="TIFF"):
        resolver.frame("r/0")


def test_frame_per_point_sums_frames(tmp_path):
    data = np.arange(4 * 3 * 5, dtype=np.uint32).reshape(4, 3, 5)
    with h5py.File(tmp_path / "fpp.h5", "w") as f:
        f.create_dataset(DSET, data=data)
    resolver = FrameResolver()
    resolver.resource({"uid": "r", "spec": "AD_HDF5", "root": str(tmp_path),
                       "resource_path": "fpp.h5", "resource_kwargs": {"frame_per_point": 2}})
    resolver.datum_page({"resource": "r", "datum_id": ["r/0", "r/1"],
                         "datum_kwargs": {"point_number": [0, 1]}})
    np.testing.assert_array_equal(resolver.frame("r/1"), data[2] + data[3])


@pytest.mark.parametrize("layout", ["blosc-edge-chunks", "blosc-fly", "gzip", "contiguous"])
def test_rows_read_as_h5py_reads_them(tmp_path, layout):
    """The GIL-friendly reader (Blosc chunks one frame deep decoded by numcodecs, else a few frames per
    h5py call) returns exactly what h5py's slicing returns, edge chunks included."""
    import hdf5plugin

    from braggscope.analysis.live.frames import read_rows

    rng = np.random.default_rng(3)
    data = rng.poisson(2.0, (9, 100, 70)).astype(np.uint32)
    options = {"blosc-edge-chunks": dict(chunks=(1, 32, 40), **hdf5plugin.Blosc(
                   cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.BITSHUFFLE)),
               "blosc-fly": dict(chunks=(1, 20, 70), **hdf5plugin.Blosc(cname="lz4", clevel=5,
                                                                        shuffle=hdf5plugin.Blosc.SHUFFLE)),
               "gzip": dict(chunks=(2, 100, 70), compression="gzip"),
               "contiguous": {}}[layout]
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data, **options)
    with h5py.File(path, "r") as f:
        for start, stop in ((0, 9), (2, 7), (8, 9)):
            got = read_rows(f["data"], start, stop)
            assert got.dtype == data.dtype
            np.testing.assert_array_equal(got, data[start:stop])
