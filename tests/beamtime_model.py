"""A day of beamtime as an ID01 BLISS SXDM file, with its truth (for tests and benchmarks/bench_beamtime.py).

The physics is the tests' independent forward model (:func:`tests.test_sxdm_model.forward_stack`: the Q
of every detector pixel from xrayutilities, analytic strain and tilt fields). On top of it, what a
real day adds, each switchable:

- **low counts**: tens of photons in the brightest voxel of a frame;
- **the ring**: the current decays by tens of percent and is refilled in the middle of the rocking
  series; during the injection a few points are taken without beam (flux 0);
- **the monitor** ``mon1`` (counts proportional to the flux, with Poisson noise), the fluorescence
  counter ``ct_fluo`` (the particle at every angle, proportional to the flux) and the machine's
  ``current`` and ``refill_countdown`` (once per scan) recorded as BLISS records them;
- **drift**: the sample moves smoothly by up to 2 map pixels across the rocking series (sub-pixel
  values, the middle angle the reference);
- **tilt domains along the rocking direction**: the two halves of the crystal are lit at
  different angles, so the Bragg intensity shows a different part of the crystal at each angle;
- **bad detector pixels**: hot pixels (single and a 2 x 2 cluster) and a dead column and pixels,
  flagged in the file's ``pixel_mask``.

The clean case keeps the crystal, the counts and the noise model, without refill, drift or bad pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

from tests.test_sxdm_model import Truth, forward_stack, truth_tilts

#: Seconds per map point (a 10 ms Maxipix frame plus the step overhead) and between scans.
POINT_S, SCAN_S = 0.05, 5.0
#: Ring current at flux 1 (mA) and its decay lifetime (s), the refill's current and dead time (points).
CURRENT_MA, LIFETIME_S, REFILL_POINTS = 200.0, 450.0, 6
#: Monitor counts per point at flux 1 (an ion chamber: 0.7 % Poisson noise).
MONITOR_COUNTS = 2.0e4


@dataclass
class Beamtime:
    """A beamtime-like map and what the acquisition recorded with it."""

    truth: Truth                 # frames (bad pixels included), angles, geometry, truth fields, drift, flux
    monitor: np.ndarray          # (n_eta, ny, nx) mon1 counts
    fluorescence: np.ndarray     # (n_eta, ny, nx) ct_fluo counts
    current: np.ndarray          # (n_eta,) machine current at each scan's start, mA
    refill_countdown: np.ndarray  # (n_eta,) seconds to the next refill at each scan's start
    pixel_mask: np.ndarray       # (rows, cols) bool, True = bad
    no_beam: np.ndarray          # (n_eta, ny, nx) bool: points taken while the beam was off


def beamtime(*, clean: bool = False, seed: int = 0, ny: int = 16, nx: int = 16, n_eta: int = 15,
             shape=(64, 64), counts: float = 1.2e4, drift_px: float = 2.0, rock_tilt: float = 0.1,
             fluorescence: float = 300.0, refill: bool | None = None, bad_pixels: bool | None = None) -> Beamtime:
    """Simulate a beamtime-like SXDM map (or its clean twin with ``clean=True``).

    Parameters
    ----------
    clean : bool
        No refill (flux 1 everywhere), no drift, no bad pixels: the reference case on the same counts.
    counts : float
        Integrated counts of a map pixel on the whole crystal at flux 1 (1.2e4: about 35 photons in
        the brightest voxel of a frame at the peak).
    drift_px : float
        Drift from the first to the last angle, map pixels (x; y goes 0.7 of it the other way).
    rock_tilt : float
        Tilt (deg) of the crystal's two halves along the rocking direction, opposite ways.
    refill, bad_pixels : bool, optional
        Override the ring refill and the bad pixels separately (default: ``not clean``).
    """
    rng = np.random.default_rng(seed + 1000)
    refill = (not clean) if refill is None else refill
    bad_pixels = (not clean) if bad_pixels is None else bad_pixels
    shifts = np.zeros((n_eta, 2)) if clean or drift_px == 0 else _drift(n_eta, drift_px, rng)
    flux, current, countdown = _ring(n_eta, ny, nx, refill)
    truth = forward_stack(ny=ny, nx=nx, n_eta=n_eta, shape=shape, counts=counts, shifts=shifts, flux=flux,
                          rock_tilt=rock_tilt, fluorescence=fluorescence, fluorescence_background=0.03 * fluorescence,
                          seed=seed)
    mask = np.zeros(shape, bool)
    if bad_pixels:
        mask = _spoil(truth.frames, rng)
    monitor = rng.poisson(flux * MONITOR_COUNTS).astype(float)
    return Beamtime(truth, monitor, truth.fluorescence, current, countdown, mask, flux == 0)


def _drift(n_eta, span, rng):
    """Smooth thermal drift with a little jitter: ``span`` px in x over the series, 0.7 of it in y."""
    ramp = np.linspace(-0.5, 0.5, n_eta)
    shifts = np.stack([-0.7 * span * ramp, span * ramp], axis=1) + rng.normal(0, 0.1, (n_eta, 2))
    return shifts - shifts[n_eta // 2]


def _ring(n_eta, ny, nx, refill):
    """Relative flux of every point (acquisition order = raster order), and the current and refill
    countdown at each scan's start: decay by tens of percent, a refill during the middle angle's map."""
    n = ny * nx
    t = np.arange(n_eta)[:, None] * (n * POINT_S + SCAN_S) + np.arange(n)[None, :] * POINT_S
    if not refill:
        flux = np.ones((n_eta, n))
        return flux.reshape(n_eta, ny, nx), np.full(n_eta, CURRENT_MA), np.full(n_eta, 3600.0)
    t_refill = t[n_eta // 2, n // 3]
    after = t >= t_refill
    level = np.where(after, np.exp(-(t - t_refill) / LIFETIME_S), np.exp(-t / LIFETIME_S))
    flux = level / level.mean()  # the same counts as the clean case on average
    dead = (t >= t_refill) & (t < t_refill + REFILL_POINTS * POINT_S)
    flux[dead] = 0.0
    starts = t[:, 0]
    current = CURRENT_MA * np.where(starts >= t_refill, np.exp(-(starts - t_refill) / LIFETIME_S),
                                    np.exp(-starts / LIFETIME_S)) / level.mean()
    countdown = np.where(starts < t_refill, t_refill - starts, 3600.0 - (starts - t_refill))
    return flux.reshape(n_eta, ny, nx), current, countdown


def _spoil(frames, rng):
    """Hot pixels (single, and a 2 x 2 cluster near the peak) and dead pixels and a column, in place;
    the mask flagging them."""
    rows, cols = frames.shape[-2:]
    mask = np.zeros((rows, cols), bool)
    hot = [(5, 7), (rows // 2 + 3, cols // 2 - 5), (rows - 9, 11)]
    cluster = (slice(rows // 2 - 6, rows // 2 - 4), slice(cols // 2 + 4, cols // 2 + 6))
    for r, c in hot:
        frames[..., r, c] = rng.poisson(2000.0, frames.shape[:3])
        mask[r, c] = True
    frames[(...,) + cluster] = rng.poisson(800.0, frames.shape[:3] + (2, 2))
    mask[cluster] = True
    dead_column = cols // 2 + 9
    frames[..., :, dead_column] = 0
    mask[:, dead_column] = True
    for r, c in [(rows // 2 + 1, cols // 2 + 1), (12, cols - 14)]:
        frames[..., r, c] = 0
        mask[r, c] = True
    return mask


def write_bliss(path, bt: Beamtime, *, counters: bool = True, snake: bool = False) -> Path:
    """Write ``bt`` as an ID01 BLISS dataset: one scan ``N.1`` per angle, frames in the file.

    Per scan: ``instrument/mpx1x4/{image, beam_center_x/y, distance, x/y_pixel_size, pixel_mask}``,
    ``instrument/positioners/{eta, delta, nu, phi, nrj}``, ``instrument/{pix,piy}/value``,
    ``technique/dim0, dim1``; with ``counters`` also ``measurement/{mon1, ct_fluo}`` per point and
    ``instrument/machine/{current, refill_countdown}``. With ``snake`` the odd rows run backwards.
    """
    t = bt.truth
    n_eta, ny, nx, rows, cols = t.frames.shape
    xx, yy = np.meshgrid(t.x_um, t.y_um)
    order = np.arange(ny * nx).reshape(ny, nx)
    if snake:
        order[1::2] = order[1::2, ::-1]
    acq = order.ravel()  # raster index of each acquired point

    def points(values):
        return np.asarray(values).reshape((ny * nx,) + np.shape(values)[2:])[acq]

    path = Path(path)
    with h5py.File(path, "w") as f:
        for i in range(n_eta):
            scan = f.create_group(f"{i + 1}.1")
            inst = scan.create_group("instrument")
            inst.create_dataset("mpx1x4/image", data=points(t.frames[i]), chunks=(1, rows, cols))
            det = inst["mpx1x4"]
            det["beam_center_x"], det["beam_center_y"] = t.cch[1], t.cch[0]
            det["distance"] = t.distance_m
            det["x_pixel_size"] = det["y_pixel_size"] = t.pixel_m
            det["pixel_mask"] = bt.pixel_mask.astype(np.uint8)
            inst["pix/value"] = points(xx)
            inst["piy/value"] = points(yy)
            pos = inst.create_group("positioners")
            pos["eta"], pos["delta"], pos["nu"], pos["phi"], pos["nrj"] = t.eta[i], t.delta, t.nu, 0.0, t.energy_kev
            scan["technique/dim0"], scan["technique/dim1"] = nx, ny
            if counters:
                scan["measurement/mon1"] = points(bt.monitor[i])
                scan["measurement/ct_fluo"] = points(bt.fluorescence[i])
                inst["machine/current"] = bt.current[i]
                inst["machine/refill_countdown"] = bt.refill_countdown[i]
    return path


def map_errors(maps, truth: Truth) -> dict:
    """RMS strain (microstrain) and tilt-altitude (deg) errors of ``maps`` against the truth fields,
    over the crystal's interior where the maps have data; and how much of the crystal the mask misses.

    The truth is evaluated at the nominal positions (the middle angle's, the drift reference); strain
    and tilts follow docs/conventions.md, written out here (``truth_tilts``), with the maps' own mask.
    """
    mask = maps.mask.values
    crystal = truth.amplitude >= 0.2
    sel = mask & ndimage.binary_erosion(crystal)
    d_true = 2 * np.pi / np.linalg.norm(truth.q, axis=-1)
    d_mean = d_true[mask].mean()
    strain_true = (d_true - d_mean) / d_mean * 1e6
    altitude, _ = truth_tilts(truth.q, mask)
    strain_err = (maps.strain.values - strain_true)[sel]
    alt_err = (maps.tilt_altitude.values - altitude)[sel]
    return {"strain": float(np.sqrt(np.mean(strain_err ** 2))), "altitude": float(np.sqrt(np.mean(alt_err ** 2))),
            "missed": float((crystal & ~mask).sum() / crystal.sum()), "n": int(sel.sum())}
