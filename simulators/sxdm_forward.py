"""SXDM forward model: the Maxipix frame for one nano-beam position.

Physics
-------
The focused beam is a 2D Gaussian probe (FWHM ``probe_fwhm_um``) in the sample
plane. Each crystal column under it (a lateral voxel of the crystallite,
material summed along the beam path: weight proportional to the local
thickness) scatters into a 3D Gaussian peak in reciprocal space centred on
its local Q (``|Q| = 2 pi / d``, direction rotated by the local tilt), with a
relative width ``sigma_radial`` along Q and an angular width
``sigma_angular_deg`` across it. The detector records that intensity at the
Q of each pixel (:meth:`braggscope.core.geometry.Geometry.q_frame`), i.e. where
the Ewald sphere cuts the peak. Crystallites below the surface are reached
by the grazing beam ``depth / tan(eta)`` downstream, so they appear shifted.

Speed
-----
The illuminated columns (within 3.5 probe sigmas) are aggregated into a few
weighted components by binning their Q on a grid of half the peak width
(the spread inside a bin is added to the component's width), each component
is evaluated only in a pixel window around where it meets the Ewald sphere
(``n_sigma`` widths), ``q_frame`` is cached per angle set, and the flat
background comes from a cached Poisson pool (:mod:`.noise`) with fresh draws
only where signal was added.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from braggscope.core.geometry import Geometry, detector_rotation, sample_rotation

from .noise import PoissonPool
from .samples import SXDMSample

__all__ = ["SXDMForwardModel", "FWHM_TO_SIGMA", "SparseFrame"]

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


class SparseFrame(NamedTuple):
    """A noisy frame as a flat background plus the pixels where signal was added.

    ``background`` is the expected background per pixel (counts; the frame's
    other pixels are Poisson draws of it), ``flat`` the sorted flat indices of
    the signal pixels and ``counts`` their Poisson counts (uint32, saturation
    applied). The simulated detector composes and compresses such frames from
    pre-drawn background chunks (:mod:`.frame_chunks`).
    """

    background: float
    flat: np.ndarray
    counts: np.ndarray


def probe_window(grid, xb, yb, sigma):
    """Gaussian probe weights on the cells of a column grid within 3.5 sigma of ``(xb, yb)``.

    ``grid`` has ``x``, ``y`` (cell centres, um) and ``step``. Returns
    ``((j0, j1, i0, i1), py, px)`` (rows ``j0:j1``, columns ``i0:i1`` and the
    unnormalised 1D profiles along y and x), or None when the probe misses the grid.
    """
    reach = 3.5 * sigma
    i0 = max(0, int(np.floor((xb - reach - grid.x[0]) / grid.step)))
    i1 = min(grid.x.size, int(np.ceil((xb + reach - grid.x[0]) / grid.step)) + 1)
    j0 = max(0, int(np.floor((yb - reach - grid.y[0]) / grid.step)))
    j1 = min(grid.y.size, int(np.ceil((yb + reach - grid.y[0]) / grid.step)) + 1)
    if i1 <= i0 or j1 <= j0:
        return None
    px = np.exp(-0.5 * ((grid.x[i0:i1] - xb) / sigma) ** 2)
    py = np.exp(-0.5 * ((grid.y[j0:j1] - yb) / sigma) ** 2)
    return (j0, j1, i0, i1), py, px


class _ColumnGrid:
    """One crystallite sampled on a regular lateral grid of columns."""

    def __init__(self, cryst, step_um: float, sigma_probe_um: float):
        r = cryst.extent_um() + step_um
        cx, cy = cryst.center_um
        self.x = cx + np.arange(-r, r + step_um / 2, step_um)
        self.y = cy + np.arange(-r, r + step_um / 2, step_um)
        self.step = step_um
        xx, yy = np.meshgrid(self.x, self.y)
        f = cryst.fields(xx, yy)
        # weight: a uniform crystal of thickness t under the probe sums to t
        norm = step_um**2 / (2 * np.pi * sigma_probe_um**2)
        self.weight = f["thickness_um"] * cryst.scale * norm
        self.q = np.moveaxis(cryst.q_local(xx, yy), 0, -1)  # (ny, nx, 3)
        self.q[~f["support"]] = 0.0
        self.cryst = cryst
        self.q_abs = float(2 * np.pi / cryst.d_spacing)
        self.sigma_r = cryst.sigma_radial * self.q_abs
        self.sigma_t = np.radians(cryst.sigma_angular_deg) * self.q_abs


class SXDMForwardModel:
    """Detector frames of an :class:`~.samples.SXDMSample` under a nano-beam.

    Parameters
    ----------
    sample : SXDMSample
    shape : (int, int)
        Detector shape (rows, cols).
    distance_m, pixel_m : float
        Detector distance and pixel size (m).
    cch : (float, float)
        Direct-beam pixel (row, col) at zero detector angles.
    probe_fwhm_um : float
        Probe FWHM in the sample plane (um), e.g. 0.05-0.12.
    peak_rate : float
        Counts per second in the brightest pixel for a perfect crystal of
        1 um thickness at the Bragg condition.
    background_rate : float
        Flat background, counts per pixel per second.
    saturation : int
        Counts at which pixels clip (Maxipix: 401540).
    grid_step_um : float, optional
        Column grid step (um); default ``min(probe_fwhm_um / 3, 0.03)``.
    n_sigma : float
        Extent of the evaluation windows, in peak widths.
    seed : int or None
        Seed of the noise generator.
    """

    def __init__(self, sample: SXDMSample, *, shape=(512, 512), distance_m=0.5, pixel_m=55e-6,
                 cch=(256.0, 256.0), probe_fwhm_um=0.08, peak_rate=2.0e5, background_rate=100.0,
                 saturation=401540, grid_step_um=None, n_sigma=4.0, seed=None, q_cache_size=8):
        if not isinstance(sample, SXDMSample):
            raise TypeError(f"sample must be an SXDMSample, got {type(sample).__name__}")
        if not probe_fwhm_um > 0:
            raise ValueError(f"probe_fwhm_um must be > 0, got {probe_fwhm_um!r}")
        if not (peak_rate >= 0 and background_rate >= 0):
            raise ValueError("peak_rate and background_rate must be >= 0")
        self.sample = sample
        self.shape = (int(shape[0]), int(shape[1]))
        self.distance_m = float(distance_m)
        self.pixel_m = float(pixel_m)
        self.cch = (float(cch[0]), float(cch[1]))
        self.probe_fwhm_um = float(probe_fwhm_um)
        self.sigma_probe = self.probe_fwhm_um * FWHM_TO_SIGMA
        self.peak_rate = float(peak_rate)
        self.background_rate = float(background_rate)
        self.saturation = int(saturation)
        self.n_sigma = float(n_sigma)
        step = float(grid_step_um) if grid_step_um else min(self.probe_fwhm_um / 3, 0.03)
        self.columns = [_ColumnGrid(c, step, self.sigma_probe) for c in sample.crystallites]
        self.rng = np.random.default_rng(seed)
        self.pool = PoissonPool(self.rng)
        self._q_cache: OrderedDict = OrderedDict()
        self._q_cache_size = int(q_cache_size)
        self._rot_cache: OrderedDict = OrderedDict()
        self._buffer = np.zeros(self.shape, dtype=np.float64)
        self._last_key = None
        self._pending_key = None

    # -- public ---------------------------------------------------------------
    def columns_of(self, sample: SXDMSample) -> list:
        """The column grids of ``sample`` on this model's grid step (for :meth:`use_columns`)."""
        step = self.columns[0].step if self.columns else min(self.probe_fwhm_um / 3, 0.03)
        return [_ColumnGrid(c, step, self.sigma_probe) for c in sample.crystallites]

    def use_columns(self, sample: SXDMSample, columns: list) -> None:
        """Render ``sample`` from now on, from its column grids (:meth:`columns_of`)."""
        self.sample = sample
        self.columns = columns

    def geometry(self, energy_kev: float) -> Geometry:
        """The detector geometry at an energy (keV)."""
        return Geometry(float(energy_kev), self.distance_m, self.pixel_m, self.cch)

    def components(self, x_um, y_um, eta):
        """Weighted peak components illuminated at a beam position.

        Parameters
        ----------
        x_um, y_um : float
            Beam position in sample coordinates (um, eccentricity removed).
        eta : float
            Rocking angle (deg), for the depth shift of buried crystallites.

        Returns
        -------
        list of (weight, q (3,), sigma_radial_abs, sigma_tangential_abs)
            Weights in um of crystal thickness; Q and widths in 1/Angstrom.
        """
        out = []
        cot = 1.0 / np.tan(np.radians(max(abs(float(eta)), 1e-3)))
        for grid in self.columns:
            window = probe_window(grid, float(x_um) + grid.cryst.depth_um * cot, float(y_um), self.sigma_probe)
            if window is None:
                continue
            (j0, j1, i0, i1), py, px = window
            w = (py[:, None] * px[None, :]) * grid.weight[j0:j1, i0:i1]
            keep = w > 1e-6 * max(float(w.max()), 1e-300)
            if not keep.any() or w.max() <= 0:
                continue
            w = w[keep]
            q = grid.q[j0:j1, i0:i1][keep]
            out.extend(self._aggregate(w, q, grid.sigma_r, grid.sigma_t))
        return out

    def expected_frame(self, x_um, y_um, eta, delta, nu=0.0, phi=0.0, energy_kev=8.33, exposure_s=0.01):
        """Noise-free expected counts of a whole frame (float64, background included)."""
        geo = self.geometry(energy_kev)
        windows = self._add_signal(geo, x_um, y_um, eta, delta, nu, phi, exposure_s)
        frame = self._buffer.copy() + self.background_rate * exposure_s
        for r0, r1, c0, c1 in windows:
            self._buffer[r0:r1, c0:c1] = 0.0
        return frame

    def render(self, x_um, y_um, eta, delta, nu=0.0, phi=0.0, energy_kev=8.33, exposure_s=0.01):
        """A noisy uint32 frame (Poisson counts, clipped at ``saturation``).

        Not thread-safe on its own; :class:`~.beamline.SimulatedBeamline` locks.
        """
        if not exposure_s > 0:
            raise ValueError(f"exposure_s must be > 0, got {exposure_s!r}")
        frame = self.pool.background(self.background_rate * exposure_s, self.shape)
        sparse = self._signal(x_um, y_um, eta, delta, nu, phi, energy_kev, exposure_s)
        frame.ravel()[sparse.flat] = sparse.counts
        return frame

    def render_sparse(self, x_um, y_um, eta, delta, nu=0.0, phi=0.0, energy_kev=8.33, exposure_s=0.01):
        """The frame of :meth:`render` as a :class:`SparseFrame` (no full-frame array, no background draw).

        The signal pixels are drawn exactly as in :meth:`render`; the caller draws
        the background (Poisson of ``background``) of every other pixel.
        """
        if not exposure_s > 0:
            raise ValueError(f"exposure_s must be > 0, got {exposure_s!r}")
        return self._signal(x_um, y_um, eta, delta, nu, phi, energy_kev, exposure_s)

    # -- helpers ----------------------------------------------------------------
    def _signal(self, x_um, y_um, eta, delta, nu, phi, energy_kev, exposure_s) -> SparseFrame:
        """Poisson counts (signal + background) of the pixels the peaks reach."""
        bg = self.background_rate * exposure_s
        windows = self._add_signal(self.geometry(energy_kev), x_um, y_um, eta, delta, nu, phi, exposure_s)
        if not windows:
            return SparseFrame(bg, np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.uint32))
        ncols = self.shape[1]
        flat = np.concatenate([(np.arange(r0, r1)[:, None] * ncols + np.arange(c0, c1)[None, :]).ravel()
                               for r0, r1, c0, c1 in windows])
        if len(windows) > 1:  # windows may overlap: each pixel once, in order
            flat = np.unique(flat)
        counts = self.rng.poisson(self._buffer.ravel()[flat] + bg)
        for r0, r1, c0, c1 in windows:
            self._buffer[r0:r1, c0:c1] = 0.0
        return SparseFrame(bg, flat, np.minimum(counts, self.saturation).astype(np.uint32))

    def _rotations(self, eta, delta, nu, phi):
        """Sample and detector rotations of an angle set (cached: rasters repeat it every frame)."""
        key = tuple(round(float(v), 9) for v in (eta, delta, nu, phi))
        cached = self._rot_cache.get(key)
        if cached is None:
            cached = (sample_rotation(eta, phi), detector_rotation(delta, nu))
            self._rot_cache[key] = cached
            while len(self._rot_cache) > self._q_cache_size:
                self._rot_cache.popitem(last=False)
        return cached

    def _pixels(self, geo, comps, eta, delta, nu, phi):
        """Detector pixel (row, col) of every component's Q and whether its peak reaches the Ewald sphere.

        :meth:`Geometry.pixel_of_q` for all components at once (the same formulas).
        """
        q = np.array([c[1] for c in comps], dtype=float)
        smax = np.array([max(c[2], c[3]) for c in comps])
        r_lab, r_det = self._rotations(eta, delta, nu, phi)
        k = geo.k
        kf = q @ r_lab.T
        kf[:, 0] += k
        near = np.abs(np.linalg.norm(kf, axis=1) - k) <= self.n_sigma * smax
        v = kf @ r_det  # r_det.T @ kf of each component: detector frame at zero angles
        ahead = v[:, 0] > 0
        scale = float(geo.distance_m) / np.where(ahead, v[:, 0], 1.0)
        pr, pc = geo.pixel_size
        rows = geo.cch[0] - v[:, 2] * scale / pr
        cols = geo.cch[1] + v[:, 1] * scale / pc
        return rows, cols, near & ahead

    @staticmethod
    def _aggregate(w, q, sigma_r, sigma_t):
        """Bin column Qs on a grid of half the smallest width; weighted means."""
        bin_size = 0.5 * min(sigma_r, sigma_t)
        keys = np.floor(q / bin_size).astype(np.int64)
        keys -= keys.min(axis=0)
        span = keys.max(axis=0) + 1
        flat = (keys[:, 0] * span[1] + keys[:, 1]) * span[2] + keys[:, 2]
        _, inv = np.unique(flat, return_inverse=True)
        wsum = np.bincount(inv, weights=w)
        qm = np.stack([np.bincount(inv, weights=w * q[:, k]) for k in range(3)], axis=1) / wsum[:, None]
        spread = np.bincount(inv, weights=w * np.sum((q - qm[inv]) ** 2, axis=1)) / wsum / 3.0
        comps = []
        for k in range(wsum.size):
            comps.append((float(wsum[k]), qm[k], float(np.sqrt(sigma_r**2 + spread[k])),
                          float(np.sqrt(sigma_t**2 + spread[k]))))
        return comps

    def _q_frame(self, geo: Geometry, eta, delta, nu, phi) -> np.ndarray:
        """The whole cached q_frame for an angle set (computed on first call)."""
        key = self._key(geo, eta, delta, nu, phi)
        q = self._q_cache.get(key)
        if q is None:
            q = geo.q_frame(self.shape, eta, delta, nu, phi)
            self._q_cache[key] = q
            while len(self._q_cache) > self._q_cache_size:
                self._q_cache.popitem(last=False)
        else:
            self._q_cache.move_to_end(key)
        return q

    def _q_window(self, geo: Geometry, eta, delta, nu, phi, r0, r1, c0, c1) -> np.ndarray:
        """Pixel Qs of a window: from the cached frame when the angle set repeats
        (rasters), computed for the window alone on the first frame of an angle set
        (rocking scans change eta every frame)."""
        key = self._key(geo, eta, delta, nu, phi)
        if key in self._q_cache or key == self._last_key:
            return self._q_frame(geo, eta, delta, nu, phi)[:, r0:r1, c0:c1]
        self._pending_key = key
        rows = np.arange(r0, r1, dtype=float)[:, None]
        cols = np.arange(c0, c1, dtype=float)[None, :]
        return geo.q_pixels(rows, cols, eta, delta, nu, phi)

    @staticmethod
    def _key(geo, eta, delta, nu, phi):
        return tuple(round(float(v), 9) for v in (geo.energy_kev, eta, delta, nu, phi))

    def _add_signal(self, geo, x_um, y_um, eta, delta, nu, phi, exposure_s):
        """Add expected peak counts into ``self._buffer``; returns the windows touched.

        Each component is evaluated in a window of ``n_sigma`` widths around the pixel
        where it meets the Ewald sphere. Windows that overlap (the usual case: the
        components of one crystal lie within a few widths of each other) are
        evaluated together on their bounding box, one array operation for all.
        """
        comps = self.components(x_um, y_um, eta)
        if not comps or self.peak_rate == 0:
            return []
        self._pending_key = None
        boxes, kept = self._windows(geo, comps, eta, delta, nu, phi)
        if not kept:
            return []
        scale = self.peak_rate * exposure_s
        r0, c0 = boxes[:, 0].min(), boxes[:, 2].min()
        r1, c1 = boxes[:, 1].max(), boxes[:, 3].max()
        area = np.prod(boxes[:, [1, 3]] - boxes[:, [0, 2]], axis=1).sum()
        if len(kept) == 1 or (r1 - r0) * (c1 - c0) <= 2 * area:
            groups = [((int(r0), int(r1), int(c0), int(c1)), kept)]
        else:
            groups = [(tuple(int(v) for v in box), [k]) for box, k in zip(boxes, kept)]
        for (r0, r1, c0, c1), members in groups:
            q = self._q_window(geo, eta, delta, nu, phi, r0, r1, c0, c1)  # (3, h, w)
            self._buffer[r0:r1, c0:c1] += _peaks(q, [comps[k] for k in members], scale)
        self._last_key = self._pending_key if self._pending_key is not None else self._last_key
        return [box for box, _ in groups]

    def _windows(self, geo, comps, eta, delta, nu, phi):
        """Pixel windows ``(n, 4)`` (row0, row1, col0, col1) of the components that reach the detector,
        and their indices in ``comps``."""
        rows, cols, reach = self._pixels(geo, comps, eta, delta, nu, phi)
        dq_pixel = geo.k * self.pixel_m / self.distance_m
        nrows, ncols = self.shape
        boxes, kept = [], []
        for k, ((_, _, s_r, s_t), row, col, ok) in enumerate(zip(comps, rows, cols, reach)):
            if not ok:
                continue  # Ewald sphere too far from this peak, or scattered away from the detector
            half = int(np.ceil(self.n_sigma * max(s_r, s_t) / dq_pixel)) + 2
            r0, r1 = max(0, int(row) - half), min(nrows, int(row) + half + 2)
            c0, c1 = max(0, int(col) - half), min(ncols, int(col) + half + 2)
            if r1 > r0 and c1 > c0:
                boxes.append((r0, r1, c0, c1))
                kept.append(k)
        return np.array(boxes, dtype=np.int64).reshape(-1, 4), kept


def _peaks(q, comps, scale):
    """Sum of the components' Gaussian peaks (counts) at pixel Qs ``q`` (3, h, w), 1/Angstrom."""
    w = np.array([c[0] for c in comps])[:, None, None]
    qc = np.array([c[1] for c in comps])  # (n, 3)
    s_r = np.array([c[2] for c in comps])[:, None, None]
    s_t = np.array([c[3] for c in comps])[:, None, None]
    n = qc / np.linalg.norm(qc, axis=1)[:, None]
    dq = q[None] - qc[:, :, None, None]  # (n, 3, h, w)
    par = np.einsum("nk,nkij->nij", n, dq)
    perp2 = np.maximum(np.einsum("nkij,nkij->nij", dq, dq) - par**2, 0.0)
    return (scale * w * np.exp(-0.5 * (par**2 / s_r**2 + perp2 / s_t**2))).sum(axis=0)
