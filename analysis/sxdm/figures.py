"""Figures of SXDM maps (paper Figures 1-6), matplotlib, safe without a display.

Uses ``matplotlib.figure.Figure`` directly (no pyplot state), so it works
under the Agg backend, in threads and in tests.

* intensity, d-spacing, strain and |strain| maps with piezo axes in um;
* tilt altitude and azimuth maps;
* the mosaicity map: HSV with hue = azimuth, saturation = altitude / cap
  (a fixed ``tilt_cap`` makes maps comparable), value = 1, and a colour-wheel
  legend; the pole plot (angle = azimuth, radius = altitude);
* one map pixel's Bragg peak as Qx/Qy/Qz slices (from ``grid_pixel_peak``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colors, ticker
from matplotlib.figure import Figure

from braggscope.core.atomic import atomic_path

__all__ = ["MAP_STYLES", "colour_limits", "mosaicity_rgb", "plot_map", "figure_maps", "figure_mosaicity",
           "figure_peak_slices", "save_figures"]

_MAPS = (
    ("intensity", "integrated intensity (counts)", "viridis"),
    ("d_spacing", "d-spacing (Å)", "viridis"),
    ("strain", "strain (microstrain)", "RdBu_r"),
    ("abs_strain", "|strain| (microstrain)", "magma"),
    ("tilt_altitude", "tilt altitude (deg)", "cividis"),
    ("tilt_azimuth", "tilt azimuth (deg)", "hsv"),
)


#: Label (with units) and colour map of each map variable: the one style of the offline and the live figures.
MAP_STYLES = {name: (label, cmap) for name, label, cmap in _MAPS}


def colour_limits(name, values):
    """The colour scale of map ``name``: ``(vmin, vmax)``, or ``(None, None)`` for the data's range.

    Strain: symmetric about zero at the 99th percentile of ``|strain|``;
    tilt azimuth: -180 to 180 degrees.
    """
    v = np.asarray(values, dtype=float)
    if name == "strain" and np.isfinite(v).any():
        lim = float(np.nanpercentile(np.abs(v), 99)) or 1.0
        return -lim, lim
    if name == "tilt_azimuth":
        return -180, 180
    return None, None


def _extent(maps):
    x = np.asarray(maps.x.values, dtype=float)
    y = np.asarray(maps.y.values, dtype=float)
    dx = (x[1] - x[0]) if x.size > 1 else 1.0
    dy = (y[1] - y[0]) if y.size > 1 else 1.0
    return (x[0] - dx / 2, x[-1] + dx / 2, y[-1] + dy / 2, y[0] - dy / 2)


def _values(maps, name):
    if name == "abs_strain":
        return np.abs(np.asarray(maps["strain"].values, dtype=float))
    return np.asarray(maps[name].values, dtype=float)


def plot_map(ax, maps, name, *, label=None, cmap="viridis", vmin=None, vmax=None):
    """Draw one map variable on ``ax`` with axes in um and a colour bar."""
    v = _values(maps, name)
    auto_min, auto_max = colour_limits(name, v)
    if name == "tilt_azimuth" or (vmin is None and auto_min is not None):
        vmin, vmax = auto_min, auto_max
    im = ax.imshow(v, extent=_extent(maps), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_title(label or name)
    # no offset: d-spacing reads 2.0006 A, not "+2" and 0.0006
    ax.figure.colorbar(im, ax=ax, shrink=0.8, format=ticker.ScalarFormatter(useOffset=False))
    return im


def figure_maps(maps) -> Figure:
    """Six panels: intensity, d-spacing, strain, |strain|, tilt altitude, tilt azimuth."""
    fig = Figure(figsize=(13, 7.5), layout="constrained")
    axes = fig.subplots(2, 3)
    for ax, (name, label, cmap) in zip(axes.ravel(), _MAPS):
        plot_map(ax, maps, name, label=label, cmap=cmap)
    return fig


def mosaicity_rgb(maps, *, tilt_cap=None, scale_intensity=False) -> np.ndarray:
    """RGBA image (ny, nx, 4): hue = azimuth, saturation = altitude / cap, value = 1.

    ``tilt_cap`` (deg) fixes the saturation scale (default: the map's maximum
    altitude); pixels outside the mask are transparent. With
    ``scale_intensity`` the value follows the normalised intensity.
    """
    alt = np.asarray(maps.tilt_altitude.values, dtype=float)
    azi = np.asarray(maps.tilt_azimuth.values, dtype=float)
    mask = np.asarray(maps.mask.values, dtype=bool) & np.isfinite(alt) & np.isfinite(azi)
    cap = float(tilt_cap) if tilt_cap is not None else (float(np.nanmax(alt[mask])) if mask.any() else 1.0)
    if not cap > 0:
        raise ValueError(f"tilt_cap must be > 0 deg, got {tilt_cap!r}")
    hsv = np.zeros(alt.shape + (3,))
    hsv[..., 0] = np.where(mask, (azi + 180.0) / 360.0, 0.0) % 1.0
    hsv[..., 1] = np.where(mask, np.clip(alt / cap, 0, 1), 0.0)
    hsv[..., 2] = 1.0
    if scale_intensity:
        inten = np.asarray(maps.intensity.values, dtype=float)
        hsv[..., 2] = np.clip(np.where(mask, inten / np.nanmax(inten[mask]), 0), 0, 1) if mask.any() else 0
    rgba = np.ones(alt.shape + (4,))
    rgba[..., :3] = colors.hsv_to_rgb(hsv)
    rgba[..., 3] = mask.astype(float)
    return rgba


def figure_mosaicity(maps, *, tilt_cap=None) -> Figure:
    """Mosaicity map with a colour-wheel legend, and the pole plot."""
    alt = np.asarray(maps.tilt_altitude.values, dtype=float)
    mask = np.asarray(maps.mask.values, dtype=bool) & np.isfinite(alt)
    cap = float(tilt_cap) if tilt_cap is not None else (float(np.nanmax(alt[mask])) if mask.any() else 1.0)
    fig = Figure(figsize=(12, 5), layout="constrained")
    ax = fig.add_subplot(1, 3, 1)
    ax.imshow(mosaicity_rgb(maps, tilt_cap=cap), extent=_extent(maps), interpolation="nearest")
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_title("mosaicity (hue: azimuth, saturation: altitude)")
    wheel = fig.add_subplot(1, 3, 2, projection="polar")
    theta = np.linspace(-np.pi, np.pi, 181)
    r = np.linspace(0, cap, 30)
    tt, rr = np.meshgrid(theta, r)
    hsv = np.stack([(np.degrees(tt) + 180) / 360 % 1.0, rr / cap, np.ones_like(tt)], axis=-1)
    wheel.pcolormesh(tt, rr, colors.hsv_to_rgb(hsv[:-1, :-1]), shading="flat")
    wheel.set_title(f"colour wheel (radius: altitude, cap {cap:.3g}°)")
    wheel.set_ylim(0, cap)
    pole = fig.add_subplot(1, 3, 3, projection="polar")
    azi = np.asarray(maps.tilt_azimuth.values, dtype=float)
    rgba = mosaicity_rgb(maps, tilt_cap=cap)
    pole.scatter(np.radians(azi[mask]), alt[mask], c=rgba[mask][:, :3], s=12, edgecolors="k", linewidths=0.2)
    pole.set_title(f"pole plot (max tilt {np.nanmax(alt[mask]) if mask.any() else float('nan'):.3g}°)")
    pole.set_ylim(0, max(cap, float(np.nanmax(alt[mask])) if mask.any() else cap))
    return fig


def figure_peak_slices(grid) -> Figure:
    """Central Qx, Qy, Qz slices of one pixel's gridded Bragg peak (``grid_pixel_peak``)."""
    v = np.asarray(grid.values, dtype=float)
    if v.ndim != 3:
        raise ValueError(f"grid must be 3-D (qx, qy, qz), got shape {v.shape}")
    i0, i1, i2 = np.unravel_index(np.nanargmax(np.nan_to_num(v, nan=-np.inf)), v.shape)
    qx, qy, qz = (np.asarray(grid.coords[c].values) for c in ("qx", "qy", "qz"))
    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = ((v[i0, :, :].T, qy, qz, "Qy", "Qz", f"Qx = {qx[i0]:.4f}"),
              (v[:, i1, :].T, qx, qz, "Qx", "Qz", f"Qy = {qy[i1]:.4f}"),
              (v[:, :, i2].T, qx, qy, "Qx", "Qy", f"Qz = {qz[i2]:.4f}"))
    for ax, (img, a, b, la, lb, title) in zip(axes, panels):
        im = ax.imshow(img, origin="lower", aspect="auto", extent=(a[0], a[-1], b[0], b[-1]), cmap="inferno")
        ax.set_xlabel(f"{la} (1/Å)")
        ax.set_ylabel(f"{lb} (1/Å)")
        ax.set_title(title + " 1/Å")
        fig.colorbar(im, ax=ax, shrink=0.8, label="counts/voxel")
    return fig


def save_figures(maps, outdir, *, tilt_cap=None, peak_grid=None, dpi=110) -> list[str]:
    """Write the PNG figures of a maps Dataset into ``outdir`` (each atomically); returns their paths.

    Files: ``sxdm_maps.png`` (six panels), one PNG per map
    (``sxdm_<name>.png``), ``sxdm_mosaicity.png`` (HSV map, colour wheel,
    pole plot) and, with ``peak_grid``, ``sxdm_peak_slices.png``.
    """
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"outdir {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig, name):
        p = out / name
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight", pad_inches=0.08)  # nothing cut off
        paths.append(str(p))

    save(figure_maps(maps), "sxdm_maps.png")
    for name, label, cmap in _MAPS:
        fig = Figure(figsize=(5.5, 4.5), layout="constrained")
        plot_map(fig.add_subplot(), maps, name, label=label, cmap=cmap)
        save(fig, f"sxdm_{name}.png")
    save(figure_mosaicity(maps, tilt_cap=tilt_cap), "sxdm_mosaicity.png")
    if peak_grid is not None:
        save(figure_peak_slices(peak_grid), "sxdm_peak_slices.png")
    return paths
