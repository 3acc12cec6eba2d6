"""X-ray fluorescence forward model: the counts of an energy-dispersive detector.

Physics
-------
The nano-probe excites the characteristic line of an element of the particle
(e.g. Ni K-alpha at 7.47 keV for NMC622 or LMNO at 8.33 keV, above the Ni K
edge). The line is emitted isotropically by every atom in the beam path,
whatever the crystal's orientation, so the count rate is proportional to the
amount of material under the probe: the particle's thickness along the beam,
averaged over the Gaussian probe profile (the same probe as the diffraction,
FWHM ``probe_fwhm_um``), plus a small flat background (scattered beam in the
region of interest, detector noise)::

    rate(x, y) = xrf_rate * integral t(x', y') g(x - x', y - y') dx' dy' + xrf_background_rate

with ``t`` the projected thickness (um) and ``g`` the normalized probe, so that
a uniform crystal of thickness ``t`` gives ``xrf_rate * t`` counts/s. The
Bragg condition plays no part: eta enters only through the sample's drift
(applied by :class:`~.beamline.SimulatedBeamline`, as for the diffraction) and
through the grazing-beam shift of buried grains (``depth / tan(eta)``, the same
as :mod:`.sxdm_forward`).

Ignored (stated, not modelled): the beam footprint and self-absorption
factors, which change the rate smoothly with eta (a few per cent over a few
degrees) but not where the particle is; the detector's dead time; other lines
and the Compton/elastic scattering (folded into the flat background).
"""

from __future__ import annotations

import numpy as np

from .samples import BCDIParticle, SXDMSample
from .sxdm_forward import FWHM_TO_SIGMA, probe_window

__all__ = ["FluorescenceModel", "projected_thickness"]


def projected_thickness(sample, x_um, y_um) -> np.ndarray:
    """Thickness of material along the beam (um) at piezo points, positions at ``eta0``.

    Parameters
    ----------
    sample : SXDMSample or BCDIParticle
        For an SXDM sample, the sum over crystallites of
        ``Crystallite.fields()["thickness_um"]`` (the same columns the
        diffraction model uses); for a BCDI particle, its occupancy summed
        along the sample normal on its voxel grid, interpolated bilinearly.
    x_um, y_um : array_like
        Piezo coordinates (um), broadcast together.

    Returns
    -------
    ndarray
        Thickness (um), the broadcast shape of ``x_um, y_um``; 0 off the sample.
    """
    x, y = np.broadcast_arrays(np.asarray(x_um, float), np.asarray(y_um, float))
    if isinstance(sample, SXDMSample):
        total = np.zeros(x.shape)
        for cryst in sample.crystallites:
            total += cryst.fields(x, y)["thickness_um"]
        return total
    if isinstance(sample, BCDIParticle):
        return _particle_thickness(sample)(x, y)
    raise TypeError(f"sample must be an SXDMSample or BCDIParticle, got {type(sample).__name__}")


