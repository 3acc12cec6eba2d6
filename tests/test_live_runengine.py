"""Worker-thread dispatcher, live figure, and a real RunEngine end to end."""

import threading
import time

import numpy as np
import pytest
from bluesky import RunEngine
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import SynAxis
from ophyd.status import StatusBase

from braggscope.analysis.live.callback import LiveSXDM
from braggscope.analysis.live.dispatch import LiveMapDispatcher
from braggscope.analysis.live.plot import LiveMapPlot
from braggscope.core.setup import ScanSetup
from tests.test_live_reduction import (
    CCH,
    COLS,
    DISTANCE,
    ENERGY,
    NX,
    NY,
    PIXEL,
    PIXELS,
    ROWS,
    SIGMA_Q,
    check_truth,
    theta0,
    truth_q,
    xu_q_frame,
)


class SlowCallback:
    def __init__(self, delay_s=0.01, fail_on=None):
        self.delay_s, self.fail_on = delay_s, fail_on
        self.seen, self.flushes = [], 0
        self.thread = None

    def __call__(self, name, doc):
        self.thread = threading.current_thread()
        time.sleep(self.delay_s)
        if name == self.fail_on:
            raise RuntimeError("boom")
        self.seen.append(doc["i"])

    def flush(self):
        self.flushes += 1


def test_dispatcher_returns_fast_and_keeps_order():
    cb = SlowCallback(delay_s=0.005)
    times = []
    with LiveMapDispatcher(cb, maxsize=1000) as disp:
        for i in range(100):
            t0 = time.perf_counter()
            disp("event", {"i": i})
            times.append(time.perf_counter() - t0)
        assert disp.pending() > 50  # the worker is far behind, the caller is not
        disp.wait(timeout=30)
        assert cb.seen == list(range(100))
        assert cb.thread is not threading.current_thread()
        assert cb.flushes >= 1
    # RunEngine-side cost: a queue put, tens of microseconds (slack for a loaded machine)
    assert np.median(times) < 2e-4 and np.percentile(times, 95) < 1e-3
    assert not disp._thread.is_alive()


def test_dispatcher_backpressure_drops_nothing_and_reports_errors():
    cb = SlowCallback(delay_s=0.002, fail_on="descriptor")
    disp = LiveMapDispatcher(cb, maxsize=2)
    for i in range(40):
        disp("event", {"i": i})
    disp("descriptor", {"i": -1})
    disp("event", {"i": 40})
    with pytest.raises(RuntimeError, match="boom"):
        disp.wait(timeout=30)
    assert cb.seen == list(range(41))
    disp.close()
    with pytest.raises(RuntimeError, match="closed"):
        disp("event", {"i": 0})
    with pytest.raises(ValueError, match="maxsize"):
        LiveMapDispatcher(cb, maxsize=0)


# -- a real RunEngine ---------------------------------------------------------------

class GaussianModel:
    """Frame of the Gaussian-in-Q truth for the current motor positions (xrayutilities Q)."""

    def __init__(self, eta, piy, pix, x_range, y_range):
        self.eta, self.piy, self.pix = eta, piy, pix
        self.x_range, self.y_range = x_range, y_range
        self.q_true = truth_q()
        self.amp = np.array([p[3] for p in PIXELS]).reshape(NY, NX)
        self._q = {}

    def _index(self, pos, rng):
        start, stop, num = rng
        return int(round((pos - start) / ((stop - start) / (num - 1))))

    def render(self):
        eta = float(self.eta.position)
        key = round(eta, 6)
        if key not in self._q:
            self._q[key] = xu_q_frame(eta, 2 * theta0())
        qf = self._q[key]
        iy = self._index(self.piy.position, self.y_range)
        ix = self._index(self.pix.position, self.x_range)
        d2 = ((qf - self.q_true[:, iy, ix, None, None]) ** 2).sum(axis=0)
        return np.rint(2e4 * self.amp[iy, ix] * np.exp(-d2 / (2 * SIGMA_Q**2))).astype(np.uint32)


class InlineDetector(Device):
    """Minimal in-process detector: the frame is in the event (``<name>_image``)."""

    image = Cpt(Signal, value=np.zeros((ROWS, COLS), np.uint32), kind="normal")

    def __init__(self, render, **kwargs):
        super().__init__(**kwargs)
        self._render = render

    def trigger(self):
        self.image.put(self._render())
        status = StatusBase()
        status.set_finished()
        return status


