"""A day of beamtime in the SXDM reduction: monitor normalisation through a refill and a beam loss, drift registered
on a fluorescence counter, no zeros from shifted edges, the BLISS counters and the command line.

Closed forms and the independent forward model (tests/test_sxdm_model.py, Q from xrayutilities): noise-free
frames give the centre of each map pixel's Bragg peak, which a flux that changes from point to point must not
move once normalised; an integer drift shift moves whole frames, so a shifted edge pixel must reduce exactly as the
same pixel reduced from the angles it was measured at.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("xrayutilities")

from braggscope.analysis.readers import read_bliss
from braggscope.analysis.sxdm.drift import apply_drift, measure_drift
from braggscope.analysis.sxdm.files import load_maps
from braggscope.analysis.sxdm.reduce import integrate_eta_maps, reduce_stack
from braggscope.analysis.sxdm.stack import reduce_map, register_map_drift
from braggscope.core.errors import ArgumentError, DataWarning
from braggscope.core.geometry import Geometry
from braggscope.core.setup import ScanSetup
from braggscope.core.stacks import MapStack
from tests.beamtime_model import beamtime, map_errors, write_bliss
from tests.test_sxdm_model import forward_stack

N_ETA, NY, NX = 13, 8, 8


def _geometry(t):
    return Geometry(t.energy_kev, t.distance_m, t.pixel_m, t.cch)


def _reduce(t, frames=None, **kw):
    return reduce_stack(t.frames if frames is None else frames, t.eta, _geometry(t), t.delta, t.nu,
                        progress=False, **kw)


def _refill_flux():
    """Decay 1.0 -> 0.8 over the first angles, a refill to 1.25 in the middle angle's map (three points of
    its 4th row without beam), decay again."""
    t = np.arange(N_ETA * NY * NX, dtype=float).reshape(N_ETA, NY, NX) / (N_ETA * NY * NX)
    refill = (N_ETA // 2, 3, 2)
    after = np.zeros(t.shape, bool)
    after.reshape(-1)[np.ravel_multi_index(refill, t.shape):] = True
    flux = np.where(after, 1.25 * (1 - 0.4 * (t - t[refill])), 1.0 - 0.4 * t)
    flux[N_ETA // 2, 3, 2:5] = 0.0
    return flux


@pytest.fixture(scope="module")
def noise_free():
    common = dict(ny=NY, nx=NX, n_eta=N_ETA, shape=(48, 48), shifts=np.zeros((N_ETA, 2)), background=0.5,
                  counts=2e4, poisson=False, seed=31)
    return forward_stack(**common), forward_stack(flux=_refill_flux(), **common)


def test_normalisation_by_a_known_monitor_through_a_refill(noise_free):
    steady, refilled = noise_free
    flux = refilled.flux
    monitor = 5.0e4 * flux
    crystal = steady.amplitude > 0.5
    ref = _reduce(steady)
    # closed form: noise-free frames give the centre of each pixel's Bragg peak, the truth Q
    q_ref = np.stack([ref.qx.values, ref.qy.values, ref.qz.values], axis=-1)
    assert np.nanmax(np.linalg.norm(q_ref - steady.q, axis=-1)[crystal]) < 2e-5
    maps = _reduce(refilled, monitor=monitor, monitor_name="mon1")
    q = np.stack([maps.qx.values, maps.qy.values, maps.qz.values], axis=-1)
    err = np.linalg.norm(q - steady.q, axis=-1)
    holes = (flux == 0).any(axis=0)
    assert np.nanmax(err[crystal & ~holes]) < 2e-5  # normalised: the peak centres do not move
    # points without beam: the measured 4-neighbours' counts over their monitor (counts and monitor are
    # resampled alike, then divided: each neighbour weighs by its flux)
    filled = steady.frames.copy()
    for e, y, x in np.argwhere(flux == 0):
        near = [(y + dy, x + dx) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)) if flux[e, y + dy, x + dx] > 0]
        counts = sum(refilled.frames[e, j, i].astype(float) for j, i in near)
        filled[e, y, x] = counts / sum(flux[e, j, i] for j, i in near)
    by_hand = _reduce(steady, filled)
    for name in ("qx", "qy", "qz"):  # to 2e-5 1/A (6 ppm of |Q|): the noise cut follows each frame's flux
        np.testing.assert_allclose(maps[name].values[holes], by_hand[name].values[holes], rtol=0, atol=2e-5)
    # the per-angle intensity is that of the steady beam, at the reference flux
    reference = float(np.median(monitor[monitor > 0]))
    expected = ref.eta_intensity.values * reference / 5.0e4
    np.testing.assert_allclose(maps.eta_intensity.values[:, ~holes], expected[:, ~holes], rtol=1e-4,
                               atol=1e-4 * expected.max())
    assert maps.attrs["monitor"] == "mon1" and maps.attrs["monitor_reference"] == pytest.approx(reference)
    assert maps.attrs["frames_without_beam"] == 3 and "mon1" in maps.attrs["normalisation"]
    assert ref.attrs["normalisation"] == "none"
    # not normalised, the refill moves the peak centres by far more
    raw = _reduce(refilled)
    q_raw = np.stack([raw.qx.values, raw.qy.values, raw.qz.values], axis=-1)
    assert np.nanmedian(np.linalg.norm(q_raw - steady.q, axis=-1)[crystal & ~holes]) > 10 * 2e-5


def test_a_monitor_that_cannot_be_used_is_named(noise_free):
    steady, _ = noise_free
    for monitor, message in [(np.full(N_ETA, np.nan), "NaN"), (-np.ones(N_ETA), ">= 0"),
                             (np.zeros(N_ETA), "no beam"), (np.ones(3), "shape")]:
        with pytest.raises(ValueError, match=message):
            _reduce(steady, monitor=monitor)


def test_no_zeros_enter_the_com_from_shifted_edges():
    """An integer drift moves whole frames: edge pixels shifted in from outside the map have no data at those
    angles (NaN, coverage < 1), and reduce exactly as the same pixels from the angles they were measured at."""
    t = forward_stack(ny=6, nx=8, n_eta=9, shape=(40, 40), shifts=np.zeros((9, 2)), background=5.0, counts=3e4,
                      centre_x=1.5, radius=0.9, poisson=False, seed=32)
    shifts = np.zeros((9, 2))
    shifts[:3, 1] = -1.0  # the first three angles: column nx - 1 comes from outside the map
    shifts[6:, 1] = 1.0   # the last three: column 0 does
    maps = _reduce(t, apply_drift(t.frames, shifts))
    missing = np.isnan(maps.eta_intensity.values)
    assert missing[:3, :, -1].all() and missing[6:, :, 0].all() and missing.sum() == 6 * 6
    np.testing.assert_allclose(maps.coverage.values[:, 0], 6 / 9)
    # the background never falls below the flat 5 counts, edges included: no zero frames pulled it down
    assert maps.background.values.min() > 5.0 - 1e-3
    # column 0 has data at angles 0-5 only (at 0-2 the frames of column 1, at 6-8 nothing: column -1); it
    # reduces as column 0 of those frames alone
    shifted = np.concatenate([np.roll(t.frames[:3], -1, axis=2), t.frames[3:6]])
    kept = reduce_stack(shifted, t.eta[:6], _geometry(t), t.delta, t.nu, progress=False)
    edge = maps.mask.values[:, 0] & kept.mask.values[:, 0]
    assert edge.sum() >= 2
    np.testing.assert_allclose(maps.background.values[:, 0], kept.background.values[:, 0], rtol=1e-5)
    for name in ("qx", "qy", "qz"):
        np.testing.assert_allclose(maps[name].values[edge, 0], kept[name].values[edge, 0], rtol=1e-5)
    # zero-filled frames (what the shift used to give) lower the edge background and move its centres
    zeroed = _reduce(t, np.nan_to_num(apply_drift(t.frames, shifts).compute(), nan=0.0))
    assert zeroed.background.values[:, 0].max() < 4.0
    assert np.nanmax(np.abs(zeroed.qz.values[edge, 0] - kept.qz.values[edge, 0])) > 1e-4


@pytest.fixture(scope="module")
def two_domains():
    """Two tilt domains along the rocking direction (the halves lit at different angles), integer and
    sub-pixel drift, and a fluorescence counter."""
    n = 13
    shifts = np.stack([np.r_[np.linspace(1.0, -1.0, n - 3), -2.0, -1.5, -1.0],
                       np.r_[np.linspace(-1.5, 1.5, n - 3), 2.0, 2.5, 1.0]], axis=1)
    shifts -= shifts[n // 2]
    return forward_stack(ny=14, nx=14, n_eta=n, shape=(48, 48), shifts=shifts, rock_tilt=0.12, counts=1.2e4, radius=0.8,
                         fluorescence=300.0, fluorescence_background=10.0, seed=33)


def test_fluorescence_registration_recovers_drift_where_the_bragg_intensity_fails(two_domains):
    t = two_domains
    mid = len(t.eta) // 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        fluo = measure_drift(t.fluorescence, reference=mid, normalization=None, signal="fluorescence")
        bragg = measure_drift(integrate_eta_maps(t.frames, progress=False))
    assert np.abs(fluo.shifts - t.shifts).max() < 0.15  # integer and sub-pixel, every angle
    assert np.all(fluo.trusted)
    assert np.abs(bragg.shifts - t.shifts).max() > 0.5  # the lit part moves with the angle, not the sample
    # the stack picks the fluorescence itself, and says so
    setup = ScanSetup(t.energy_kev, t.distance_m, t.pixel_m, t.cch, t.frames.shape[-2:], t.delta, nu=t.nu)
    stack = MapStack(t.frames, t.eta, setup, counters={"ct_fluo": t.fluorescence}, fluorescence="ct_fluo")
    chosen = register_map_drift(stack, progress=False)
    assert chosen.signal == "fluorescence (ct_fluo)"
    np.testing.assert_allclose(chosen.shifts, fluo.shifts)
    assert "fluorescence (ct_fluo)" in chosen.report(t.eta)[0]
    with pytest.raises(ArgumentError, match="no such counter"):
        register_map_drift(stack, signal="mon1", progress=False)


def test_registration_says_when_it_cannot_be_trusted():
    from scipy import ndimage

    rng = np.random.default_rng(4)
    blob = np.exp(-((np.arange(12)[:, None] - 5.5) ** 2 + (np.arange(12)[None, :] - 5.5) ** 2) / 8.0)
    other = ndimage.gaussian_filter(rng.random((12, 12)), 1.5)  # something else, as strong
    other = (other - other.min()) / np.ptp(other)
    maps = rng.poisson(200 * np.stack([blob] * 3 + [other])).astype(float)
    with pytest.warns(DataWarning, match="cannot be trusted"):
        result = measure_drift(maps, reference=0, normalization=None)
    assert result.trusted[:3].all() and not result.trusted[3]
    assert any("cannot be trusted at 1 angle" in line for line in result.report())


def test_missing_points_are_not_registered_as_zeros():
    """NaN points (no beam) in the registration maps are missing data, not dark points."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:16, 0:16]
    maps = np.stack([400 * np.exp(-((yy - 7.5) ** 2 + (xx - 7.5 - s) ** 2) / 10.0) for s in (0, 1, 2)])
    maps = rng.poisson(maps + 20).astype(float)
    maps[1, 6:9, 4:12] = np.nan  # a beam loss across the particle
    result = measure_drift(maps, reference=0, normalization=None, warn=False)
    np.testing.assert_allclose(result.shifts[:, 1], [0, -1, -2], atol=0.2)