class FluorescenceModel:
    """Expected fluorescence counts of a sample under a Gaussian nano-probe.

    Parameters
    ----------
    sample : SXDMSample or BCDIParticle
    probe_fwhm_um : float
        Probe FWHM in the sample plane (um).
    rate : float
        Counts/s per um of thickness at the probe centre (``xrf_rate``).
    background_rate : float
        Flat background, counts/s (``xrf_background_rate``).
    grid_step_um : float, optional
        Step of the thickness grid the probe is integrated over; default
        ``min(probe_fwhm_um / 3, 0.03)`` as in :mod:`.sxdm_forward`.

    Examples
    --------
    >>> from braggscope.simulators.samples import make_sample
    >>> model = FluorescenceModel(make_sample("nmc622"), probe_fwhm_um=0.08, rate=5e4)
    >>> t = float(projected_thickness(model.sample, 50.0, 50.0))
    >>> bool(abs(model.expected(50.0, 50.0, 9.0, 0.01) - (5e4 * t + model.background_rate) * 0.01) < 1)
    True
    """

    def __init__(self, sample, *, probe_fwhm_um=0.08, rate=5.0e4, background_rate=500.0, grid_step_um=None):
        if not isinstance(sample, (SXDMSample, BCDIParticle)):
            raise TypeError(f"sample must be an SXDMSample or BCDIParticle, got {type(sample).__name__}")
        if not probe_fwhm_um > 0:
            raise ValueError(f"probe_fwhm_um must be > 0, got {probe_fwhm_um!r}")
        if not (rate >= 0 and background_rate >= 0):
            raise ValueError(f"rate and background_rate must be >= 0, got {rate!r}, {background_rate!r}")
        self.sample = sample
        self.probe_fwhm_um = float(probe_fwhm_um)
        self.sigma_probe = self.probe_fwhm_um * FWHM_TO_SIGMA
        self.rate = float(rate)
        self.background_rate = float(background_rate)
        self.step = float(grid_step_um) if grid_step_um else min(self.probe_fwhm_um / 3, 0.03)
        self._grids = [_ThicknessGrid(c, self.step) for c in _columns(sample)]

    def expected(self, x_um, y_um, eta, exposure_s) -> float:
        """Noise-free expected counts at one beam position (sample coordinates, drift removed).

        Parameters
        ----------
        x_um, y_um : float
            Beam position on the sample (um, positions at ``eta0``).
        eta : float
            Rocking angle (deg): only shifts buried grains (``depth / tan(eta)``).
        exposure_s : float
            Counting time (s), > 0.

        Returns
        -------
        float
            Counts (background included).
        """
        exposure_s = float(exposure_s)
        if not exposure_s > 0:
            raise ValueError(f"exposure_s must be > 0, got {exposure_s!r}")
        return (self.rate * self.probed_thickness(x_um, y_um, eta) + self.background_rate) * exposure_s

    def probed_thickness(self, x_um, y_um, eta) -> float:
        """Thickness (um) averaged over the probe profile at one beam position."""
        cot = 1.0 / np.tan(np.radians(max(abs(float(eta)), 1e-3)))
        total = 0.0
        for grid in self._grids:
            window = probe_window(grid, float(x_um) + grid.depth_um * cot, float(y_um), self.sigma_probe)
            if window is None:
                continue
            (j0, j1, i0, i1), py, px = window
            total += float(py @ grid.thickness[j0:j1, i0:i1] @ px)
        # the probe integrates to 1: sum of g over grid cells = 2 pi sigma^2 / step^2
        return total * self.step**2 / (2 * np.pi * self.sigma_probe**2)


# -- helpers ----------------------------------------------------------------------
class _Columns:
    """One thickness source: a callable ``thickness(x, y)``, its centre, extent and depth."""

    def __init__(self, thickness, center_um, extent_um, depth_um=0.0):
        self.thickness, self.center_um = thickness, center_um
        self.extent_um, self.depth_um = float(extent_um), float(depth_um)


def _columns(sample) -> list[_Columns]:
    if isinstance(sample, SXDMSample):
        return [_Columns(lambda x, y, c=c: c.fields(x, y)["thickness_um"], c.center_um, c.extent_um(),
                         c.depth_um) for c in sample.crystallites]
    ext = float(np.max(sample.extent_m())) * 1e6
    return [_Columns(_particle_thickness(sample), sample.center_um, ext)]


class _ThicknessGrid:
    """Projected thickness of one source sampled on a regular lateral grid (um)."""

    def __init__(self, source: _Columns, step_um: float):
        r = source.extent_um + step_um
        cx, cy = source.center_um
        self.x = cx + np.arange(-r, r + step_um / 2, step_um)
        self.y = cy + np.arange(-r, r + step_um / 2, step_um)
        self.step = step_um
        self.depth_um = source.depth_um
        xx, yy = np.meshgrid(self.x, self.y)
        self.thickness = np.asarray(source.thickness(xx, yy), dtype=float)


def _particle_thickness(particle: BCDIParticle):
    """Bilinear interpolator of a BCDI particle's occupancy summed along the sample normal (um)."""
    from scipy.interpolate import RegularGridInterpolator

    axes, rho, _ = particle.voxel_grid()
    column = rho.sum(axis=2) * particle.voxel_m * 1e6  # (nx, ny), um
    ax = [particle.center_um[0] + axes[0] * 1e-4, particle.center_um[1] + axes[1] * 1e-4]  # Angstrom -> um
    interp = RegularGridInterpolator(ax, column, bounds_error=False, fill_value=0.0)

    def thickness(x, y):
        x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        return interp(np.stack([x.ravel(), y.ravel()], axis=1)).reshape(x.shape)

    return thickness
