"""A day of beamtime: SXDM strain and tilt errors on a beamtime-like ID01 file beside the clean case, same counts.

For each seed, the tests' forward model (tests/beamtime_model.py: Q from xrayutilities, analytic strain and tilt
fields with two tilt domains along the rocking direction) gives two maps on the same counts, tens of photons in the
brightest voxel of a frame:

- **clean**: steady beam, no drift, no bad pixels, reduced with the defaults;
- **beamtime**: the ring decays by tens of percent and is refilled in the middle of the rocking series (six points
  without beam), the sample drifts by up to 2 map pixels, hot and dead pixels are flagged in ``pixel_mask``, and
  ``mon1``, ``ct_fluo``, ``machine/current`` are recorded: written as an ID01 BLISS file and read back with
  ``read_bliss``, then reduced with every correction (what ``braggscope reduce sxdm FILE --drift register`` does)
  and without each one.

Printed side by side: RMS strain (microstrain) and tilt-altitude (deg) errors against the truth over the
crystal's interior, their ratio to the clean case (goal: within 1.3x with every correction), the fraction of the
crystal the mask misses, and the largest error of the registered drift. Means over the seeds, with the range of
the ratios.

Run: ``python benchmarks/bench_beamtime.py [--seeds 3] [--map 16 16 15] [--detector 64]`` (about a minute per
seed on a 2-core machine).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time
import warnings
from dataclasses import replace

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the tests' forward model

from braggscope.analysis.readers import read_bliss  # noqa: E402
from braggscope.analysis.sxdm import reduce_map, reduce_stack  # noqa: E402
from braggscope.analysis.sxdm.stack import register_map_drift  # noqa: E402
from braggscope.core.errors import DataWarning  # noqa: E402
from braggscope.core.geometry import Geometry  # noqa: E402
from tests.beamtime_model import beamtime, map_errors, write_bliss  # noqa: E402

ROWS = ("clean (reference)", "beamtime, every correction", "  drift known (no registration error)",
        "  without monitor normalisation", "  without drift correction", "  drift registered on the Bragg intensity",
        "  without the pixel mask")


def one_seed(seed, size, detector, workdir):
    """Errors of every row for one seed: {row: (strain, altitude, missed)}, and the registration's worst error."""
    ny, nx, n_eta = size
    kw = dict(ny=ny, nx=nx, n_eta=n_eta, shape=(detector, detector), seed=seed)
    clean = beamtime(clean=True, **kw).truth
    day = beamtime(**kw)
    stack = read_bliss(write_bliss(pathlib.Path(workdir) / f"beamtime_{seed}.h5", day))
    registration = register_map_drift(stack, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the Bragg registration's own report
        bragg = register_map_drift(stack, signal="bragg", progress=False)
    unmasked = replace(stack, setup=stack.setup.replace(pixel_mask=None))
    geometry = Geometry(clean.energy_kev, clean.distance_m, clean.pixel_m, clean.cch)
    maps = {
        ROWS[0]: reduce_stack(clean.frames, clean.eta, geometry, clean.delta, clean.nu, progress=False),
        ROWS[1]: reduce_map(stack, shifts=registration.shifts, progress=False),
        ROWS[2]: reduce_map(stack, shifts=day.truth.shifts, progress=False),
        ROWS[3]: reduce_map(stack, shifts=registration.shifts, monitor=None, progress=False),
        ROWS[4]: reduce_map(stack, progress=False),
        ROWS[5]: reduce_map(stack, shifts=bragg.shifts, progress=False),
        ROWS[6]: reduce_map(unmasked, shifts=registration.shifts, check=False, progress=False),
    }
    errors = {}
    for row, m in maps.items():
        e = map_errors(m, clean if row == ROWS[0] else day.truth)
        errors[row] = (e["strain"], e["altitude"], e["missed"])
    drift_error = {"fluorescence": np.abs(registration.shifts - day.truth.shifts).max(),
                   "bragg": np.abs(bragg.shifts - day.truth.shifts).max()}
    peak = int(clean.frames.max())
    return errors, drift_error, peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--map", type=int, nargs=3, default=(16, 16, 15), metavar=("NY", "NX", "N_ETA"))
    parser.add_argument("--detector", type=int, default=64, help="detector edge in pixels")
    args = parser.parse_args(argv)
    results, drifts, peaks = [], [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        for seed in range(1, args.seeds + 1):
            t = time.perf_counter()
            errors, drift_error, peak = one_seed(seed, args.map, args.detector, workdir)
            results.append(errors)
            drifts.append(drift_error)
            peaks.append(peak)
            print(f"seed {seed}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    ny, nx, n_eta = args.map
    print(f"{ny} x {nx} map, {n_eta} angles, {args.detector} x {args.detector} detector, {args.seeds} seeds; "
          f"brightest voxel of a clean frame {min(peaks)}-{max(peaks)} photons; {time.perf_counter() - t0:.0f} s")
    print(f"registered drift, worst error: fluorescence {max(d['fluorescence'] for d in drifts):.2f} px, "
          f"Bragg intensity {max(d['bragg'] for d in drifts):.2f} px (true drift up to 2 px)")
    print(f"{'':42s} {'strain (ue)':>12s} {'ratio':>16s} {'altitude (deg)':>15s} {'ratio':>16s} {'missed':>7s}")
    clean = np.array([r[ROWS[0]] for r in results])
    for row in ROWS:
        values = np.array([r[row] for r in results])
        ratios = values[:, :2] / clean[:, :2]
        mean = values.mean(axis=0)
        ratio = mean[:2] / clean.mean(axis=0)[:2]
        spread = [f"{ratio[k]:.2f} ({ratios[:, k].min():.2f}-{ratios[:, k].max():.2f})" for k in range(2)]
        print(f"{row:42s} {mean[0]:12.1f} {spread[0]:>16s} {mean[1]:15.4f} {spread[1]:>16s} {mean[2]:7.1%}")
    every = np.array([r[ROWS[1]] for r in results]).mean(axis=0)[:2] / clean.mean(axis=0)[:2]
    verdict = "met" if np.all(every <= 1.3) else "not met"
    print(f"goal: every correction within 1.3x of the clean case: strain {every[0]:.2f}x, altitude "
          f"{every[1]:.2f}x: {verdict}")


if __name__ == "__main__":
    main()
