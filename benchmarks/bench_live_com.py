"""Live centre-of-mass reduction speed: frames/s at 512x512 on one core.

Compares, in the same run and on the same uint32 frames:

* baseline: per frame, float64 ``np.sum`` plus ``np.indices``-weighted sums
  for the detector COM and ``Q``-weighted sums (float64 Q maps) - the naive
  way, one pass per quantity;
* live, batch 1: ``LiveSXDM`` fed event documents one by one, each frame
  contracted with the (6, npix) float32 weight matrix (one matrix-vector
  product);
* live, batch 32: the same with the frames of 32 events contracted in one
  matrix-matrix product (what the worker thread of ``LiveMapDispatcher`` does
  when frames queue up).

Usage: ``python benchmarks/bench_live_com.py [--frames 400] [--size 512]``.
Threads are limited to one (OMP/OpenBLAS and threadpoolctl) before numpy loads.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from braggscope.analysis.live.callback import LiveSXDM  # noqa: E402
from braggscope.core.geometry import Geometry, bragg_angle  # noqa: E402


def start_doc(size, n_eta, ny, nx):
    th = bragg_angle(2.0, 8.0)
    return dict(uid="bench", time=0.0, energy_kev=8.0, distance_m=0.5, pixel_m=55e-6,
                cch=[size / 2, size / 2], detector_shape=[size, size], delta=2 * th, nu=0.0,
                phi=0.0, eta=list(th + np.linspace(-0.1, 0.1, n_eta)),
                raster={"fast": "pix", "slow": "piy", "x": [0, 1, nx], "y": [0, 1, ny],
                        "snake": False}, shape=[n_eta, ny, nx])


def baseline(frames, geometry, doc):
    """Naive per-frame float64 sums (intensity, row/col COM, Q COM)."""
    size = frames.shape[-1]
    rows, cols = np.indices((size, size))
    q = geometry.q_frame((size, size), doc["eta"][0], doc["delta"])
    out = np.empty((len(frames), 6))
    for k, f in enumerate(frames):
        f = f.astype(np.float64)
        total = np.sum(f)
        out[k] = (total, np.sum(f * rows), np.sum(f * cols), np.sum(f * q[0]),
                  np.sum(f * q[1]), np.sum(f * q[2]))
    return out


def live(frames, doc, batch):
    cb = LiveSXDM(batch_size=batch)
    cb("start", doc)
    cb("descriptor", {"uid": "d", "name": "primary", "run_start": "bench",
                      "data_keys": {"mpx1x4_image": {}}})
    cb._weights_for(0)  # weight matrix built before timing (once per eta in a scan)
    t0 = time.perf_counter()
    for k, f in enumerate(frames):
        cb("event", {"descriptor": "d", "seq_num": k + 1, "data": {"mpx1x4_image": f}})
    cb.flush()
    return time.perf_counter() - t0, cb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    n, size = args.frames, args.size
    rng = np.random.default_rng(0)
    frames = rng.poisson(2.0, (n, size, size)).astype(np.uint32)
    doc = start_doc(size, 1, 1, n)
    geometry = Geometry(8.0, 0.5, 55e-6, (size / 2, size / 2))

    n_base = max(n // 8, 10)
    t0 = time.perf_counter()
    ref = baseline(frames[:n_base], geometry, doc)
    t_base = (time.perf_counter() - t0) / n_base

    t_b1, _ = live(frames, doc, 1)
    t_b32, cb32 = live(frames, doc, 32)
    ds = cb32.maps()
    # same sums as the float64 baseline (relative, on the intensity and detector COM)
    tot = ds.intensity.values[0, :n_base]
    np.testing.assert_allclose(tot, ref[:, 0], rtol=1e-5)
    np.testing.assert_allclose(ds.com_row.values[0, :n_base], ref[:, 1] / ref[:, 0], atol=1e-3)

    print(f"live COM reduction, {size}x{size} uint32 frames, 1 thread "
          f"(2-core machine shared with other jobs: noisy)")
    print(f"{'method':<38}{'ms/frame':>10}{'frames/s':>10}{'speed-up':>10}")
    rows = [("baseline float64 np.sum x6 (naive)", t_base),
            ("live, batch 1 (float32 matvec)", t_b1 / n),
            ("live, batch 32 (float32 matmat)", t_b32 / n)]
    for name, t in rows:
        print(f"{name:<38}{1e3 * t:>10.3f}{1 / t:>10.0f}{t_base / t:>10.1f}")
    print(f"goal >= 2000 frames/s: batch 1 {'met' if n / t_b1 >= 2000 else 'NOT met'}, "
          f"batch 32 {'met' if n / t_b32 >= 2000 else 'NOT met'}")


if __name__ == "__main__":
    main()
