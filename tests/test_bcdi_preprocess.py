"""BCDI pre-processing: mask, background, crop/centre, binning, padding, oversampling, BLISS input."""

import numpy as np
import pytest
from scipy.fft import next_fast_len

from braggscope.analysis.bcdi.preprocess import (
    MAXIPIX_SATURATION,
    bin_frames,
    detector_mask,
    oversampling_from_data,
    pad_fast,
    prepare,
)
from braggscope.analysis.readers import read_bliss_rocking
from braggscope.core.geometry import oversampling_detector
from tests.test_bcdi_helpers import far_field, paper_meta, synthetic_crystal, write_bliss


@pytest.fixture(scope="module")
def scan():
    """The synthetic crystal's far field (64^3) placed off-centre in bigger frames, background 2 counts."""
    rho, shape, _ = synthetic_crystal()
    peak = far_field(rho, seed=3)
    rng = np.random.default_rng(4)
    frames = rng.poisson(2.0, size=(64, 100, 120)).astype(np.float64)
    frames[:, 20:84, 40:104] += peak  # peak centre at (32, 52, 72)
    meta = paper_meta(64, 100, 120)
    return frames.astype(np.uint32), meta, peak


def test_maxipix_gaps_hot_and_saturated_pixels():
    rng = np.random.default_rng(0)
    frames = rng.poisson(1.0, size=(3, 516, 516)).astype(np.uint32)
    frames[:, 100, 100] = 5000  # hot pixel
    frames[1, 400, 50] = MAXIPIX_SATURATION  # saturated once
    yy, xx = np.mgrid[:516, :516]
    frames += (2000 * np.exp(-((yy - 300) ** 2 + (xx - 320) ** 2) / 20.0)).astype(np.uint32)  # a real peak
    m = detector_mask(frames)
    assert m[255:261, :].all() and m[:, 255:261].all()
    assert not m[:254, :254][~((yy < 254) & (xx < 254))[:254, :254]].any()
    assert m[100, 100] and m[400, 50]
    assert not m[295:306, 315:326].any()  # the Bragg peak is not a hot pixel
    assert m.sum() == 6 * 516 * 2 - 36 + 2
    assert not detector_mask(frames, gaps=None)[257, 10]
    with pytest.raises(ValueError, match="gaps"):
        detector_mask(frames[:, :100, :100], gaps="maxipix")


def test_prepare_centres_crops_and_subtracts(scan):
    frames, meta, peak = scan
    d = prepare(frames, meta, shape=(None, 64, 64), center="com")
    assert d.intensity.shape == (64, 64, 64)
    r0, c0 = d.crop[1].start, d.crop[2].start
    assert abs(r0 - 20) <= 1 and abs(c0 - 40) <= 1  # the peak's centre of mass is within a pixel of 52, 72
    assert d.meta["cch"] == (50 - r0, 60 - c0)  # direct-beam pixel moves with the crop
    # background of 2 counts removed: the total matches the peak (clipping at 0 leaves ~1 %)
    assert d.intensity.sum() == pytest.approx(peak.sum(), rel=0.015)  # +6 % without the subtraction
    assert d.eta == pytest.approx(meta["eta"])
    assert d.meta["eta_step"] == pytest.approx(0.0073)


def test_prepare_from_pair_and_max_finder(scan):
    frames, meta, _ = scan
    d = prepare((frames, meta), shape=(None, 48, 48), center="max", background=None)
    assert d.intensity.shape == (64, 48, 48)
    i = np.unravel_index(np.argmax(d.intensity), d.intensity.shape)
    assert np.allclose(i, (32, 24, 24), atol=2)


def test_padding_binning_and_mask():
    data = np.ones((3, 61, 50), np.float32)
    mask = np.zeros(data.shape, bool)
    p, m, off = pad_fast(data, mask)
    assert p.shape == (3, next_fast_len(61), 50) == (3, 63, 50) and off == (0, 1, 0)
    assert m[:, 0].all() and m[:, -1].all() and not m[:, 1:62].any()
    b, bm = bin_frames(np.ones((2, 8, 6)), np.zeros((2, 8, 6), bool), (2, 3))
    assert b.shape == (2, 4, 2) and np.all(b == 6)


