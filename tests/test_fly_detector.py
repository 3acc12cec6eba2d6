"""The simulated Maxipix's external-trigger frames: pooled background chunks, sparse peaks, direct chunk writes.

Physics: the pixels of composed frames must follow the forward model's Poisson statistics
(mean and variance against the model's expected counts), and the files must read back,
through the HDF5 Blosc filter of hdf5plugin, as the frames that were composed.
"""

from __future__ import annotations

import numpy as np
import pytest

from braggscope.simulators.frame_chunks import ChunkPool, blosc_compressor, chunk_rows_for, frame_stats, hdf5_filter

pytest.importorskip("numcodecs")


def test_chunk_rows_are_whole_and_bitshuffle_friendly():
    assert chunk_rows_for(516, 516) == 86  # 6 chunks of 86 x 516 = 44376 pixels, a multiple of 8
    assert chunk_rows_for(512, 512) == 64
    assert chunk_rows_for(128, 128) == 16
    for rows, cols in ((516, 516), (130, 7), (97, 33)):
        r = chunk_rows_for(rows, cols)
        assert rows % r == 0


def test_background_chunks_are_poisson_and_weakly_correlated():
    mean = 0.7
    pool = ChunkPool((64, 40), blosc_compressor(), np.random.default_rng(1), pool_chunks=64)
    frames = np.stack([pool.compose(mean, np.zeros(0, np.intp), np.zeros(0, np.uint32)).frame()
                       for _ in range(400)]).astype(float)
    n = frames.size
    # Poisson: mean = variance = 0.7 per pixel; standard errors ~ sqrt(m / n) and sqrt(2 m^2 / n)
    assert frames.mean() == pytest.approx(mean, abs=5 * np.sqrt(mean / n * 1.2))
    assert frames.var() == pytest.approx(mean, rel=0.03)
    # P(k = 0) of a Poisson(0.7): exp(-0.7)
    assert (frames == 0).mean() == pytest.approx(np.exp(-mean), abs=0.01)
    # two frames share a chunk with probability 1 / pool_chunks (not the same frame repeated)
    same = [np.array_equal(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    assert not any(same)


def test_composed_frames_follow_the_forward_model(tmp_path):
    """Over repeated frames at one beam position, each pixel's mean and variance match the
    model's expected counts (signal + background): exact Poisson draws, nothing lost."""
    import h5py

    from braggscope.simulators.beamline import SimulatedBeamline

    bl = SimulatedBeamline("nmc622", shape=(128, 128), cch=(64.0, 64.0), seed=3)
    s = bl.bragg_setup()
    fwd = bl.forward
    dx, dy = bl.eccentricity.offset(s["eta"])
    x, y = s["center_um"][0] - dx, s["center_um"][1] - dy
    args = (x, y, s["eta"], s["delta"], 0.0, 0.0, s["energy_kev"], 0.005)
    expected = fwd.expected_frame(*args)
    pool = ChunkPool((128, 128), blosc_compressor(), np.random.default_rng(4))
    n = 300
    composed = [pool.compose(*fwd.render_sparse(*args)) for _ in range(n)]
    frames = np.stack([c.frame() for c in composed]).astype(float)
    mean, var = frames.mean(axis=0), frames.var(axis=0, ddof=1)
    peak = expected > 20 * expected.min()
    assert peak.sum() > 50  # the peak is on the detector
    # the mean of each peak pixel within 5 standard errors of the model (Poisson: var = mean)
    z = (mean[peak] - expected[peak]) / np.sqrt(expected[peak] / n)
    assert np.abs(z).max() < 5.5 and abs(z.mean()) < 0.3
    # Poisson variance on the peak: var / mean ~ 1 (the sample variance's relative error ~ sqrt(2 / n))
    assert np.median(var[peak] / expected[peak]) == pytest.approx(1.0, abs=4 * np.sqrt(2 / n))
    # the background pixels: Poisson of the model's flat level (background_rate x exposure)
    bg = fwd.background_rate * 0.005
    assert expected.min() == pytest.approx(bg)
    flat = frames[:, expected < 1.0001 * bg]
    assert flat.mean() == pytest.approx(bg, rel=0.02) and flat.var() == pytest.approx(bg, rel=0.05)
    # the statistics carried by the chunks are those of the frame
    got, ref = composed[0].stats, frame_stats(composed[0].frame())
    for key in ("total", "centroid_x", "centroid_y", "max"):
        assert got[key] == pytest.approx(ref[key], rel=1e-12)
    # written with write_direct_chunk, read back through hdf5plugin's Blosc filter: the same frames
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        data = f.create_dataset("data", shape=(3, 128, 128), chunks=pool.chunk_shape, dtype=np.uint32,
                                **hdf5_filter())
        for i in range(3):
            for j, payload in enumerate(composed[i].payloads):
                data.id.write_direct_chunk((i, j * pool.chunk_rows, 0), payload)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["data"][:], frames[:3].astype(np.uint32))


def test_render_and_render_sparse_draw_the_same_signal():
    """render() is the background pool plus render_sparse()'s pixels: same expected counts."""
    from braggscope.simulators.beamline import SimulatedBeamline

    bl = SimulatedBeamline("nmc622", shape=(128, 128), cch=(64.0, 64.0), seed=5)
    s = bl.bragg_setup()
    pos = {"pix": s["center_um"][0], "piy": s["center_um"][1], "eta": s["eta"], "delta": s["delta"],
           "energy": s["energy_kev"]}
    whole = np.mean([bl.render(pos, 0.005).sum() for _ in range(40)])
    from braggscope.simulators.ioc_detector import sparse_renderer

    sparse = sparse_renderer(bl.render)
    pool = ChunkPool((128, 128), blosc_compressor(), np.random.default_rng(6))
    composed = np.mean([pool.compose(*sparse(pos, 0.005)).stats["total"] for _ in range(40)])
    assert composed == pytest.approx(whole, rel=0.02)
    assert sparse_renderer(lambda p, e: None) is None
    bcdi = SimulatedBeamline("lmno_bcdi", seed=0)
    assert sparse_renderer(bcdi.render) is None  # BCDI frames are rendered whole
