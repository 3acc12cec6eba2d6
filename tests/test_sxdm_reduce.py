"""SXDM reduction against the independent xrayutilities forward model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("xrayutilities")

from braggscope.analysis.sxdm.drift import apply_drift, register_drift, shifts_from_offsets
from braggscope.analysis.sxdm.filters import hot_pixel_mask, maxipix_gap_mask, median_filter_frames
from braggscope.analysis.sxdm.grid import find_peaks_q, grid_pixel_peak
from braggscope.analysis.sxdm.reduce import integrate_eta_maps, reduce_stack, tilt_angles
from braggscope.core.geometry import Geometry
from tests.test_sxdm_model import forward_stack, truth_tilts


def _geometry(t):
    return Geometry(t.energy_kev, t.distance_m, t.pixel_m, t.cch)


def _errors(maps, t, interior=True):
    mask = maps.mask.values
    truth_mask = t.amplitude >= 0.2
    sel = mask & (ndimage.binary_erosion(truth_mask) if interior else truth_mask)
    d_true = 2 * np.pi / np.linalg.norm(t.q, axis=-1)
    strain_true = (d_true - d_true[mask].mean()) / d_true[mask].mean() * 1e6
    alt, azi = truth_tilts(t.q, mask)
    e_strain = (maps.strain.values - strain_true)[sel]
    e_alt = (maps.tilt_altitude.values - alt)[sel]
    big = sel & (alt > 0.08)
    e_azi = ((maps.tilt_azimuth.values - azi + 180.0) % 360.0 - 180.0)[big]
    return dict(strain=float(np.sqrt(np.mean(e_strain ** 2))), alt=float(np.sqrt(np.mean(e_alt ** 2))),
                azi=float(np.sqrt(np.mean(e_azi ** 2))), n_azi=int(big.sum()),
                mask_xor=int((mask ^ truth_mask).sum()), n=int(sel.sum()),
                slope=float(np.polyfit(strain_true[sel], maps.strain.values[sel], 1)[0]))


@pytest.fixture(scope="module")
def drifted():
    return forward_stack(drift_px=0.5, seed=3)


def test_accuracy_with_noise_background_and_drift(drifted):
    t = drifted
    g = _geometry(t)
    eta_maps = integrate_eta_maps(t.frames, progress=False)
    shifts = register_drift(eta_maps, upsample=10, anchor=len(t.eta) // 2)
    strong = eta_maps.max(axis=(1, 2)) - np.median(eta_maps, axis=(1, 2)) > 0.3 * np.ptp(eta_maps)
    assert np.sqrt(np.mean((shifts - t.shifts)[strong] ** 2)) < 0.3  # sub-pixel registration
    maps = reduce_stack(apply_drift(t.frames, shifts), t.eta, g, t.delta, t.nu,
                        x=t.x_um, y=t.y_um, progress=False)
    e = _errors(maps, t)
    assert e["n"] >= 40 and e["n_azi"] >= 10
    assert e["strain"] <= 50.0, e
    assert e["alt"] <= 0.02, e
    assert e["azi"] <= 5.0, e
    assert e["mask_xor"] <= 0.1 * (t.amplitude >= 0.2).sum(), e
    assert 0.9 < e["slope"] < 1.1
    # integer-pixel registration (no upsampling) is measurably worse
    coarse = register_drift(eta_maps, upsample=1, anchor=len(t.eta) // 2)
    e_int = _errors(reduce_stack(apply_drift(t.frames, coarse), t.eta, g, t.delta, t.nu, progress=False), t)
    assert e_int["strain"] > 1.5 * e["strain"], (e_int, e)
    # the same data without drift correction is measurably worse
    raw = _errors(reduce_stack(t.frames, t.eta, g, t.delta, t.nu, progress=False), t)
    assert raw["strain"] > 1.2 * e["strain"] and raw["mask_xor"] > e["mask_xor"], (raw, e)
    # outputs: shapes, units, coordinates, attribute access
    assert maps.strain.shape == (12, 12) and maps.strain.attrs["units"] == "microstrain"
    np.testing.assert_allclose(maps.x.values, t.x_um)
    assert np.all(np.isnan(maps.strain.values[~maps.mask.values]))
    assert maps.tilt_altitude.attrs["units"] == "deg"


def test_absolute_d_spacing_and_compression_sign():
    t = forward_stack(drift_px=0.0, compression=True, seed=4)
    maps = reduce_stack(t.frames, t.eta, _geometry(t), t.delta, t.nu, progress=False)
    mask = maps.mask.values & ndimage.binary_erosion(t.amplitude >= 0.2)
    d_true = 2 * np.pi / np.linalg.norm(t.q, axis=-1)
    # absolute d-spacing from the geometry (checked against xrayutilities Q)
    assert np.sqrt(np.nanmean((maps.d_spacing.values - d_true)[mask] ** 2)) / t.d0 < 50e-6
    # compressed everywhere relative to d0: the reduction's d is below d0
    assert np.nanmean(maps.d_spacing.values[mask]) < t.d0 * (1 - 150e-6)
    # strain from d, not from q: the most compressed pixel is the most negative
    i = np.nanargmin(np.where(mask, t.strain, np.nan))
    j = np.nanargmax(np.where(mask, t.strain, np.nan))
    s = maps.strain.values.ravel()
    assert s[i] < 0 < s[j]
    assert s[i] < s[j] - 300


def test_background_handling_matters():
    """Known pitfall: COM without background under-reports strain."""
    t = forward_stack(drift_px=0.0, seed=5)
    g = _geometry(t)
    none = _errors(reduce_stack(t.frames, t.eta, g, t.delta, t.nu, background="none",
                                threshold=0.2, progress=False), t)
    default = _errors(reduce_stack(t.frames, t.eta, g, t.delta, t.nu, progress=False), t)
    given = _errors(reduce_stack(t.frames, t.eta, g, t.delta, t.nu, background=1.0, progress=False), t)
    assert none["slope"] < 0.8
    assert 0.95 < default["slope"] < 1.05 and default["strain"] < 30
    assert 0.9 < given["slope"] < 1.1 and given["strain"] < 50
    snip = _errors(reduce_stack(t.frames, t.eta, g, t.delta, t.nu, background="snip", progress=False), t)
    assert 0.85 < snip["slope"] < 1.1 and snip["strain"] < 50 and snip["mask_xor"] <= 8


def test_true_2x2_median_changes_data():
    rng = np.random.default_rng(0)
    f = rng.poisson(3.0, size=(5, 16, 16)).astype(np.uint32)
    m = median_filter_frames(f, 2)
    assert not np.array_equal(m, f.astype(np.float32))
    # reference: mean of the two middle values of each 2x2 window (edges repeated)
    p = np.pad(f.astype(float), ((0, 0), (0, 1), (0, 1)), mode="edge")
    win = np.stack([p[:, :-1, :-1], p[:, :-1, 1:], p[:, 1:, :-1], p[:, 1:, 1:]], axis=-1)
    np.testing.assert_allclose(m, np.sort(win, axis=-1)[..., 1:3].mean(-1))
    # a lone hot pixel is removed; odd sizes are true medians too
    hot = np.zeros((8, 8))
    hot[4, 4] = 1000
    assert median_filter_frames(hot, 2).max() == 0
    assert median_filter_frames(hot, 3).max() == 0
    assert median_filter_frames(np.ones((4, 4)) * 7, 4).max() == 7
    with pytest.raises(ValueError, match="median"):
        median_filter_frames(f, 0)


def test_pixel_mask_monitor_and_input_sources(tmp_path):
    import dask.array as da
    import h5py

    t = forward_stack(ny=8, nx=8, n_eta=11, drift_px=0.0, seed=6)
    g = _geometry(t)
    ref = reduce_stack(t.frames, t.eta, g, t.delta, t.nu, progress=False)
    # hot pixels + a dead column: masked they change nothing, unmasked they ruin the COM
    bad = np.zeros(t.frames.shape[-2:], bool)
    bad[5, 7] = bad[50, 60] = True
    bad[:, 20] = True
    hot = t.frames.copy()
    hot[..., 5, 7] = 400000
    hot[..., 50, 60] = 90000
    hot[..., :, 20] = 0
    masked = reduce_stack(hot, t.eta, g, t.delta, t.nu, pixel_mask=bad, median=1, progress=False)
    plain = reduce_stack(t.frames, t.eta, g, t.delta, t.nu, pixel_mask=bad, median=1, progress=False)
    unmasked = reduce_stack(hot, t.eta, g, t.delta, t.nu, median=1, progress=False)
    np.testing.assert_allclose(masked.strain, plain.strain, atol=1e-6, equal_nan=True)
    # with the 2x2 median too: a 2x2 block of hot pixels is masked, not spread to its neighbours
    bad2 = bad.copy()
    bad2[40:42, 30:32] = True
    hot2 = hot.copy()
    hot2[..., 40:42, 30:32] = 300000
    med_masked = reduce_stack(hot2, t.eta, g, t.delta, t.nu, pixel_mask=bad2, progress=False)
    med_plain = reduce_stack(t.frames, t.eta, g, t.delta, t.nu, pixel_mask=bad2, progress=False)
    sel = med_plain.mask.values
    assert np.nanmax(np.abs(med_masked.strain.values - med_plain.strain.values)[sel]) < 1.0
    assert np.nanmax(np.abs(unmasked.qx - plain.qx)) > 10 * np.nanmax(np.abs(masked.qx - plain.qx) + 1e-9)
    # monitor: halve the flux on odd angles, the normalised reduction agrees
    mon = np.where(np.arange(len(t.eta)) % 2 == 1, 0.5, 1.0)
    rng = np.random.default_rng(1)
    dim = rng.binomial(t.frames, mon[:, None, None, None, None]).astype(np.uint32)
    normd = reduce_stack(dim, t.eta, g, t.delta, t.nu, monitor=mon, progress=False)
    sel = ref.mask.values & normd.mask.values
    assert np.sqrt(np.mean((normd.strain.values - ref.strain.values)[sel] ** 2)) < 40
    # numpy, dask and h5py inputs give identical maps; chunking and threads do not matter
    path = tmp_path / "stack.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=t.frames, chunks=(1, 1, 8, 64, 64))
    with h5py.File(path, "r") as f:
        from_h5 = reduce_stack(f["frames"], t.eta, g, t.delta, t.nu, chunk_mb=2, progress=False)
    from_dask = reduce_stack(da.from_array(t.frames, chunks=(11, 2, 8, 64, 64)), t.eta, g, t.delta,
                             t.nu, chunk_mb=1, scheduler="sync", progress=False)
    for other in (from_h5, from_dask):
        np.testing.assert_allclose(other.qz, ref.qz, rtol=1e-6, equal_nan=True)
        np.testing.assert_array_equal(other.mask, ref.mask)


def test_dask_input_is_read_block_by_block(monkeypatch):
    # a lazy stack must reach the chunk workers lazy: each reads its own block, and the
    # whole stack is never computed into memory first (dask would traverse a dataclass
    # argument and compute the array inside it)
    import dask.array as da

    from braggscope.analysis.sxdm import blocks

    t = forward_stack(ny=6, nx=6, n_eta=7, drift_px=0.0, seed=2)
    lazy = da.from_array(t.frames, chunks=(7, 1, 6, 64, 64))
    seen = []
    original = blocks.read_block

    def spy(frames, eta_sl, ys, xs, det_roi):
        seen.append((type(frames).__module__.split(".")[0], len(range(*ys.indices(6))) * len(range(*xs.indices(6)))))
        return original(frames, eta_sl, ys, xs, det_roi)

    monkeypatch.setattr(blocks, "read_block", spy)
    maps = reduce_stack(lazy, t.eta, _geometry(t), t.delta, t.nu, chunk_mb=0.5, progress=False)
    assert len(seen) > 1 and all(kind == "dask" for kind, _ in seen)
    assert sum(pixels for _, pixels in seen) == 36  # every map pixel read once, by its block
    ref = reduce_stack(t.frames, t.eta, _geometry(t), t.delta, t.nu, progress=False)
    np.testing.assert_allclose(maps.qz, ref.qz, rtol=1e-6, equal_nan=True)


def test_bad_arguments_raise_naming_them():
    t = forward_stack(ny=3, nx=3, n_eta=4, shape=(16, 16), seed=7)
    g = _geometry(t)
    with pytest.raises(ValueError, match="eta"):
        reduce_stack(t.frames, t.eta[:3], g, t.delta)
    with pytest.raises(ValueError, match="frames"):
        reduce_stack(t.frames[0], t.eta, g, t.delta)
    with pytest.raises(ValueError, match="delta"):
        reduce_stack(t.frames, t.eta, g, [1.0, 2.0])
    with pytest.raises(ValueError, match="threshold"):
        reduce_stack(t.frames, t.eta, g, t.delta, threshold=2)
    with pytest.raises(ValueError, match="background"):
        reduce_stack(t.frames, t.eta, g, t.delta, background="magic")
    with pytest.raises(ValueError, match="pixel_mask"):
        reduce_stack(t.frames, t.eta, g, t.delta, pixel_mask=np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="detector_roi"):
        reduce_stack(t.frames, t.eta, g, t.delta, detector_roi=(0, 99, 0, 4))
    with pytest.raises(ValueError, match="roi"):
        reduce_stack(t.frames, t.eta, g, t.delta, roi=((0, 1), (0, 1)))
    with pytest.raises(ValueError, match="shifts"):
        apply_drift(t.frames, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="scheduler"):
        reduce_stack(t.frames, t.eta, g, t.delta, scheduler="fastest")


def test_gaussian_fit_and_detector_roi():
    t = forward_stack(ny=6, nx=6, n_eta=15, drift_px=0.0, seed=8, counts=1e5)
    g = _geometry(t)
    maps = reduce_stack(t.frames, t.eta, g, t.delta, t.nu, fit="gaussian", progress=False)
    m = maps.mask.values
    fwhm = 2 * np.sqrt(2 * np.log(2)) * 4.0e-3
    for ax in "xyz":
        c = maps[f"gauss_q{ax}"].values[m]
        np.testing.assert_allclose(c, maps[f"q{ax}"].values[m], atol=6e-4)
        assert np.nanmedian(maps[f"fwhm_q{ax}"].values[m]) == pytest.approx(fwhm, rel=0.25)
    # a detector ROI around the peak gives the same Q (cch handled)
    roi = reduce_stack(t.frames, t.eta, g, t.delta, t.nu, detector_roi=(8, 56, 8, 56), progress=False)
    full = reduce_stack(t.frames, t.eta, g, t.delta, t.nu, progress=False)
    sel = roi.mask.values & full.mask.values
    assert np.nanmax(np.abs(roi.strain.values - full.strain.values)[sel]) < 60


def test_two_crystals_find_peaks_and_q_roi():
    a = forward_stack(ny=10, nx=14, drift_px=0.0, centre_x=3.5, radius=0.45, seed=9)
    b = forward_stack(ny=10, nx=14, drift_px=0.0, centre_x=9.5, radius=0.45, strain_offset=6000.0,
                      background=0.0, seed=10)
    frames = a.frames + b.frames
    g = _geometry(a)
    peaks = find_peaks_q(frames, a.eta, g, a.delta, a.nu, threshold=0.2)
    assert len(peaks) == 2
    q_a = np.linalg.norm(a.q[a.amplitude > 0.5], axis=-1).mean()
    q_b = np.linalg.norm(b.q[b.amplitude > 0.5], axis=-1).mean()
    found = sorted(np.linalg.norm(p["centre"]) for p in peaks)
    np.testing.assert_allclose(found, sorted([q_a, q_b]), atol=1e-3)
    for truth in (a, b):
        qn = np.linalg.norm(truth.q[truth.amplitude > 0.5], axis=-1).mean()
        peak = min(peaks, key=lambda p: abs(np.linalg.norm(p["centre"]) - qn))
        maps = reduce_stack(frames, a.eta, g, a.delta, a.nu, roi=peak["roi"], progress=False)
        mask = maps.mask.values
        assert (mask & (truth.amplitude >= 0.2)).sum() >= 0.8 * mask.sum()
        inner = mask & (truth.amplitude > 0.5)
        assert np.nanmean(maps.q_norm.values[inner]) == pytest.approx(
            np.linalg.norm(truth.q[inner], axis=-1).mean(), abs=3e-4)


def test_grid_pixel_peak_centre_and_width():
    t = forward_stack(ny=4, nx=4, n_eta=15, drift_px=0.0, background=0.0, seed=11, counts=2e5)
    grid = grid_pixel_peak(t.frames, t.eta, _geometry(t), t.delta, t.nu, pixel=(2, 2), median=1)
    v = np.nan_to_num(grid.values)
    w = v / v.sum()
    centre = [float((w.sum(axis=tuple(b for b in range(3) if b != a)) * grid.coords[c].values).sum())
              for a, c in enumerate(("qx", "qy", "qz"))]
    np.testing.assert_allclose(centre, t.q[2, 2], atol=5e-4)
    assert grid.dims == ("qx", "qy", "qz") and min(grid.shape) >= 8


def test_tilt_convention_general_frame():
    # Q_bar along x+z: azimuth measured from x projected on the normal plane, right-handed
    qbar = np.array([1.0, 0.0, 1.0]) / np.sqrt(2)
    x_proj = np.array([1.0, 0, -1.0]) / np.sqrt(2)
    e2 = np.cross(qbar, x_proj)  # = +y
    a = np.radians(0.1)
    q = np.stack([np.cos(a) * qbar + np.sin(a) * x_proj, np.cos(a) * qbar - np.sin(a) * x_proj,
                  np.cos(a) * qbar + np.sin(a) * e2, np.cos(a) * qbar - np.sin(a) * e2]) * 3.0
    alt, azi = tilt_angles(q, np.ones(4, bool))
    np.testing.assert_allclose(alt, 0.1, atol=1e-9)
    np.testing.assert_allclose(azi, [0.0, 180.0, 90.0, -90.0], atol=1e-6)
    assert np.allclose(e2, [0, 1, 0])


def test_recorded_shifts_conversion():
    s = shifts_from_offsets([0.0, 0.2], [0.4, -0.8], 0.4, 0.4)
    np.testing.assert_allclose(s, [[0, 1], [0.5, -2]])
    with pytest.raises(ValueError, match="step"):
        shifts_from_offsets([0.0], [0.0], 0.0, 1.0)


def test_detector_masks():
    rng = np.random.default_rng(3)
    s = rng.poisson(100.0, size=(64, 64)).astype(float)
    s[10, 12] = 5000
    s[30, 40] = 0
    bad = hot_pixel_mask(s)
    assert bad[10, 12] and bad[30, 40] and bad.sum() == 2
    gaps = maxipix_gap_mask((516, 516))
    assert gaps[255:261].all() and gaps[:, 255:261].all()
    assert gaps.sum() == 516 * 6 * 2 - 36 and not gaps[254, 254] and not gaps[261, 261]
    assert not maxipix_gap_mask((512, 512)).any()
    with pytest.raises(ValueError, match="shape"):
        maxipix_gap_mask((100, 516))


def test_distributed_cluster_gives_the_threaded_maps():
    """A dask.distributed scheduler on loopback (given by address, as a user would) reduces
    to the same maps as the local threads."""
    distributed = pytest.importorskip("distributed")
    t = forward_stack(ny=6, nx=6, n_eta=9, drift_px=0.0, seed=8)
    g = _geometry(t)
    ref = reduce_stack(t.frames, t.eta, g, t.delta, t.nu, chunk_mb=1, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        got = reduce_stack(t.frames, t.eta, g, t.delta, t.nu, chunk_mb=1, progress=False,
                           scheduler=cluster.scheduler_address)
        with distributed.Client(cluster) as client:
            borrowed = reduce_stack(t.frames, t.eta, g, t.delta, t.nu, chunk_mb=1, progress=False,
                                    scheduler=client)
            assert client.status == "running"  # a borrowed client is left open
    for other in (got, borrowed):
        np.testing.assert_array_equal(other.mask, ref.mask)
        np.testing.assert_allclose(other.qz, ref.qz, rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(other.strain, ref.strain, atol=1e-3, equal_nan=True)