def test_low_counts_beamtime_file_reduces_within_reach_of_the_clean_case(tmp_path):
    """Tens of photons at the peak; with the refill, drift and bad pixels handled the errors stay near those of
    the clean case on the same counts, and each correction matters. On this small map the fields change over two
    or three pixels and undoing a 2-pixel drift costs more than on bench_beamtime.py's (which measures the ratios)."""
    bt = beamtime(ny=12, nx=12, n_eta=13, shape=(48, 48), seed=5)
    clean = beamtime(ny=12, nx=12, n_eta=13, shape=(48, 48), seed=5, clean=True).truth
    assert 15 <= np.max(clean.frames) <= 80  # tens of photons in the brightest voxel
    stack = read_bliss(write_bliss(tmp_path / "beamtime.h5", bt))
    registration = register_map_drift(stack, progress=False)
    assert registration.signal == "fluorescence (ct_fluo)"
    assert np.abs(registration.shifts - bt.truth.shifts).max() < 0.2
    corrected = map_errors(reduce_map(stack, shifts=registration.shifts, progress=False), bt.truth)
    reference = map_errors(_reduce(clean), clean)
    assert corrected["strain"] < 2.2 * reference["strain"], (corrected, reference)
    assert corrected["altitude"] < 3.0 * reference["altitude"], (corrected, reference)
    assert corrected["missed"] < 0.1
    no_monitor = map_errors(reduce_map(stack, shifts=registration.shifts, monitor=None, progress=False), bt.truth)
    no_drift = map_errors(reduce_map(stack, progress=False), bt.truth)
    for worse in (no_monitor, no_drift):
        assert worse["strain"] > 1.4 * corrected["strain"], (worse, corrected)
        assert worse["altitude"] > 1.4 * corrected["altitude"], (worse, corrected)


