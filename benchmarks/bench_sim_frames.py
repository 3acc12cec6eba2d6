"""Simulated detector frames per second (512x512), beside baselines from the same run.

Usage: python benchmarks/bench_sim_frames.py [--frames 400] [--pipeline-only]

Part 1, the simulated Maxipix's external-trigger pipeline (fly scans; goal >= 500 frames/s of 516 x 516):
render + compress + write to an HDF5 file in one thread, frames along a raster line across the
NMC622 crystal at 5 ms exposure, wall-clock frames/s and CPU ms per frame (CPU time of the process:
the figure that does not depend on what else the machine runs):

* braggscope fly path (``MaxipixIOC.render_frame`` + ``append_frames``, as its writer thread): the
  peaks rendered sparse, the frame composed from pre-compressed background chunks (only the chunks
  the peak reaches compressed, Blosc LZ4 bit-shuffle), written with ``write_direct_chunk``, flushed
  every 50 ms;
* baseline (the previous path): whole-frame render + frame statistics + h5py write through the Blosc
  filter + a flush per frame.

Part 2, the renderers alone:

* braggscope SXDM: ``SimulatedBeamline("nmc622").render`` over a raster on the crystal
  at the Bragg angle (windowed components, cached q_frame, pooled background noise);
* baseline "poisson only": ``rng.poisson(1.0, (512, 512)).astype(uint32)``, i.e. the
  cost of drawing a full-frame Poisson background alone;
* baseline "naive": every illuminated column's Gaussian evaluated on all 262144 pixels
  (q_frame cached too) then a full-frame Poisson draw;
* braggscope SXDM rocking: eta changes every frame (window-only pixel Qs);
* braggscope BCDI: ``SimulatedBeamline("lmno_bcdi").render`` along a rocking curve.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from braggscope.simulators.beamline import SimulatedBeamline


def _rate(fn, n):
    fn(0)  # warm caches
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def pipeline_rates(n_frames: int = 400, shape=(516, 516), exposure_s: float = 0.005) -> dict:
    """Frames/s (wall) and CPU ms/frame of the fly path and of the baseline, measured in turn."""
    import h5py

    from braggscope.core.config import load_config
    from braggscope.simulators.ad_external import FLUSH_S
    from braggscope.simulators.ad_hdf5 import UNIQUE_ID_DATASET
    from braggscope.simulators.frame_chunks import frame_stats, hdf5_filter
    from braggscope.simulators.ioc_detector import MaxipixIOC

    cfg = load_config()
    cfg.set("detector.shape", list(shape))
    cfg.set("detector.cch", [shape[0] / 2, shape[1] / 2])
    beamline = SimulatedBeamline.from_config(cfg, seed=1)
    setup = beamline.bragg_setup()
    cx, cy = setup["center_um"]
    half = float(setup["extent_um"])
    xs = np.linspace(cx - half, cx + half, 100)  # a raster line across the crystal
    pos = {"pix": cx, "piy": cy, "piz": 0.0, "eta": setup["eta"], "delta": setup["delta"], "nu": 0.0,
           "phi": 0.0, "energy": setup["energy_kev"]}
    ioc = MaxipixIOC("BENCH:", state=None, renderer=beamline.render, shape=shape)
    ioc.cam.trigger_mode._data["value"] = "External"  # the fly-scan layout (row-block chunks, Blosc)

    pending = []

    def fly(f, i):  # as the writer thread: frames appended and flushed together every FLUSH_S
        pending.append(ioc.render_frame(dict(pos, pix=xs[i % xs.size]), exposure_s))
        if i == 0 or i == n_frames or time.perf_counter() - last[0] >= FLUSH_S:
            ioc.append_frames(pending, list(range(i + 2 - len(pending), i + 2)))
            ioc.hdf.flush()
            pending.clear()
            last[0] = time.perf_counter()

    def baseline(f, i):
        frame = beamline.render(dict(pos, pix=xs[i % xs.size]), exposure_s).astype(np.uint32, copy=False)
        frame_stats(frame)
        ioc.hdf.append(frame, i + 1)  # resize, write through the filter, flush

    out, last = {}, [0.0]
    with tempfile.TemporaryDirectory() as tmp:
        for name, step, layout in (("fly", fly, ioc.frame_layout()),
                                   ("baseline", baseline, {"chunks": (1,) + tuple(shape), **hdf5_filter()})):
            with h5py.File(Path(tmp) / f"{name}.h5", "w", libver="latest") as f:
                f.create_dataset("/entry/data/data", shape=(0,) + tuple(shape), maxshape=(None,) + tuple(shape),
                                 dtype=np.uint32, **layout)
                f.create_dataset(UNIQUE_ID_DATASET, shape=(0,), maxshape=(None,), chunks=(1024,), dtype=np.int32)
                f.swmr_mode = True
                ioc.hdf.h5 = f
                step(f, 0)  # warm: the background pool, the q_frame cache
                t0, c0 = time.perf_counter(), time.process_time()
                last[0] = t0
                for i in range(1, n_frames + 1):
                    step(f, i)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                ioc.hdf.h5 = None
            out[name] = (n_frames / wall, 1e3 * cpu / n_frames)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=400, help="frames per measurement")
    ap.add_argument("--pipeline-only", action="store_true", help="only part 1 (the fly detector pipeline)")
    args = ap.parse_args(argv)
    n = int(args.frames)

    rates = pipeline_rates(n)
    print(f"{'detector pipeline, 516x516, render+compress+write':52s} {'frames/s':>9s} {'CPU ms/frame':>13s}")
    for name, label in (("fly", "braggscope fly path (sparse, pooled chunks, direct)"),
                        ("baseline", "baseline: whole frame, h5py filter, flush/frame")):
        print(f"{label:52s} {rates[name][0]:9.1f} {rates[name][1]:13.2f}")
    print(f"fly path vs baseline: {rates['fly'][0] / rates['baseline'][0]:.1f}x the frames/s, "
          f"{rates['baseline'][1] / rates['fly'][1]:.1f}x less CPU per frame (goal >= 500 frames/s; "
          f"CPU-bound: 1000 / CPU ms = {1e3 / rates['fly'][1]:.0f} frames/s on an idle core)")
    if args.pipeline_only:
        return

    bl = SimulatedBeamline("nmc622", seed=0)
    s = bl.bragg_setup()
    cx, cy = s["center_um"]
    side = int(np.ceil(np.sqrt(n)))
    xs = cx + np.linspace(-1.2, 1.2, side)
    ys = cy + np.linspace(-1.2, 1.2, side)
    base = {"eta": s["eta"], "delta": s["delta"], "nu": 0.0, "phi": 0.0, "energy": s["energy_kev"]}

    def sxdm(i):
        return bl.render(dict(base, pix=xs[i % side], piy=ys[(i // side) % side]), 0.01)

    etas_sxdm = s["eta"] + np.linspace(-0.1, 0.1, 997)  # on the peak: every frame has signal

    def sxdm_rocking(i):  # a new eta every frame: no q_frame cache hit
        return bl.render(dict(base, pix=cx, piy=cy, eta=etas_sxdm[i % etas_sxdm.size]), 0.01)

    rng = np.random.default_rng(0)

    def poisson_only(i):
        return rng.poisson(1.0, (512, 512)).astype(np.uint32)

    fwd = bl.forward
    geo = fwd.geometry(s["energy_kev"])
    qf = fwd._q_frame(geo, s["eta"], s["delta"], 0.0, 0.0)
    grid = fwd.columns[0]
    dxe, dye = bl.eccentricity.offset(s["eta"])

    def naive(i):
        xb, yb = xs[i % side] - dxe, ys[(i // side) % side] - dye
        xx, yy = np.meshgrid(grid.x, grid.y)
        w = np.exp(-((xx - xb) ** 2 + (yy - yb) ** 2) / (2 * fwd.sigma_probe**2)) * grid.weight
        sel = w > 1e-6 * max(w.max(), 1e-300)
        lam = np.full((512, 512), fwd.background_rate * 0.01)
        for wk, qk in zip(w[sel], grid.q[sel]):
            dq = qf - qk[:, None, None]
            nq = qk / np.linalg.norm(qk)
            par = np.tensordot(nq, dq, axes=1)
            perp2 = np.einsum("ijk,ijk->jk", dq, dq) - par**2
            lam += fwd.peak_rate * 0.01 * wk * np.exp(-0.5 * (par**2 / grid.sigma_r**2 + perp2 / grid.sigma_t**2))
        return np.minimum(rng.poisson(lam), fwd.saturation).astype(np.uint32)

    bcdi = SimulatedBeamline("lmno_bcdi", seed=0, distance_m=1.4, energy_kev=13.0)
    sb = bcdi.bragg_setup()
    etas = np.linspace(sb["eta_start"], sb["eta_stop"], sb["eta_num"])

    def bcdi_frame(i):
        return bcdi.render({"pix": sb["center_um"][0], "piy": sb["center_um"][1], "eta": etas[i % etas.size],
                            "delta": sb["delta"]}, 0.1)

    n_naive = max(3, n // 100)
    rows = [
        ("braggscope SXDM render (nmc622 raster)", _rate(sxdm, n), n),
        ("braggscope SXDM render (rocking, new eta/frame)", _rate(sxdm_rocking, n), n),
        ("baseline: np.random.poisson 512x512 only", _rate(poisson_only, n), n),
        ("baseline: naive full-frame Gaussians", _rate(naive, n_naive), n_naive),
        ("braggscope BCDI render (lmno, 13 keV, 1.4 m)", _rate(bcdi_frame, max(20, n // 10)), max(20, n // 10)),
    ]
    print(f"{'case':48s} {'frames/s':>10s} {'ms/frame':>10s} {'frames':>7s}")
    for name, rate, count in rows:
        print(f"{name:48s} {rate:10.1f} {1000.0 / rate:10.2f} {count:7d}")
    print(f"SXDM raster render vs naive full-frame model: {rows[0][1] / rows[3][1]:.0f}x faster; "
          f"vs a full-frame Poisson draw alone: {rows[0][1] / rows[2][1]:.1f}x faster")


if __name__ == "__main__":
    main()
