"""Live maps normalised by the run's incident-flux monitor (issue 21): a refill mid-rocking and frames without beam.

The frames are those of the independent model of tests/test_live_reduction.py (a Gaussian in Q on xrayutilities'
Q of every pixel, closed-form truth) times the flux of each point; the run records the flux as ``mon1``.
"""

import numpy as np
import pytest

pytest.importorskip("xrayutilities")

import event_model  # noqa: E402

from braggscope.analysis.live.callback import LiveSXDM  # noqa: E402
from tests.test_live_reduction import (  # noqa: E402
    COLS,
    NX,
    NY,
    ROWS,
    check_truth,
    feed,
    make_frames,
    raster_order,
    start_metadata,
    theta0,
)


@pytest.fixture(scope="module")
def flux_run():
    th = theta0()
    etas = th + np.arange(-0.16, 0.1601, 0.01)
    n = len(etas)
    flux = np.where(np.arange(n) < n // 2, 0.75, 1.2)[:, None, None] * np.ones((n, NY, NX))  # refill mid-rocking
    flux[5, 1, :2] = 0.0  # beam lost for two points in the rocking curves' tails (0.11 deg off), and one more
    flux[0, 2, 3] = 0.0
    frames = make_frames(etas, 2 * th, scale=2e4)
    lit = np.rint(frames * flux[..., None, None]).astype(np.uint32)
    return etas, 2 * th, lit, flux


def documents(etas, delta, frames, flux, *, page=False, name="mon1", start_extra=None):
    run = event_model.compose_run(metadata=start_metadata(etas, delta, snake=True, **(start_extra or {})))
    docs = [("start", run.start_doc)]
    desc = run.compose_descriptor(name="primary", data_keys={
        "mpx1x4_image": {"source": "sim", "dtype": "array", "shape": [ROWS, COLS], "dtype_numpy": "<u4"},
        name: {"source": "sim", "dtype": "number", "shape": []}})
    docs.append(("descriptor", desc.descriptor_doc))
    order = raster_order(etas, True, "map")
    readings = [1.0e5 * float(flux[c]) for c in order]
    if page:
        docs.append(("event_page", desc.compose_event_page(
            data={"mpx1x4_image": [frames[c] for c in order], name: readings},
            timestamps={"mpx1x4_image": [0.0] * len(order), name: [0.0] * len(order)},
            seq_num=list(range(1, len(order) + 1)), validate=False)))
    else:
        for k, c in enumerate(order):
            docs.append(("event", desc.compose_event(data={"mpx1x4_image": frames[c], name: readings[k]},
                                                     timestamps={"mpx1x4_image": 0.0, name: 0.0}, seq_num=k + 1)))
    docs.append(("stop", run.compose_stop()))
    return docs


@pytest.mark.parametrize("page", [False, True])
def test_live_maps_are_normalised_by_the_run_monitor(flux_run, page):
    etas, delta, frames, flux = flux_run
    live = LiveSXDM(announce=False, background="none")  # noise-free frames: the intensity is their plain sum
    feed(live, documents(etas, delta, frames, flux, page=page))
    ds = live.maps()
    check_truth(ds, tol_strain=3.0)  # the peak centres of the steady beam
    assert ds.attrs["monitor"] == "mon1" and ds.attrs["frames_without_beam"] == 3
    assert ds.attrs["monitor_reference"] == pytest.approx(1.0e5 * 0.75)
    assert bool(ds.complete.all())  # a frame without beam is seen, and weighs nothing
    # the per-angle intensity refers to the first reading's flux on both sides of the refill
    steady = make_frames(etas, delta, scale=2e4).astype(float).sum(axis=(-2, -1))
    beam = flux > 0
    strong = beam & (steady > 1e4)  # (each pixel's counts were rounded after the flux: the tails are coarse)
    assert strong.sum() > 100
    np.testing.assert_allclose(ds.intensity_eta.values[strong], 0.75 * steady[strong], rtol=2e-3, atol=100)
    assert np.all(ds.intensity_eta.values[~beam] == 0)


def test_without_the_monitor_the_refill_biases_the_maps(flux_run):
    etas, delta, frames, flux = flux_run
    plain = LiveSXDM(announce=False, monitor=None)
    feed(plain, documents(etas, delta, frames, flux))
    assert plain.maps().attrs["normalisation"] == "none"
    with pytest.raises(AssertionError):
        check_truth(plain.maps(), tol_strain=3.0)


def test_the_start_document_names_the_monitor(flux_run):
    etas, delta, frames, flux = flux_run
    live = LiveSXDM(announce=False)
    feed(live, documents(etas, delta, frames, flux, name="diode", start_extra={"monitor": "diode"}))
    assert live.maps().attrs["monitor"] == "diode"
    check_truth(live.maps(), tol_strain=3.0)
    unnamed = LiveSXDM(announce=False)  # a field that is neither named nor mon1: no normalisation
    feed(unnamed, documents(etas, delta, frames, flux, name="diode"))
    assert unnamed.maps().attrs["normalisation"] == "none"