@pytest.fixture(scope="module")
def bliss_file(tmp_path_factory):
    bt = beamtime(ny=6, nx=7, n_eta=9, shape=(32, 32), seed=6)
    return bt, write_bliss(tmp_path_factory.mktemp("beamtime") / "sample_0001.h5", bt, snake=True)


def test_the_bliss_reader_takes_the_counters_and_machine_data(bliss_file):
    bt, path = bliss_file
    stack = read_bliss(path)
    assert stack.monitor == "mon1" and stack.fluorescence == "ct_fluo"
    assert {"mon1", "ct_fluo", "machine_current", "refill_countdown"} <= set(stack.counters)
    np.testing.assert_array_equal(stack.counters["mon1"], bt.monitor)  # raster order, the snake undone
    np.testing.assert_array_equal(stack.counters["ct_fluo"], bt.fluorescence)
    np.testing.assert_allclose(stack.counters["machine_current"], bt.current)
    np.testing.assert_allclose(stack.counters["refill_countdown"], bt.refill_countdown)
    assert read_bliss(path, monitor=None, fluorescence=None).monitor is None
    with pytest.raises(ValueError, match="mon2.*counters: ct_fluo"):
        read_bliss(path, monitor="mon2")
    bare = read_bliss(write_bliss(path.with_name("bare.h5"), bt, counters=False))
    assert bare.monitor is None and bare.counters == {}