def test_prepare_binning_doubles_pixel(scan):
    frames, meta, _ = scan
    # binning by 2 halves the detector oversampling (~3.5 -> ~1.8)
    with pytest.warns(UserWarning, match="oversampling"):
        d = prepare(frames, meta, shape=(None, 64, 64), binning=(2, 2))
    assert d.intensity.shape[1:] == (32, 32)
    assert max(d.oversampling_data[1:]) < 2
    assert d.meta["pixel_m"] == (110e-6, 110e-6)


def test_oversampling_from_data_vs_object_size():
    rho, shape, _ = synthetic_crystal()
    intensity = far_field(rho, seed=5)
    measured = oversampling_from_data(intensity)
    idx = np.nonzero(shape)
    expected = [64 / (np.ptp(i) + 1) for i in idx]
    assert measured == pytest.approx(expected, rel=0.15)


def test_oversampling_geometry_of_the_paper(scan):
    frames, meta, _ = scan
    d = prepare(frames, {**meta, "size_m": 800e-9}, shape=(None, 64, 64))
    rock, rows, cols = d.oversampling_geometry
    assert rows == pytest.approx(oversampling_detector(13.0, 1.4, 55e-6, 800e-9))
    assert rows == pytest.approx(3.03, abs=0.01)
    assert rock == pytest.approx(2.0, abs=0.02)  # 0.0073 deg steps: the paper's limit


def test_bliss_round_trip(tmp_path, scan):
    frames, meta, _ = scan
    path = write_bliss(tmp_path / "scan.h5", frames, meta, scan="3.1")
    stack = read_bliss_rocking(path)
    setup = stack.require_setup()
    assert np.array_equal(np.asarray(stack.frames), frames)
    assert stack.eta == pytest.approx(meta["eta"]) and tuple(setup.cch) == (50.0, 60.0)
    assert setup.energy_kev == 13.0 and setup.distance_m == 1.4 and setup.delta == pytest.approx(meta["delta"])
    d = prepare(str(path), shape=(None, 64, 64))
    assert d.intensity.shape == (64, 64, 64)
    with pytest.raises(ValueError, match="no scan '9.1'"):
        read_bliss_rocking(path, scan="9.1")


def test_bad_input():
    with pytest.raises(ValueError, match="meta is required"):
        prepare(np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="missing"):
        prepare(np.zeros((4, 8, 8)), {"energy_kev": 13})
    with pytest.raises(ValueError, match="frames must be"):
        prepare(np.zeros((8, 8)), {})
    meta = paper_meta(4, 8, 8)
    with pytest.raises(ValueError, match="crop size"):
        prepare(np.ones((4, 8, 8)), meta, shape=(None, 16, 16))
    with pytest.raises(ValueError, match="binning"):
        prepare(np.ones((4, 8, 8)), meta, shape=(None, 8, 8), binning=(0, 1))
    with pytest.raises(ValueError, match="eta"):
        prepare(np.ones((5, 8, 8)), meta, shape=(None, 8, 8))


def test_frames_are_normalised_by_the_rocking_stack_monitor(scan):
    """A refill halfway through the rocking scan and one frame without beam (issue 21): normalised by the
    monitor the prepared intensity is that of a steady beam, the dark frame masked, the normalisation recorded."""
    from braggscope.core.setup import ScanSetup
    from braggscope.core.stacks import RockingStack

    frames, meta, _ = scan
    n = frames.shape[0]
    flux = np.where(np.arange(n) < n // 2, 0.7, 1.0)
    flux[n // 2 + 1] = 0.0
    dimmed = frames.astype(np.float64) * flux[:, None, None]
    setup = ScanSetup.from_start_doc(meta | {"detector_shape": list(frames.shape[1:])})
    stack = RockingStack(dimmed, meta["eta"], setup, counters={"mon1": 1.0e4 * flux}, monitor="mon1")
    kw = dict(shape=(None, 64, 64), background=None, pad=False)
    steady = prepare((frames, meta), **kw)
    got = prepare(stack, **kw)
    beam = flux[got.crop[0]] > 0
    reference = np.median(1.0e4 * flux[flux > 0])  # the counts refer to this monitor reading
    np.testing.assert_allclose(got.intensity[beam], steady.intensity[beam] * reference / 1.0e4, rtol=1e-5,
                               atol=1e-3)
    assert got.mask[~beam].all() and not got.intensity[~beam].any()
    assert got.meta["monitor_reference"] == reference and got.meta["frames_without_beam"] == 1
    assert got.meta["normalisation"] == "counts x monitor_reference / mon1" and "monitor" not in got.meta
