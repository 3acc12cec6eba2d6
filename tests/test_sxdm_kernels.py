"""The fused numba SXDM kernels against the numpy reduction they replace.

The numpy path (``median_filter_frames``, ``clipped_background``, float32
passes and a matmul) is the reference: the fused kernel must give the same
sums to float32 rounding for every option it handles, and ``reduce_stack``
must route only those options to it.
"""

import dataclasses

import numpy as np
import pytest

from braggscope.analysis.sxdm import kernels as sxdm_kernels
from braggscope.analysis.sxdm import reduce as sxdm
from braggscope.analysis.sxdm.blocks import reduce_block
from braggscope.analysis.sxdm.filters import clipped_background, median_filter_frames
from braggscope.analysis.sxdm.options import MapOptions
from braggscope.analysis.sxdm.plan import make_plan
from braggscope.core.geometry import Geometry, bragg_angle

ENERGY = 8.33
SHAPE = (24, 30)


def _stack(dtype=np.int32, seed=1):
    rng = np.random.default_rng(seed)
    n_eta, ny, nx = 6, 3, 4
    lam = np.full((n_eta, ny, nx) + SHAPE, 1.5)
    lam[2:4, :, 1:, 8:12, 12:17] += 150.0  # a peak on part of the map
    lam[:, :, :, 3, 25] += 500.0  # a hot pixel
    return rng.poisson(lam).astype(dtype)


def _plan(frames, **kw):
    th = bragg_angle(2.0, ENERGY)
    eta = th + 0.05 * np.arange(frames.shape[0])
    g = Geometry(ENERGY, 0.5, 55e-6, (SHAPE[0] / 2, SHAPE[1] / 2))
    rest = {k: kw.pop(k) for k in ("pixel_mask", "monitor") if k in kw}
    return make_plan(frames, eta, g, 2 * th, 0.0, 0.0, options=MapOptions(**kw), x=None, y=None, chunk_mb=64.0,
                     **{"pixel_mask": None, "monitor": None, **rest})


def _numpy_twin(plan):
    """The same plan on the numpy path (bool mask, (n_eta, npix, 9) products)."""
    return dataclasses.replace(plan, fused=False, inside=plan.inside.astype(bool),
                               dq=np.ascontiguousarray(np.transpose(plan.dq, (0, 2, 1))))


@pytest.mark.parametrize("size", [1, 2])
@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float32])
def test_filtered_rows_match_the_numpy_median(size, dtype):
    raw = _stack(dtype)
    bad = np.zeros(SHAPE, bool)
    bad[3, 25] = bad[:, 7] = True
    good = (~bad).astype(np.float32)
    rows = np.arange(SHAPE[0], dtype=np.int64)
    got = sxdm_kernels.filtered_rows(raw, good, size, rows, *sxdm_kernels.masked_window_lists(~bad))
    ref = median_filter_frames(raw, size, pixel_mask=bad)  # the true median of the good pixels
    ref = ref.reshape(raw.shape[0], -1, SHAPE[0] * SHAPE[1])
    np.testing.assert_array_equal(got, ref)
    if size == 2:  # the filter does something (unlike silx's even sizes)
        assert not np.array_equal(got, raw.reshape(ref.shape).astype(np.float32))


def test_clipped_levels_match_clipped_background():
    rng = np.random.default_rng(3)
    values = rng.poisson(2.0, (5, 4000)).astype(np.float32)
    values[:, :60] += 300.0  # a peak to clip
    valid = rng.random(4000) > 0.1
    lv, sp = sxdm_kernels.clipped_levels(values, valid.astype(np.float32), 3.0, 5)
    ref_lv, ref_sp = clipped_background(values, valid, max_samples=None)
    np.testing.assert_allclose(lv, ref_lv, rtol=1e-5)
    np.testing.assert_allclose(sp, ref_sp, rtol=1e-5)
    assert np.all(np.abs(lv - 2.0) < 0.2)  # the peak is clipped away


def test_background_rows_sample_about_32k_voxels_centred():
    rows = sxdm_kernels.background_rows(20, 512, 512)
    assert 20 * rows.size * 512 >= 32768 and rows.size < 512
    assert abs(rows.mean() - 255.5) < 1.0  # centred on the detector
    np.testing.assert_array_equal(sxdm_kernels.background_rows(2, 24, 30), np.arange(24))


