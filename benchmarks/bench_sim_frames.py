"""Simulated detector frames per second (512x512), beside baselines from the same run.

Usage: python benchmarks/bench_sim_frames.py [--frames 400]

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
import time

import numpy as np

from braggscope.simulators.beamline import SimulatedBeamline


def _rate(fn, n):
    fn(0)  # warm caches
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=400, help="frames per measurement")
    args = ap.parse_args(argv)
    n = int(args.frames)

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
