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

import numpy as np

from braggscope.core.geometry import Geometry, sample_rotation

from .noise import PoissonPool
from .samples import SXDMSample

__all__ = ["SXDMForwardModel", "FWHM_TO_SIGMA"]

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


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
        self._buffer = np.zeros(self.shape, dtype=np.float64)
        self._last_key = None
        self._pending_key = None

    # -- public ---------------------------------------------------------------
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
        geo = self.geometry(energy_kev)
        bg = self.background_rate * exposure_s
        frame = self.pool.background(bg, self.shape)
        windows = self._add_signal(geo, x_um, y_um, eta, delta, nu, phi, exposure_s)
        if windows:
            ncols = self.shape[1]
            flat = np.unique(np.concatenate([
                (np.arange(r0, r1)[:, None] * ncols + np.arange(c0, c1)[None, :]).ravel()
                for r0, r1, c0, c1 in windows]))
            lam = self._buffer.ravel()[flat] + bg
            counts = self.rng.poisson(lam)
            frame.ravel()[flat] = np.minimum(counts, self.saturation).astype(np.uint32)
            for r0, r1, c0, c1 in windows:
                self._buffer[r0:r1, c0:c1] = 0.0
        return frame

    # -- helpers ----------------------------------------------------------------
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
        """Add expected peak counts into ``self._buffer``; returns the windows touched."""
        comps = self.components(x_um, y_um, eta)
        if not comps or self.peak_rate == 0:
            return []
        scale = self.peak_rate * exposure_s
        r_lab = sample_rotation(eta, phi)
        k = geo.k
        dq_pixel = k * self.pixel_m / self.distance_m
        nrows, ncols = self.shape
        windows = []
        self._pending_key = None
        for w, qc, s_r, s_t in comps:
            smax = max(s_r, s_t)
            kf = r_lab @ qc + np.array([k, 0.0, 0.0])
            if abs(np.linalg.norm(kf) - k) > self.n_sigma * smax:
                continue  # Ewald sphere too far from this peak
            try:
                row, col, _ = geo.pixel_of_q(qc, eta, delta=delta, nu=nu, phi=phi)
            except ValueError:
                continue
            half = int(np.ceil(self.n_sigma * smax / dq_pixel)) + 2
            r0, r1 = max(0, int(row) - half), min(nrows, int(row) + half + 2)
            c0, c1 = max(0, int(col) - half), min(ncols, int(col) + half + 2)
            if r1 <= r0 or c1 <= c0:
                continue
            dq = self._q_window(geo, eta, delta, nu, phi, r0, r1, c0, c1) - qc[:, None, None]
            n = qc / np.linalg.norm(qc)
            par = n[0] * dq[0] + n[1] * dq[1] + n[2] * dq[2]
            perp2 = np.maximum(dq[0] ** 2 + dq[1] ** 2 + dq[2] ** 2 - par**2, 0.0)
            self._buffer[r0:r1, c0:c1] += (scale * w) * np.exp(-0.5 * (par**2 / s_r**2 + perp2 / s_t**2))
            windows.append((r0, r1, c0, c1))
        self._last_key = self._pending_key if self._pending_key is not None else self._last_key
        return windows