CASES = {
    "defaults": {},
    "no median": dict(median=1),
    "pixel mask": dict(pixel_mask=np.pad(np.ones((1, 1), bool), ((3, 20), (25, 4)))),
    "no background": dict(background="none"),
    "fixed background": dict(background=1.5),
    "monitor": dict(monitor=np.linspace(0.5, 1.5, 6)),
    "monitor with no beam": dict(monitor=np.where(np.arange(72).reshape(6, 3, 4) % 7 == 3, 0.0, 1.2)),
    "q roi": "roi",
    "detector roi": dict(detector_roi=(2, 20, 5, 28)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [np.int32, np.dtype(">u4")])
def test_fused_block_equals_the_numpy_path(case, dtype):
    frames = _stack(dtype)
    kw = CASES[case]
    if kw == "roi":  # the upper half of the peak in Qz
        q = sxdm.q_frames(Geometry(ENERGY, 0.5, 55e-6, (12, 15)), bragg_angle(2.0, ENERGY) + 0.05 * np.arange(6),
                          2 * bragg_angle(2.0, ENERGY), shape=SHAPE, offset=0.5)
        kw = dict(roi=(None, None, (float(np.median(q[:, 2])), float(q[:, 2].max()) + 1.0)))
    plan = _plan(frames, **kw)
    assert plan.fused
    if kw.get("roi") is not None:
        assert not plan.all_inside
    ys, xs = slice(0, 3), slice(1, 4)
    got = reduce_block(plan, ys, xs)
    ref = reduce_block(_numpy_twin(plan), ys, xs)
    assert got.keys() == ref.keys()
    for key in ref:
        scale = max(1e-6, float(np.nanmax(np.abs(ref[key]))))  # NaN: a frame without beam
        np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(ref[key], float), rtol=0,
                                   atol=2e-6 * scale, err_msg=key)
    assert np.all(got["s0"][:, 1:] > 1000)  # the peak was weighed


@pytest.mark.parametrize("background", ["constant", "none", 1.5])
def test_missing_frames_are_left_out_by_both_paths(background):
    """NaN frames (drift from outside the map) and frames of scale 0 (no beam) weigh nothing: the sums
    equal those of the same block with those frames' voxels removed, in the fused and numpy paths."""
    frames = _stack(np.float32)
    missing = np.zeros(frames.shape[:3], bool)
    missing[2, 0, 1] = missing[3, 1, 2] = missing[0, 2, 3] = True  # one in the peak
    monitor = np.ones(frames.shape[:3], np.float32)
    monitor[4, 2, 1] = 0.0
    holed = frames.copy()
    holed[missing] = np.nan
    # the frame scale as the plan holds it (reduce_stack would fill the no-beam hole from its neighbours)
    plan = dataclasses.replace(_plan(holed, background=background), monitor=monitor)
    ys, xs = slice(0, 3), slice(0, 4)
    got = reduce_block(plan, ys, xs)
    ref = reduce_block(_numpy_twin(plan), ys, xs)
    gone = missing | (monitor == 0)
    for result in (got, ref):
        assert np.array_equal(np.isnan(result["eta_intensity"]), gone)
        assert np.all(np.isfinite(result["s0"])) and np.all(np.isfinite(result["s1"]))
    for key in ref:
        np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(ref[key], float), rtol=2e-6,
                                   atol=1e-3, err_msg=key)
    # the pixel with a missing frame in the peak: its sums are those of the other angles alone
    kept = [e for e in range(6) if e != 2]
    alone = reduce_block(_plan(frames[kept], background=background), slice(0, 1), slice(1, 2))
    np.testing.assert_allclose(got["s0"][0, 1], alone["s0"][0, 0], rtol=1e-5)
    np.testing.assert_allclose(got["background"][0, 1], alone["background"][0, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["intensity"][0, 1], alone["intensity"][0, 0], rtol=1e-5)


def test_options_outside_the_kernel_take_the_numpy_path():
    frames = _stack()
    assert _plan(frames).fused
    assert not _plan(frames, background="snip").fused
    assert not _plan(frames, median=3).fused
    assert not _plan(frames, fit="gaussian").fused


def test_reduce_stack_same_maps_either_path(monkeypatch):
    frames = _stack()
    th = bragg_angle(2.0, ENERGY)
    eta = th + 0.05 * np.arange(6)
    g = Geometry(ENERGY, 0.5, 55e-6, (12, 15))
    fused = sxdm.reduce_stack(frames, eta, g, 2 * th, progress=False)
    monkeypatch.setattr(sxdm, "make_plan", lambda *a, **k: _numpy_twin(make_plan(*a, **k)))
    ref = sxdm.reduce_stack(frames, eta, g, 2 * th, progress=False)
    np.testing.assert_array_equal(fused.mask.values, ref.mask.values)
    m = ref.mask.values
    np.testing.assert_allclose(fused.q_norm.values[m], ref.q_norm.values[m], rtol=1e-6)
    np.testing.assert_allclose(fused.strain.values[m], ref.strain.values[m], atol=1.0)  # microstrain
