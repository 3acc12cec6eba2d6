"""SXDM reduction of a catalog run: sxdm_map plan -> embedded catalog -> storage.sxdm_stack -> maps.

The detector serves frames of the independent forward model (tests/test_sxdm_model.py) chosen
by the motor positions, so the run's maps must equal the reduction of the numpy stack.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("xrayutilities")
pytest.importorskip("tiled")

from bluesky import RunEngine

from braggscope import storage
from braggscope.analysis.sxdm import reduce_map
from braggscope.analysis.sxdm.reduce import reduce_stack
from braggscope.core.config import load_config, save_config
from braggscope.core.geometry import Geometry
from braggscope.core.setup import ScanSetup
from braggscope.plans import sxdm_map
from braggscope.simulators.inprocess import HDF5ImageDetector, LimitedSynAxis
from tests.test_sxdm_model import forward_stack


@pytest.fixture(scope="module")
def run_and_truth(tmp_path_factory):
    root = tmp_path_factory.mktemp("sxdm_catalog")
    cfg = load_config()
    cfg.set("storage.data_dir", str(root / "data"))
    cfg.set("detector.read_path", str(root / "detector"))
    client = storage.open_catalog(cfg)
    t = forward_stack(ny=4, nx=5, n_eta=9, shape=(48, 48), drift_px=0.0, seed=41)
    pix = LimitedSynAxis(name="pix", limits=(0, 100))
    piy = LimitedSynAxis(name="piy", limits=(0, 100))
    eta = LimitedSynAxis(name="eta", limits=(-5, 120))
    x0, y0, step = 10.0, 20.0, 0.4

    def render():
        i = int(np.argmin(np.abs(t.eta - eta.position)))
        iy = int(round((piy.position - y0) / step))
        ix = int(round((pix.position - x0) / step))
        return t.frames[i, iy, ix]

    det = HDF5ImageDetector(render=render, write_dir=root / "detector", shape=(48, 48))
    RE = RunEngine(call_returns_result=True)
    storage.subscribe_writer(RE, client)
    uid = RE(sxdm_map([det], pix, (x0, x0 + 4 * step, 5), piy, (y0, y0 + 3 * step, 4), eta, list(t.eta),
                      snake=True, sample="sxdm-reduction-test",
                      setup=ScanSetup(energy_kev=t.energy_kev, distance_m=t.distance_m, pixel_m=t.pixel_m, cch=t.cch,
                                      detector_shape=(48, 48), delta=t.delta, nu=t.nu, phi=0.0))).run_start_uids[0]
    cfg_path = root / "beamline.toml"
    save_config(cfg, cfg_path)
    return client, uid, t, cfg_path


def test_catalog_run_reduces_like_the_numpy_stack(run_and_truth):
    client, uid, t, _ = run_and_truth
    stack = storage.sxdm_stack(storage.load_run(client, uid))
    assert stack.frames.shape == t.frames.shape
    maps = reduce_map(stack, progress=False)
    ref = reduce_stack(t.frames, t.eta, Geometry(t.energy_kev, t.distance_m, t.pixel_m, t.cch),
                       t.delta, t.nu, progress=False)
    np.testing.assert_array_equal(maps.mask.values, ref.mask.values)
    np.testing.assert_allclose(maps.strain.values, ref.strain.values, atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(maps.x.values, 10.0 + 0.4 * np.arange(5))
    np.testing.assert_allclose(maps.y.values, 20.0 + 0.4 * np.arange(4))


def test_cli_with_a_run_id(run_and_truth, tmp_path):
    from braggscope.analysis.sxdm.files import load_maps
    from braggscope.app.cli.main import main

    client, uid, t, cfg_path = run_and_truth
    out = tmp_path / "maps.h5"
    rc = main(["--config", str(cfg_path), "reduce", "sxdm", uid[:8], "--out", str(out), "--quiet"])
    assert rc == 0
    maps = load_maps(out)
    assert maps.strain.shape == (4, 5) and int(maps.mask.sum()) > 5


@pytest.fixture(scope="module")
def run_with_counters(tmp_path_factory):
    """A map run recording an incident-flux monitor ``mon1`` (a refill between two angles) and a fluorescence
    counter ``xrf_counts`` with every point; the frames follow the flux."""
    from ophyd.sim import SynSignal

    root = tmp_path_factory.mktemp("sxdm_counters")
    cfg = load_config()
    cfg.set("storage.data_dir", str(root / "data"))
    cfg.set("detector.read_path", str(root / "detector"))
    client = storage.open_catalog(cfg)
    flux = np.linspace(1.0, 0.8, 9)[:, None, None] * np.ones((9, 4, 5))
    flux[5:] *= 1.3  # the refill
    t = forward_stack(ny=4, nx=5, n_eta=9, shape=(48, 48), drift_px=0.0, flux=flux, fluorescence=200.0, seed=42)
    pix = LimitedSynAxis(name="pix", limits=(0, 100))
    piy = LimitedSynAxis(name="piy", limits=(0, 100))
    eta = LimitedSynAxis(name="eta", limits=(-5, 120))
    x0, y0, step = 10.0, 20.0, 0.4

    def point():  # clipped: the signals are read once when made, before any move
        return (int(np.argmin(np.abs(t.eta - eta.position))), int(np.clip(round((piy.position - y0) / step), 0, 3)),
                int(np.clip(round((pix.position - x0) / step), 0, 4)))

    det = HDF5ImageDetector(render=lambda: t.frames[point()], write_dir=root / "detector", shape=(48, 48))
    mon1 = SynSignal(func=lambda: 1.0e4 * flux[point()], name="mon1")
    xrf = SynSignal(func=lambda: t.fluorescence[point()], name="xrf_counts")
    RE = RunEngine(call_returns_result=True)
    storage.subscribe_writer(RE, client)
    uid = RE(sxdm_map([det, mon1, xrf], pix, (x0, x0 + 4 * step, 5), piy, (y0, y0 + 3 * step, 4), eta,
                      list(t.eta), snake=True,
                      setup=ScanSetup(energy_kev=t.energy_kev, distance_m=t.distance_m, pixel_m=t.pixel_m, cch=t.cch,
                                      detector_shape=(48, 48), delta=t.delta, nu=t.nu, phi=0.0))).run_start_uids[0]
    return client, uid, t, flux


def test_a_run_recording_a_monitor_is_normalised_by_it(run_with_counters):
    client, uid, t, flux = run_with_counters
    stack = storage.sxdm_stack(storage.load_run(client, uid))
    assert stack.monitor == "mon1" and stack.fluorescence == "xrf_counts"
    np.testing.assert_allclose(stack.counters["mon1"], 1.0e4 * flux)  # raster order, the snake undone
    np.testing.assert_allclose(stack.counters["xrf_counts"], t.fluorescence)
    maps = reduce_map(stack, progress=False)
    ref = reduce_stack(t.frames, t.eta, Geometry(t.energy_kev, t.distance_m, t.pixel_m, t.cch), t.delta, t.nu,
                       monitor=1.0e4 * flux, progress=False)
    assert maps.attrs["monitor"] == "mon1"
    np.testing.assert_array_equal(maps.mask.values, ref.mask.values)
    np.testing.assert_allclose(maps.strain.values, ref.strain.values, atol=1e-3, equal_nan=True)
    plain = reduce_map(stack, monitor=None, progress=False)
    assert plain.attrs["normalisation"] == "none"
    assert np.nanmax(np.abs(plain.strain.values - ref.strain.values)) > 1.0
