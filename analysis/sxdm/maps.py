"""SXDM maps from per-pixel centre-of-mass sums: d-spacing, strain, tilts.

Definitions from docs/conventions.md ("SXDM maps"): mask = integrated
intensity >= threshold x maximum; ``d = 2 pi / |Q_local|``; strain
``(d - d_mean) / d_mean * 1e6`` with ``d_mean`` the unweighted mean over the
mask; ``Q_bar`` the normalised mean of the unit vectors; tilt altitude and
azimuth in the general ``Q_bar`` frame.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["derive_maps", "derive_strain_tilt", "mean_direction", "tilt_angles", "normalisation_attrs"]


def derive_maps(sums, plan) -> xr.Dataset:
    """Build the maps Dataset from per-pixel sums (see :func:`reduce_stack`)."""
    opt = plan.options
    intensity = sums["intensity"]
    s0 = sums["s0"]
    # frames left out (no beam, shifted in from outside the map) are NaN in the per-angle integrals
    coverage = np.isfinite(sums["eta_intensity"]).mean(axis=0)
    covered = coverage >= opt.min_coverage
    peak = np.nanmax(np.where(covered, intensity, np.nan)) if covered.any() else 0.0
    mask = covered & (intensity >= opt.threshold * peak) & (s0 > 0) & (intensity > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        com = sums["s1"] / s0[..., None]
        var = sums["s2"][..., :3] / s0[..., None] - com ** 2
    q = com + plan.q_ref
    q[~mask] = np.nan
    if "gauss" in sums and sums["gauss"] is not None:
        g = sums["gauss"]
    else:
        g = None
    d, strain, alt, azi = derive_strain_tilt(q, mask)
    sigma = np.sqrt(np.maximum(var, 0))
    sigma[~mask] = np.nan
    dims = ("y", "x")
    unit = "1/Angstrom"
    data = {
        "intensity": (dims, intensity, {"units": "counts", "long_name": "integrated intensity, background subtracted"}),
        "mask": (dims, mask, {"long_name": f"intensity >= {opt.threshold} x maximum"}),
        "qx": (dims, q[..., 0], {"units": unit}),
        "qy": (dims, q[..., 1], {"units": unit}),
        "qz": (dims, q[..., 2], {"units": unit}),
        "q_norm": (dims, np.linalg.norm(q, axis=-1), {"units": unit}),
        "d_spacing": (dims, d, {"units": "Angstrom"}),
        "strain": (dims, strain, {"units": "microstrain", "long_name": "(d - d_mean) / d_mean * 1e6"}),
        "tilt_altitude": (dims, alt, {"units": "deg"}),
        "tilt_azimuth": (dims, azi, {"units": "deg"}),
        "background": (dims, sums["background"], {"units": "counts/voxel"}),
        "sigma_qx": (dims, sigma[..., 0], {"units": unit, "long_name": "second-moment width"}),
        "sigma_qy": (dims, sigma[..., 1], {"units": unit, "long_name": "second-moment width"}),
        "sigma_qz": (dims, sigma[..., 2], {"units": unit, "long_name": "second-moment width"}),
        "eta_intensity": (("eta", "y", "x"), sums["eta_intensity"],
                          {"units": "counts", "long_name": "integrated intensity per angle, NaN where not measured"}),
        "coverage": (dims, coverage, {"long_name": "fraction of the rocking angles with data"}),
    }
    if g is not None:
        for ax, name in enumerate("xyz"):
            c = np.where(mask, g[..., ax], np.nan)
            fw = np.where(mask, g[..., 3 + ax], np.nan)
            data[f"gauss_q{name}"] = (dims, c, {"units": unit, "long_name": "Gaussian centre"})
            data[f"fwhm_q{name}"] = (dims, fw, {"units": unit, "long_name": "Gaussian FWHM"})
    geo = plan.geometry
    attrs = {
        **opt.attrs(), "detector_roi": list(plan.det_roi),
        "energy_kev": float(geo.energy_kev), "distance_m": float(geo.distance_m),
        "pixel_m": list(geo.pixel_size), "cch": [float(c) for c in geo.cch],
        "d_mean": float(np.nanmean(d)) if mask.any() else float("nan"),
        "q_bar": [float(v) for v in mean_direction(q, mask)] if mask.any() else [float("nan")] * 3,
        "units": "Q 1/Angstrom (sample frame), d Angstrom, strain microstrain, angles deg, x/y um",
        **normalisation_attrs(plan.normalisation),
    }
    ds = xr.Dataset(data, coords={"y": ("y", plan.y, {"units": "um"}), "x": ("x", plan.x, {"units": "um"}),
                                  "eta": ("eta", plan.eta, {"units": "deg"})}, attrs=attrs)
    return ds


def normalisation_attrs(info: dict) -> dict:
    """The monitor normalisation as attributes of the maps: ``normalisation`` says which, or ``"none"``."""
    if not info:
        return {"normalisation": "none"}
    name = info.get("monitor_name") or "monitor"
    return {"normalisation": f"counts x monitor_reference / {name}", "monitor": name,
            **{k: v for k, v in info.items() if k != "monitor_name"}}


def derive_strain_tilt(q, mask):
    """d-spacing (A), strain (microstrain) and tilts (deg) from ``Q_local`` maps.

    Parameters
    ----------
    q : ndarray, shape (ny, nx, 3)
        ``Q_local`` in 1/Angstrom (sample frame).
    mask : ndarray of bool, shape (ny, nx)
    """
    qn = np.linalg.norm(q, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 2.0 * np.pi / qn
    d = np.where(mask, d, np.nan)
    d_mean = np.nanmean(d) if mask.any() else np.nan
    strain = (d - d_mean) / d_mean * 1e6
    alt, azi = tilt_angles(q, mask)
    return d, strain, alt, azi


def mean_direction(q, mask):
    """``Q_bar``: the normalised unweighted mean of the unit vectors ``q[mask]`` (shape (..., 3))."""
    u = q[mask] / np.linalg.norm(q[mask], axis=-1)[:, None]
    m = u.mean(axis=0)
    return m / np.linalg.norm(m)


def tilt_angles(q, mask):
    """Tilt altitude and azimuth (degrees) of ``Q_local`` about the mean direction.

    ``Q_bar`` is the normalised unweighted mean of the unit vectors over the
    mask; altitude is the angle between ``Q_local`` and ``Q_bar``; azimuth is
    the angle of the component perpendicular to ``Q_bar`` measured from the
    sample +x axis projected on the plane normal to ``Q_bar``, positive
    towards ``Q_bar x x_proj``, in (-180, 180] (docs/conventions.md).

    Parameters
    ----------
    q : ndarray, shape (..., 3)
    mask : ndarray of bool, shape (...)

    Returns
    -------
    altitude, azimuth : ndarray, shape (...), NaN outside the mask.
    """
    q = np.asarray(q, dtype=float)
    mask = np.asarray(mask, dtype=bool)
    alt = np.full(mask.shape, np.nan)
    azi = np.full(mask.shape, np.nan)
    if not mask.any():
        return alt, azi
    qbar = mean_direction(q, mask)
    x = np.array([1.0, 0.0, 0.0])
    x_proj = x - x.dot(qbar) * qbar
    if np.linalg.norm(x_proj) < 1e-9:  # Q_bar along x: fall back on +y
        y = np.array([0.0, 1.0, 0.0])
        x_proj = y - y.dot(qbar) * qbar
    e1 = x_proj / np.linalg.norm(x_proj)
    e2 = np.cross(qbar, e1)
    u = q[mask] / np.linalg.norm(q[mask], axis=-1)[:, None]
    c = np.clip(u @ qbar, -1.0, 1.0)
    perp = np.linalg.norm(np.cross(u, qbar), axis=-1)
    alt[mask] = np.degrees(np.arctan2(perp, c))
    a = np.degrees(np.arctan2(u @ e2, u @ e1))
    a = np.where(a <= -180.0, a + 360.0, a)
    azi[mask] = a
    return alt, azi
