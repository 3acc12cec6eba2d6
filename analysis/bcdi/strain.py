"""BCDI post-processing: phase -> displacement -> strain, surface, resolution.

Sign (docs/conventions.md): the object is ``rho exp(i G.u)`` (physical sign, as
returned by :func:`braggscope.analysis.bcdi.phase_retrieval`), so
``u = phase / |G|`` and the strain along G is ``du/ds`` along the unit
vector of G (dimensionless; also reported in microstrain).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["StrainResult", "strain_analysis", "unwrap_phase", "strain_along", "edge_resolution"]


@dataclass
class StrainResult:
    """Post-processed BCDI reconstruction.

    Attributes
    ----------
    amplitude : ndarray (float32)
        ``|obj|`` normalised to its maximum.
    support : ndarray (bool)
        Object support (amplitude >= ``threshold``).
    phase : ndarray (float32)
        Unwrapped phase (rad), offset removed; NaN outside the support.
    displacement : ndarray (float32)
        Displacement along G (nm); NaN outside the support.
    strain : ndarray (float32)
        Strain along G (dimensionless); NaN outside the eroded support.
    voxel_nm : tuple of float
        Voxel size per array axis (nm).
    g_unit : ndarray (3,)
        Unit vector of G in the array axis order.
    q_bragg_norm : float
        ``|G|`` (1/Angstrom).
    resolution_nm : tuple of float
        Edge-width resolution estimate per axis (nm).
    """

    amplitude: np.ndarray
    support: np.ndarray
    phase: np.ndarray
    displacement: np.ndarray
    strain: np.ndarray
    voxel_nm: tuple
    g_unit: np.ndarray
    q_bragg_norm: float
    resolution_nm: tuple = ()
    attrs: dict = field(default_factory=dict)

    @property
    def microstrain(self) -> np.ndarray:
        """Strain in microstrain (1e-6)."""
        return self.strain * 1e6


def strain_analysis(obj, *, q_bragg_norm: float, voxel_nm, g_unit, threshold: float = 0.3,
                    erode: int = 1, support=None) -> StrainResult:
    """Displacement and strain along G from a complex object.

    Parameters
    ----------
    obj : ndarray, complex
        Object with the physical sign (phase = +G.u), orthonormal grid.
    q_bragg_norm : float
        ``|G|`` in 1/Angstrom (> 0).
    voxel_nm : float or sequence of float
        Voxel size per axis (nm).
    g_unit : sequence of float
        Direction of G in the array axis order (normalised here).
    threshold : float
        Support = amplitude >= threshold x max (ignored when ``support`` given).
    erode : int
        Voxels removed from the surface before the strain (gradients at the
        surface mix in the outside); 0 keeps all.
    support : ndarray of bool, optional

    Returns
    -------
    StrainResult
    """
    obj = np.asarray(obj)
    if not np.iscomplexobj(obj):
        raise ValueError("obj must be complex")
    if not float(q_bragg_norm) > 0:
        raise ValueError(f"q_bragg_norm must be > 0 (1/Angstrom), got {q_bragg_norm!r}")
    voxel = np.broadcast_to(np.asarray(voxel_nm, dtype=float), (obj.ndim,))
    if not np.all(voxel > 0):
        raise ValueError(f"voxel_nm must be > 0, got {voxel_nm!r}")
    g = np.asarray(g_unit, dtype=float)
    if g.shape != (obj.ndim,) or not np.linalg.norm(g) > 0:
        raise ValueError(f"g_unit must be a non-zero vector of length {obj.ndim}, got {g_unit!r}")
    g = g / np.linalg.norm(g)
    amp = np.abs(obj).astype(np.float32)
    amp /= amp.max()
    if support is None:
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        support = amp >= threshold
    support = np.asarray(support, bool)
    phase = unwrap_phase(obj, support)
    u_nm = phase / float(q_bragg_norm) / 10.0  # Angstrom -> nm
    strain = strain_along(u_nm, voxel, g)
    inner = support
    if erode:
        from scipy.ndimage import binary_erosion

        inner = binary_erosion(support, iterations=int(erode))
    phase_out = np.where(support, phase, np.nan).astype(np.float32)
    disp = np.where(support, u_nm, np.nan).astype(np.float32)
    strain = np.where(inner, strain, np.nan).astype(np.float32)
    res = edge_resolution(amp, support, voxel)
    return StrainResult(amplitude=amp, support=support, phase=phase_out, displacement=disp, strain=strain,
                        voxel_nm=tuple(float(v) for v in voxel), g_unit=g, q_bragg_norm=float(q_bragg_norm),
                        resolution_nm=res)


def unwrap_phase(obj, support):
    """Unwrapped phase (rad) inside ``support`` with its mean removed (0 outside).

    Uses ``skimage.restoration.unwrap_phase`` on a masked array.
    """
    from skimage.restoration import unwrap_phase as _unwrap

    wrapped = np.angle(obj * np.exp(-1j * np.angle(np.sum(obj[support]))))
    ma = np.ma.masked_array(wrapped, mask=~support)
    un = _unwrap(ma)
    out = np.asarray(np.ma.filled(un, 0.0), dtype=np.float64)
    out[support] -= out[support].mean()
    out[~support] = 0.0
    return out


def strain_along(u, voxel, g_unit):
    """``du/ds`` along ``g_unit``: ``sum_i g_i du/dx_i`` (same length units in u and voxel)."""
    grads = np.gradient(u, *[float(v) for v in voxel])
    if u.ndim == 1:
        grads = [grads]
    return sum(gi * d for gi, d in zip(g_unit, grads))


def edge_resolution(amplitude, support, voxel):
    """Resolution per axis (nm) from the width of the amplitude edges.

    Along each axis, the profile through the support's centre of mass is
    differentiated; the full width at half maximum of the steepest rising and
    falling edges (line-spread function), averaged, times the voxel size.
    """
    from scipy.ndimage import center_of_mass

    com = np.round(center_of_mass(support)).astype(int)
    out = []
    for ax in range(amplitude.ndim):
        idx = list(com)
        idx[ax] = slice(None)
        prof = amplitude[tuple(idx)].astype(float)
        fine = np.linspace(0, prof.size - 1, prof.size * 10)
        p = np.interp(fine, np.arange(prof.size), prof)
        d = np.gradient(p, fine)
        widths = []
        for sign in (1, -1):
            lsf = np.clip(sign * d, 0, None)
            if not lsf.max() > 0:
                continue
            k = np.argmax(lsf)
            half = lsf >= 0.5 * lsf[k]
            lo = k
            while lo > 0 and half[lo - 1]:
                lo -= 1
            hi = k
            while hi < half.size - 1 and half[hi + 1]:
                hi += 1
            widths.append(fine[hi] - fine[lo])
        out.append(float(np.mean(widths) * voxel[ax]) if widths else float("nan"))
    return tuple(out)
