"""SXDM reduction speed: braggscope ``reduce_stack`` side by side with baselines.

Default: a synthetic 20 x 20 positions x 20 angles x 128 x 128 stack (the
size of a published XSOCS timing: 525 MB as int32) written
to an HDF5 file, then, in the same run:

1. the time to read the stack once (chunked h5py reads, the I/O floor);
2. ``reduce_stack`` (COM in Q with the 2x2 median and constant background);
3. the same without the median filter;
4. a naive XSOCS-like baseline: per map position, all voxels binned into a
   40^3 Q grid with ``numpy.histogramdd``, then the centroid of the grid
   (XSOCS's Q-space conversion + COM fit, in plain numpy);
5. XSOCS itself (``pip install xsocs``; runs headless) when importable: the
   stack is copied into XSOCS's own layout (master file + one file per angle),
   converted by its ``QSpaceConverter`` to a 40^3 grid and fitted by its
   ``PeakFitter`` (centroid); our reader + reduction run on the same files.
   Without XSOCS, that published figure of ~120 M detector pixels/s is printed.

``--large`` instead measures the peak resident memory of ``reduce_stack`` (on
the h5py dataset, then on a dask array of it, as a catalog run gives) on
a stack generated on disk that is larger than the memory limit given with
``--limit-gb`` (default 2 GB of frames at 4 bytes/pixel written as uint16,
so a run takes a few minutes): memory stays at the chunk size, not the stack.

Run: ``python benchmarks/bench_sxdm_reduce.py [--workers 2] [--large]``.
Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import h5py
import numpy as np

from braggscope.analysis.sxdm.reduce import reduce_stack
from braggscope.core.geometry import Geometry, bragg_angle

ENERGY, DIST, PIX = 8.33, 0.5, 55e-6


def make_stack(path, n_eta=20, ny=20, nx=20, shape=(128, 128), dtype=np.int32, seed=0, progress=True):
    """Write a synthetic SXDM stack: one Gaussian peak per position, moving with strain/tilt."""
    rng = np.random.default_rng(seed)
    theta = bragg_angle(2.0, ENERGY)
    eta = theta + 0.04 * (np.arange(n_eta) - n_eta / 2)
    rows, cols = shape
    rr, cc = np.mgrid[0:rows, 0:cols]
    with h5py.File(path, "w") as f:
        d = f.create_dataset("frames", shape=(n_eta, ny, nx, rows, cols), dtype=dtype,
                             chunks=(1, 1, nx, rows, cols))
        yy, xx = np.mgrid[0:ny, 0:nx]
        r0 = rows / 2 + 6 * (xx / nx - 0.5)
        c0 = cols / 2 + 6 * (yy / ny - 0.5)
        e0 = n_eta / 2 + 2 * np.sin(xx / nx * 3)
        amp = 400.0 * (((xx - nx / 2) / (0.4 * nx)) ** 2 + ((yy - ny / 2) / (0.4 * ny)) ** 2 < 1)
        for i in range(n_eta):
            for j in range(ny):
                lam = (amp[j, :, None, None] * np.exp(-0.5 * ((i - e0[j, :, None, None]) / 1.5) ** 2
                       - 0.5 * ((rr - r0[j, :, None, None]) ** 2 + (cc - c0[j, :, None, None]) ** 2) / 9.0)
                       + 1.0)
                d[i, j] = rng.poisson(lam).astype(dtype)
            if progress:
                print(f"\r  writing angle {i + 1}/{n_eta}", end="", file=sys.stderr)
        if progress:
            print(file=sys.stderr)
    return eta, 2 * theta


def time_read(path):
    t0 = time.perf_counter()
    total = 0
    with h5py.File(path, "r") as f:
        d = f["frames"]
        for i in range(d.shape[0]):
            for j in range(d.shape[1]):
                total += int(d[i, j].sum(dtype=np.int64))
    return time.perf_counter() - t0


def naive_xsocs_like(path, geometry, eta, delta, n_bins=40):
    """Per-position histogramdd into a 40^3 Q grid, then the grid centroid."""
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        d = f["frames"]
        n_eta, ny, nx, rows, cols = d.shape
        q = np.stack([geometry.q_frame((rows, cols), e, delta) for e in eta])  # (n_eta, 3, r, c)
        pts = np.moveaxis(q, 1, -1).reshape(-1, 3)
        edges = [np.linspace(pts[:, a].min(), pts[:, a].max(), n_bins + 1) for a in range(3)]
        centres = [0.5 * (e[1:] + e[:-1]) for e in edges]
        com = np.zeros((ny, nx, 3))
        for j in range(ny):
            block = d[:, j].astype(np.float32)  # (n_eta, nx, rows, cols)
            for k in range(nx):
                w = block[:, k].ravel()
                h, _ = np.histogramdd(pts, bins=edges, weights=w)
                s = h.sum()
                com[j, k] = [(h.sum(axis=tuple(b for b in range(3) if b != a)) * centres[a]).sum() / s
                             for a in range(3)]
    return time.perf_counter() - t0, com



def write_xsocs_copy(src, dirname, eta, delta, shape):
    """The same stack as an XSOCS master file + one file per angle (XSOCS's own layout)."""
    rows, cols = shape
    cpd = DIST * np.tan(np.radians(1.0)) / PIX
    master = os.path.join(dirname, "xsocs_master.h5")
    with h5py.File(src, "r") as f, h5py.File(master, "w") as m:
        d = f["frames"]
        n_eta, ny, nx = d.shape[:3]
        yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
        for i in range(n_eta):
            name = f"bench_{i:04d}.1"
            fn = os.path.join(dirname, f"entry_{i:04d}.h5")
            with h5py.File(fn, "w") as e5:
                e = e5.create_group(name)
                e.attrs["NX_class"] = "NXentry"
                e.create_dataset("measurement/image/data", data=d[i].reshape(ny * nx, rows, cols),
                                 chunks=(1, rows, cols))
                e["measurement/adcY"] = xx.ravel()  # pix
                e["measurement/adcX"] = yy.ravel()  # piy
                e["measurement/imgnr"] = np.arange(ny * nx)
                for k, v in (("eta", eta[i]), ("del", delta), ("nu", 0.0), ("phi", 0.0)):
                    e[f"instrument/positioners/{k}"] = v
                det = e["instrument"].create_group("detector")
                det["beam_energy"] = ENERGY * 1000.0
                det["center_chan_dim0"], det["center_chan_dim1"] = rows / 2, cols / 2
                det["chan_per_deg_dim0"] = det["chan_per_deg_dim1"] = cpd
                sc = e.create_group("scan")
                sc["motor_0"], sc["motor_0_start"], sc["motor_0_end"], sc["motor_0_steps"] = "pix", 0.0, nx - 1.0, nx
                sc["motor_1"], sc["motor_1_start"], sc["motor_1_end"], sc["motor_1_steps"] = "piy", 0.0, ny - 1.0, ny
                sc["delay"] = 0.0
            m[name] = h5py.ExternalLink(os.path.basename(fn), name)
    return master


def run_xsocs(master, dirname, n_proc):
    """XSOCS Q-space conversion to a 40^3 grid, then its centroid fit; returns times and |Q|."""
    from xsocs import config
    from xsocs.process.fit.peak_fit import FitTypes, PeakFitter
    from xsocs.process.qspace.QSpaceConverter import QSpaceConverter

    config.DEFAULT_PROCESS_NUMBER = n_proc
    out = os.path.join(dirname, "qspace.h5")
    t0 = time.perf_counter()
    conv = QSpaceConverter(master, qspace_dims=[40, 40, 40], output_f=out)
    conv.n_proc = n_proc
    conv.convert(overwrite=True)
    if conv.status != conv.DONE:
        raise RuntimeError(f"XSOCS conversion failed: {conv.status_msg}")
    t_conv = time.perf_counter() - t0
    t0 = time.perf_counter()
    fitter = PeakFitter(out, fit_type=FitTypes.CENTROID, n_proc=n_proc)
    res = fitter.peak_fit()
    t_fit = time.perf_counter() - t0
    com = np.stack([res.get_results(a, "COM") for a in range(3)], axis=-1)
    return t_conv, t_fit, np.linalg.norm(com, axis=-1)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dir", default=None, help="directory for the temporary HDF5 stack")
    p.add_argument("--no-baseline", action="store_true", help="skip the naive histogramdd baseline")
    p.add_argument("--no-xsocs", action="store_true", help="skip XSOCS even if it is installed")
    p.add_argument("--large", action="store_true", help="peak-memory run on a stack larger than --limit-gb")
    p.add_argument("--limit-gb", type=float, default=2.0)
    p.add_argument("--repeat", type=int, default=3, help="interleaved timing rounds (default 3)")
    args = p.parse_args(argv)
    tmpdir = tempfile.mkdtemp(dir=args.dir)
    path = os.path.join(tmpdir, "stack.h5")
    try:
        if args.large:
            return run_large(path, args)
        n_eta, ny, nx, shape = 20, 20, 20, (128, 128)
        npix = n_eta * ny * nx * shape[0] * shape[1]
        t0 = time.perf_counter()
        eta, delta = make_stack(path, n_eta, ny, nx, shape)
        print(f"stack {n_eta} angles x {ny}x{nx} positions x {shape[0]}x{shape[1]} "
              f"({npix * 4 / 1e6:.0f} MB int32) written in {time.perf_counter() - t0:.1f} s")
        g = Geometry(ENERGY, DIST, PIX, (shape[0] / 2, shape[1] / 2))
        results = {}

        def ours(label, **kw):
            def step():
                with h5py.File(path, "r") as f:
                    t0 = time.perf_counter()
                    results[label] = reduce_stack(f["frames"], eta, g, delta, num_workers=args.workers,
                                                  progress=False, **kw)
                    return {label: time.perf_counter() - t0}
            return step

        steps = [lambda: {"read the stack once (h5py)": time_read(path)},
                 ours("braggscope reduce_stack (2x2 median, constant bg)"),
                 ours("braggscope reduce_stack (no median)", median=1)]
        if not args.no_baseline:
            def naive():
                t, results["naive"] = naive_xsocs_like(path, g, eta, delta)
                return {"naive XSOCS-like: histogramdd 40^3 per position + centroid (1 core)": t}
            steps.append(naive)
        try:
            import xsocs  # noqa: F401
        except ImportError:
            xsocs = None
        use_xsocs = xsocs is not None and not args.no_xsocs
        if use_xsocs:
            from braggscope.analysis.readers import read_xsocs
            from braggscope.analysis.sxdm import reduce_map

            master = write_xsocs_copy(path, tmpdir, eta, delta, shape)

            def ours_xsocs_files():
                t0 = time.perf_counter()
                results["ours_x"] = reduce_map(read_xsocs(master), num_workers=args.workers, progress=False, median=1)
                return {"braggscope read_xsocs + reduce_map (no median), XSOCS files": time.perf_counter() - t0}

            def xsocs_run():
                t_conv, t_fit, results["xsocs"] = run_xsocs(master, tmpdir, args.workers)
                return {f"XSOCS QSpaceConverter 40^3 ({args.workers} processes)": t_conv,
                        "XSOCS PeakFitter centroid": t_fit, "XSOCS total (conversion + centroid)": t_conv + t_fit}
            steps += [ours_xsocs_files, xsocs_run]
        times = {}
        for _ in range(args.repeat):  # interleaved rounds: load changes hit every step alike
            for step in steps:
                for label, t in step().items():
                    times.setdefault(label, []).append(t)
        if not use_xsocs:
            times["XSOCS (published figure ~120 M px/s, not measured here)"] = [npix / 120e6]
        maps = results["braggscope reduce_stack (no median)"]
        m = maps.mask.values
        com_ours = np.stack([maps.qx, maps.qy, maps.qz], -1)
        qn_ours = np.linalg.norm(com_ours, axis=-1)
        if "naive" in results:
            print(f"max |Q_COM ours - naive| in the mask: {np.abs(com_ours[m] - results['naive'][m]).max():.2e}"
                  f" 1/A (the naive centroid has no background subtraction: pulled toward the volume centre)")
        if use_xsocs:
            dd = (qn_ours[m] - results["xsocs"].reshape(qn_ours.shape)[m]) / qn_ours[m] * 1e6
            print(f"|Q| ours vs XSOCS centroid in the mask: median {np.median(dd):.0f}, rms "
                  f"{np.sqrt(np.mean(dd ** 2)):.0f} ppm; ours from the XSOCS files vs from the stack: max diff "
                  f"{np.nanmax(np.abs(results['ours_x'].q_norm.values - maps.q_norm.values)):.1e} 1/A")
        print(f"\n{args.repeat} interleaved rounds on a shared machine: best and median time")
        print(f"{'step':66s} {'best (s)':>9s} {'median':>8s} {'M px/s (best)':>14s}")
        for label, ts in times.items():
            print(f"{label:66s} {min(ts):9.2f} {np.median(ts):8.2f} {npix / min(ts) / 1e6:14.1f}")
        print(f"\npeak RSS of this process: {peak_rss_mb():.0f} MB (includes the stack generation)")
    finally:
        import shutil

        shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


def run_large(path, args):
    """Peak RSS of reduce_stack on an on-disk stack larger than --limit-gb."""
    rows, cols = 256, 256
    n_eta = 20
    per_pos = n_eta * rows * cols * 4
    n_pos = int(args.limit_gb * 1e9 / per_pos) + 1
    nx = 40
    ny = max(1, -(-n_pos // nx))
    print(f"large stack: {n_eta} x {ny} x {nx} x {rows} x {cols} = "
          f"{n_eta * ny * nx * rows * cols * 4 / 1e9:.2f} GB as float32 in memory (uint16 on disk)")
    eta, delta = make_stack(path, n_eta, ny, nx, (rows, cols), dtype=np.uint16)
    base = peak_rss_mb()
    g = Geometry(ENERGY, DIST, PIX, (rows / 2, cols / 2))
    with h5py.File(path, "r") as f:
        t0 = time.perf_counter()
        reduce_stack(f["frames"], eta, g, delta, num_workers=args.workers, chunk_mb=64, progress=True)
        t = time.perf_counter() - t0
    print(f"reduce_stack: {t:.1f} s, peak RSS {peak_rss_mb():.0f} MB (after generation {base:.0f} MB); "
          f"stack would need {n_eta * ny * nx * rows * cols * 4 / 1e6:.0f} MB as float32")
    # the same file as a lazy dask array (the catalog path, storage.sxdm_stack): chunks read by workers
    import dask.array as da

    with h5py.File(path, "r") as f:
        d = f["frames"]
        t0 = time.perf_counter()
        reduce_stack(da.from_array(d, chunks=(1, 1, nx, rows, cols)), eta, g, delta, num_workers=args.workers,
                     chunk_mb=64, progress=True)
        t = time.perf_counter() - t0
    print(f"reduce_stack on a dask array of the file: {t:.1f} s, peak RSS so far {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