def beam():
    return dict(energy_kev=ENERGY, distance_m=DISTANCE, pixel_m=PIXEL, cch=list(CCH),
                detector_shape=[ROWS, COLS], delta=2 * theta0(), nu=0.0, phi=0.0)


@pytest.fixture
def motors():
    return SynAxis(name="eta"), SynAxis(name="piy"), SynAxis(name="pix")


def timed(dispatcher, record):
    def call(name, doc):
        t0 = time.perf_counter()
        dispatcher(name, doc)
        record.append(time.perf_counter() - t0)
    return call


@pytest.mark.slow
@pytest.mark.parametrize("file_backed", [False, True])
def test_runengine_sxdm_map_end_to_end(motors, tmp_path, file_backed):
    from braggscope.plans.sxdm import sxdm_map

    eta, piy, pix = motors
    etas = list(theta0() + np.arange(-0.16, 0.1601, 0.01))
    x_range, y_range = (0.0, 1.5, NX), (0.0, 1.0, NY)
    model = GaussianModel(eta, piy, pix, x_range, y_range)
    if file_backed:
        from braggscope.simulators.inprocess import HDF5ImageDetector

        det = HDF5ImageDetector(render=model.render, write_dir=tmp_path, shape=(ROWS, COLS),
                                name="mpx1x4")
    else:
        det = InlineDetector(model.render, name="mpx1x4")
    live = LiveSXDM(batch_size=16)
    plot = LiveMapPlot(live, min_interval_s=0.2)
    dispatcher = LiveMapDispatcher(live, on_update=plot.update)
    RE = RunEngine({}, call_returns_result=True)
    costs = []
    RE.subscribe(timed(dispatcher, costs))
    try:
        RE(sxdm_map([det], pix, x_range, piy, y_range, eta, etas, snake=True, setup=ScanSetup(**beam())))
        dispatcher.wait(timeout=120)
    finally:
        dispatcher.close()
    ds = live.maps()
    assert ds.attrs["n_frames"] == len(etas) * NY * NX and ds.attrs["finished"] == 1
    check_truth(ds)
    assert np.median(costs) < 2e-4  # the RunEngine only pays for a queue put
    assert plot.n_draws >= 1
    png = plot.save(tmp_path / "live.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_live_plot_cost_does_not_grow(tmp_path):
    """Refresh time with 40 points drawn vs with 16k points drawn (128 x 128 map)."""
    import event_model

    ny = nx = 128
    rows = cols = 8
    md = dict(energy_kev=ENERGY, distance_m=DISTANCE, pixel_m=PIXEL, cch=[3.5, 3.5],
              detector_shape=[rows, cols], delta=2 * theta0(), nu=0.0, phi=0.0,
              eta=[theta0()], raster={"fast": "pix", "slow": "piy", "x": [0, 12.7, nx],
                                      "y": [0, 12.7, ny], "snake": False},
              shape=[1, ny, nx])
    run = event_model.compose_run(metadata=md)
    desc = run.compose_descriptor(name="primary", data_keys={
        "mpx1x4_image": {"source": "sim", "dtype": "array", "shape": [rows, cols]}})
    live = LiveSXDM(batch_size=256, background="none")  # noise frames: their counts, not their excess, drawn
    live("start", run.start_doc)
    live("descriptor", desc.descriptor_doc)
    plot = LiveMapPlot(live, min_interval_s=0.0)
    rng = np.random.default_rng(0)
    frame = rng.poisson(50, (rows, cols)).astype(np.uint32)

    def feed(k0, k1):
        for k in range(k0, k1):
            live("event", {"descriptor": desc.descriptor_doc["uid"], "seq_num": k + 1,
                           "data": {"mpx1x4_image": frame}})
        live.flush()

    def refresh_time(n=9):  # the best of 9: the suite runs beside other workers
        out = []
        for _ in range(n):
            live.version += 1
            t0 = time.perf_counter()
            assert plot.update()
            out.append(time.perf_counter() - t0)
        return min(out)

    feed(0, 40)
    plot.update(force=True)  # builds the figure
    early = refresh_time()
    feed(40, ny * nx)
    late = refresh_time()
    # a redraw that grew with the points drawn would be ~100x slower at 16k points than at 40
    assert late < 3 * early + 0.02, (early, late)
    assert plot.update() is False  # unchanged version: nothing to draw
    plot.min_interval_s = 10.0
    live.version += 1
    assert plot.update() is False  # rate limited
    assert plot.update(force=True) is True
    assert np.count_nonzero(plot._images["intensity"].get_array()) == ny * nx