def test_cli_normalises_registers_and_records_it(bliss_file, tmp_path, capsys):
    from braggscope.app.cli.main import main

    _, path = bliss_file
    out = tmp_path / "maps.h5"
    assert main(["reduce", "sxdm", str(path), "--out", str(out), "--drift", "register", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "monitor: frames normalised by mon1" in printed and "points without beam left out" in printed
    assert "drift registered on the fluorescence (ct_fluo)" in printed
    maps = load_maps(out)
    assert maps.attrs["monitor"] == "mon1" and maps.attrs["drift_signal"] == "fluorescence (ct_fluo)"
    assert maps.attrs["monitor_reference"] > 0 and maps.drift_confidence.shape == (9,)
    assert main(["reduce", "sxdm", str(path), "--out", str(out), "--no-monitor", "--drift", "register",
                 "--drift-signal", "bragg", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "monitor: none (--no-monitor)" in printed and "on the Bragg intensity" in printed
    assert load_maps(out).attrs["normalisation"] == "none"
    out.unlink()
    assert main(["reduce", "sxdm", str(path), "--out", str(out), "--monitor", "mon2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "mon2" in err and "ct_fluo" in err and not out.exists()


def test_the_bliss_rocking_reader_takes_the_monitor(tmp_path):
    import h5py

    from braggscope.analysis.readers import read_bliss_rocking
    from tests.test_bcdi_helpers import paper_meta
    from tests.test_bcdi_helpers import write_bliss as write_rocking

    frames = np.ones((8, 16, 16), np.uint32)
    path = write_rocking(tmp_path / "rocking.h5", frames, paper_meta(8, 16, 16))
    with h5py.File(path, "a") as f:
        f["1.1/measurement/mon1"] = np.arange(8.0) + 100
        f["1.1/instrument/machine/current"] = 187.5
    stack = read_bliss_rocking(path)
    assert stack.monitor == "mon1"
    np.testing.assert_array_equal(stack.counters["mon1"], np.arange(8.0) + 100)
    np.testing.assert_array_equal(stack.counters["machine_current"], np.full(8, 187.5))
    assert read_bliss_rocking(path, monitor=None).monitor is None
