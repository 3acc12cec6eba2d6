"""Figures of a BCDI reconstruction, matplotlib, safe without a display.

Uses ``matplotlib.figure.Figure`` directly (no pyplot state), like the SXDM
figures. Every figure takes the labelled result of
:func:`~braggscope.analysis.bcdi.result.to_dataset` (coordinates z, y, x in nm):

* :func:`figure_slices`: amplitude, phase, displacement and strain in the
  three orthogonal planes through the centre of the amplitude, nm axes, one
  colour bar per field, cropped to the support's bounding box plus a margin;
* :func:`figure_isosurface`: the amplitude iso-surface of the largest
  connected part of the thresholded amplitude (no stray noise voxels),
  coloured by the strain (microstrain);
* :func:`figure_diffraction`: measured against calculated intensity, central
  slices through the peak, log scale, one colour scale for both;
* :func:`figure_resolution`: the PRTF (and the FSC between runs when given)
  against ``|q|`` with their thresholds and the resolution each gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure

from braggscope.core.atomic import atomic_path

__all__ = ["figure_slices", "figure_isosurface", "figure_diffraction", "figure_resolution", "particle_box",
           "largest_component", "save_figure"]

_FIELDS = (("amplitude", "amplitude (normalised)", "viridis", False),
           ("phase", "phase (rad)", "PuOr_r", True),
           ("displacement", "displacement along G (nm)", "RdBu_r", True),
           ("strain", "strain along G (microstrain)", "RdBu_r", True))
_PLANES = (("z", ("y", "x")), ("y", ("z", "x")), ("x", ("z", "y")))


def particle_box(support, margin: int = 3) -> tuple:
    """Slices of the bounding box of ``support`` plus ``margin`` voxels (clipped to the array)."""
    idx = np.nonzero(np.asarray(support, bool))
    if not idx[0].size:
        return tuple(slice(None) for _ in np.shape(support))
    return tuple(slice(max(int(i.min()) - margin, 0), min(int(i.max()) + margin + 1, n))
                 for i, n in zip(idx, np.shape(support)))


def largest_component(mask) -> np.ndarray:
    """The largest 26-connected component of a boolean array."""
    from scipy.ndimage import label

    lab, n = label(np.asarray(mask, bool), structure=np.ones((3, 3, 3)))
    if n <= 1:
        return lab > 0
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def figure_slices(result, *, margin: int = 3, title: str | None = None) -> Figure:
    """Four fields x three central planes, cropped to the particle (see module docstring)."""
    support = np.asarray(result["support"].values, bool)
    if not support.any():
        raise ValueError("the result's support is empty: nothing to plot")
    box = particle_box(support, margin)
    ds = result.isel(z=box[0], y=box[1], x=box[2])
    amp = np.asarray(ds["amplitude"].values, dtype=float)
    sup = np.asarray(ds["support"].values, bool)
    w = np.where(sup, amp, 0.0)
    centre = [int(round(float(np.sum(w * g) / np.sum(w)))) for g in np.indices(w.shape)]
    fig = Figure(figsize=(12, 13), layout="constrained")
    axes = fig.subplots(4, 3)
    for row, (name, label, cmap, symmetric) in enumerate(_FIELDS):
        values = np.asarray(ds[name].values, dtype=float) * (1e6 if name == "strain" else 1.0)
        lim = _limits(values, sup, symmetric)
        im = None
        for col, (fixed, (vdim, hdim)) in enumerate(_PLANES):
            k = "zyx".index(fixed)
            img = np.take(values, centre[k], axis=k)
            h, v = ds[hdim].values, ds[vdim].values
            dh, dv = _step(h), _step(v)
            ax = axes[row, col]
            ax.set_facecolor("0.92")
            im = ax.imshow(img, origin="lower", cmap=cmap, vmin=lim[0], vmax=lim[1], interpolation="nearest",
                           extent=(h[0] - dh / 2, h[-1] + dh / 2, v[0] - dv / 2, v[-1] + dv / 2))
            ax.set_xlabel(f"{hdim} (nm)")
            ax.set_ylabel(f"{vdim} (nm)")
            if row == 0:
                ax.set_title(f"{fixed} = {float(ds[fixed].values[centre[k]]):.0f} nm")
        fig.colorbar(im, ax=axes[row, :], shrink=0.9, label=label)
    if title:
        fig.suptitle(title)
    return fig


def figure_isosurface(result, *, level: float = 0.3, vmax: float | None = None, title: str | None = None) -> Figure:
    """Iso-surface of the particle (largest connected part of ``amplitude >= level``), coloured by strain.

    Parameters
    ----------
    result : xarray.Dataset
        With ``amplitude`` (normalised), ``strain`` (dimensionless) and nm coordinates.
    level : float
        Iso-surface level, fraction of the maximum amplitude, in (0, 1).
    vmax : float, optional
        Colour limit (microstrain, symmetric); default the 99th percentile of |strain|.
    """
    from scipy.ndimage import distance_transform_edt
    from skimage.measure import marching_cubes

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    amp = np.asarray(result["amplitude"].values, dtype=float)
    amp = amp / amp.max()
    body = largest_component(amp >= level)
    box = particle_box(body, 2)
    amp, body = amp[box], body[box]
    strain = np.asarray(result["strain"].values, dtype=float)[box] * 1e6
    voxel = [_step(result[d].values) for d in ("z", "y", "x")]
    start = [float(result[d].values[b.start or 0]) for d, b in zip(("z", "y", "x"), box)]
    verts, faces, _, _ = marching_cubes(np.where(body, amp, 0.0), level=level, spacing=tuple(voxel))
    valid = np.isfinite(strain)
    if valid.any():  # colour each face by the nearest valid strain voxel
        idx = distance_transform_edt(~valid, return_distances=False, return_indices=True)
        strain = strain[tuple(idx)]
    else:
        strain = np.zeros_like(strain)
    ijk = np.clip(np.round(verts / np.asarray(voxel)).astype(int), 0, np.asarray(amp.shape) - 1)
    values = strain[tuple(ijk.T)][faces].mean(axis=1)
    if vmax is None:
        vmax = float(np.percentile(np.abs(values), 99)) if values.size else 1.0
    norm = colors.Normalize(-(vmax or 1.0), vmax or 1.0)
    from matplotlib import colormaps
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    cmap = colormaps["RdBu_r"]
    xyz = verts[:, ::-1] + np.asarray(start)[::-1]  # (x, y, z) in nm
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.add_subplot(projection="3d")
    ax.add_collection3d(Poly3DCollection(xyz[faces], facecolors=cmap(norm(values)), edgecolor="none"))
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    ax.set_xlim(lo[0], hi[0]), ax.set_ylim(lo[1], hi[1]), ax.set_zlim(lo[2], hi[2])
    ax.set_box_aspect(np.maximum(hi - lo, 1e-9))
    ax.set_xlabel("x (nm)"), ax.set_ylabel("y (nm)"), ax.set_zlabel("z (nm)")
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.6, label="strain along G (microstrain)")
    ax.set_title(title or f"amplitude iso-surface ({level:g}), coloured by strain")
    return fig


def figure_diffraction(measured, calculated, *, mask=None, title: str | None = None) -> Figure:
    """Measured (top) and calculated (bottom) intensity: three central slices through the peak, log scale.

    Grey: below the lowest colour (under one photon in both rows) or masked.
    """
    measured = np.asarray(measured, dtype=float)
    calculated = np.asarray(calculated, dtype=float)
    if measured.shape != calculated.shape or measured.ndim != 3:
        raise ValueError(f"measured {measured.shape} and calculated {calculated.shape} must be one 3-D shape")
    if mask is not None:
        measured = np.where(np.asarray(mask, bool), np.nan, measured)
    peak = np.unravel_index(int(np.nanargmax(measured)), measured.shape)
    positive = measured[np.isfinite(measured) & (measured > 0)]
    vmin = max(float(np.percentile(positive, 5)) if positive.size else 0.1, 0.5)
    vmax = max(float(np.nanmax(measured)), float(calculated.max()), vmin * 10)
    norm = colors.LogNorm(vmin=vmin, vmax=vmax)
    names = ("rocking", "row", "column")
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    axes = fig.subplots(2, 3)
    im = None
    for r, (label, data) in enumerate((("measured", measured), ("calculated", calculated))):
        for k in range(3):
            img = np.take(data, peak[k], axis=k)
            other = [names[a] for a in range(3) if a != k]
            ax = axes[r, k]
            ax.set_facecolor("0.85")
            im = ax.imshow(np.where(img >= vmin, img, np.nan), origin="lower", norm=norm, cmap="turbo",
                           aspect="auto", interpolation="nearest")
            ax.set_xlabel(f"{other[1]} (index)")
            ax.set_ylabel(f"{other[0]} (index)")
            ax.set_title(f"{label}, {names[k]} = {peak[k]}")
    fig.colorbar(im, ax=axes, shrink=0.8, label="intensity (photons)")
    if title:
        fig.suptitle(title)
    return fig


def figure_resolution(prtf, fsc=None, *, title: str | None = None) -> Figure:
    """PRTF (and FSC) against |q| (1/nm) with thresholds and the resolutions they give."""
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for curve, colour in ((prtf, "C0"), (fsc, "C1")):
        if curve is None:
            continue
        res = curve.summary()
        bound = "" if curve.reached.get("all", False) else " (data limit)"
        ax.plot(curve.q, curve.value, "-o", ms=3, color=colour,
                label=f"{curve.name}: {curve.resolution_nm:.1f} nm{bound}; z, y, x: "
                      + ", ".join(f"{r:.1f}" for r in res["resolution_zyx_nm"]) + " nm")
        ax.plot(curve.q, curve.threshold, "--", color=colour, lw=1,
                label=f"{curve.name} threshold ({curve.threshold_name})")
        if np.isfinite(curve.resolution_nm) and curve.reached.get("all", False):
            ax.axvline(np.pi / curve.resolution_nm, color=colour, lw=0.8, alpha=0.6)
    ax.set_xlabel("|q| (1/nm)")
    ax.set_ylabel("PRTF, FSC")
    top = max([float(np.nanmax(c.value)) for c in (prtf, fsc) if c is not None and np.isfinite(c.value).any()]
              + [1.1])
    ax.set_ylim(0, min(top * 1.05, 2.0))  # a PRTF above 1 where shells hold ~1 photon is shot noise
    ax.set_xlim(0, None)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=2, fontsize=8)
    ax.set_title(title or "resolution (half period = pi / q)")
    return fig


def save_figure(fig: Figure, path, *, dpi: int = 110) -> Path:
    """Save a figure as PNG atomically (complete or not at all)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight", pad_inches=0.08)  # nothing cut off
    return path


def _limits(values, support, symmetric):
    inside = values[support & np.isfinite(values)]
    if not inside.size:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    if symmetric:
        lim = float(np.percentile(np.abs(inside), 99)) or 1.0
        return -lim, lim
    return 0.0, float(np.nanmax(values)) or 1.0


def _step(c):
    c = np.asarray(c, dtype=float)
    return float(c[1] - c[0]) if c.size > 1 else 1.0
