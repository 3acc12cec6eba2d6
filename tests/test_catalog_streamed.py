"""The catalog writer registers a fly scan's streamed frames in few requests, all of them by the stop,
and readers see them while the run is written."""

import time

import h5py
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from event_model import ComposeStreamResource, StreamRange
from ophyd.status import Status

ROWS, COLS, PER_LINE = 4, 5, 6


class LineFlyer:
    """A minimal flyer: each kickoff writes one file of ``PER_LINE`` frames (frame value = global index)."""

    name = "fly"
    parent = None

    def __init__(self, folder):
        self.folder, self.index, self._pending = folder, 0, []

    def kickoff(self):
        path = self.folder / f"line_{len(self._pending) + self.index // PER_LINE:04d}.h5"
        values = np.arange(self.index, self.index + PER_LINE, dtype=np.uint32)
        with h5py.File(path, "w") as f:
            f["data"] = np.broadcast_to(values[:, None, None], (PER_LINE, ROWS, COLS))
        self._pending.append(path)
        return _done(self)

    def complete(self):
        return _done(self)

    def describe_collect(self):
        return {"fly_image": {"source": "sim", "shape": [ROWS, COLS], "dtype": "array", "dtype_numpy": "<u4",
                              "external": "STREAM:"}}

    def collect_asset_docs(self, index=None):
        compose = ComposeStreamResource()
        pending, self._pending = self._pending, []
        for path in pending:
            bundle = compose(mimetype="application/x-hdf5", uri=f"file://localhost{path}", data_key="fly_image",
                             parameters={"dataset": "/data", "chunk_shape": [1, ROWS, COLS], "swmr": False})
            yield "stream_resource", bundle.stream_resource_doc
            yield "stream_datum", bundle.compose_stream_datum(indices=StreamRange(start=0, stop=PER_LINE))
            self.index += PER_LINE

    def get_index(self):
        return self.index


def _done(obj):
    status = Status(obj=obj)
    status.set_finished()
    return status


@pytest.fixture
def catalog(tmp_path):
    from braggscope import storage
    from braggscope.core.config import load_config

    cfg = load_config()
    cfg.set("storage.data_dir", str(tmp_path / "data"))
    cfg.set("storage.catalog_server", "off")
    cfg.set("detector.read_path", str(tmp_path / "det"))
    (tmp_path / "det").mkdir()
    return storage.open_catalog(cfg)


def test_streamed_frames_are_registered_in_few_requests_and_complete_at_stop(catalog, tmp_path):
    from braggscope.storage import BackgroundWriter
    from braggscope.storage.catalog_writer import CatalogWriter, _RetrySafeRunWriter

    http = catalog.context.http_client
    send, puts = http.send, []

    def counting(request, *args, **kwargs):
        if request.method == "PUT" and "/data_source/" in request.url.path:
            puts.append(time.monotonic())
        return send(request, *args, **kwargs)

    http.send = counting
    seen_during_run = []
    flyer = LineFlyer(tmp_path / "det")
    lines = 12

    def plan():
        yield from bps.declare_stream(flyer, name="primary", collect=True)
        for i in range(lines):
            yield from bps.kickoff(flyer, wait=True)
            yield from bps.complete(flyer, wait=True)
            yield from bps.collect(flyer, name="primary")
            yield from bps.sleep(0.15)
            if i == lines - 2:  # 1.6 s in, more than the update interval: readers see rows
                writer.flush()
                seen_during_run.append(catalog[started["uid"]]["primary"]["fly_image"].shape[0])

    RE, started = RunEngine(), {}
    RE.subscribe(lambda name, doc: started.update(uid=doc["uid"]) if name == "start" else None)
    writer = BackgroundWriter(CatalogWriter(catalog, batch_size=50))
    RE.subscribe(writer)
    try:
        (uid,) = RE(bpp.run_wrapper(plan()))
    finally:
        http.send = send
    frames = np.asarray(catalog[uid]["primary"]["fly_image"].read())
    assert frames.shape == (lines * PER_LINE, ROWS, COLS)
    np.testing.assert_array_equal(frames[:, 0, 0], np.arange(lines * PER_LINE))  # every frame, in order
    # one update per interval, not one per line (the stock writer: one per line, all at the stop)
    interval = _RetrySafeRunWriter.update_interval_s
    assert 1 <= len(puts) <= lines // 2
    assert 0 < seen_during_run[0] < lines * PER_LINE
    assert all(b - a >= interval * 0.9 for a, b in zip(puts[:-2], puts[1:-1]))  # the last one: at the stop
