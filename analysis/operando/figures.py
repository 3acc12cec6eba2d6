"""Figures of an operando series: the voltage curve with its checkpoints, the lattice against the cell's
state, a montage of the maps, and a movie.

matplotlib's ``Figure`` without pyplot (safe in threads and without a display); the movie is a GIF
(Pillow), which needs no video encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from braggscope.core.atomic import atomic_path

__all__ = ["figure_voltage_curve", "figure_lattice_trends", "figure_montage", "save_movie", "save_series_figures"]


def figure_voltage_curve(curve, series) -> Figure:
    """Voltage against the protocol's time (h), the checkpoints marked and numbered."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    if curve is not None and curve.sizes.get("sample", 0):
        ax.plot(curve["time_s"] / 3600.0, curve["voltage"], "-", color="0.3", lw=1.2, label="cell")
    t, v = series["time_s"].values / 3600.0, series["voltage"].values
    ax.plot(t, v, "o", color="C3", label="checkpoints")
    for k, (ti, vi) in enumerate(zip(t, v)):
        ax.annotate(str(int(series.checkpoint.values[k])), (ti, vi), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    ax.set_xlabel("protocol time (h)")
    ax.set_ylabel("voltage (V vs Li/Li+)")
    ax.legend(loc="best")
    ax.set_title(f"campaign {series.attrs.get('campaign_id', '')}")
    return fig


def figure_lattice_trends(series) -> Figure:
    """Mean and spread (one standard deviation) of d-spacing and strain against voltage and lithium content."""
    fig = Figure(figsize=(9, 6.5), layout="constrained")
    axes = fig.subplots(2, 2)
    for row, (name, label) in enumerate((("d", "d-spacing (Å)"), ("strain", "strain (microstrain)"))):
        mean, spread = series[f"{name}_mean"].values, series[f"{name}_std"].values
        for col, (coord, xlabel) in enumerate((("voltage", "voltage (V)"), ("lithium", "lithium content x"))):
            ax = axes[row, col]
            ax.errorbar(series[coord].values, mean, yerr=spread, fmt="o-", capsize=3, ms=4)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            if coord == "lithium":
                ax.invert_xaxis()  # charge runs left to right
    fig.suptitle("mean and spread over the particle")
    return fig


def figure_montage(series, name: str = "d_spacing", *, columns: int = 4) -> Figure:
    """The ``name`` map of every checkpoint (one colour scale), titled with the cell's state."""
    n = series.sizes["checkpoint"]
    cols = min(columns, n)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(3.0 * cols + 1.0, 2.8 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    values = _maps(series, name)
    vmin, vmax = np.nanpercentile(values, [1, 99]) if np.isfinite(values).any() else (0, 1)
    image = None
    for k, ax in enumerate(axes):
        if k >= n:
            ax.set_axis_off()
            continue
        image = ax.imshow(values[k], origin="lower", extent=_extent(series), vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set_title(_state_label(series, k), fontsize=8)
        ax.set_xlabel("x (um)", fontsize=8)
        ax.set_ylabel("y (um)", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=list(axes[:n]), shrink=0.8, label=_label(name))
    return fig


def save_movie(series, path, name: str = "d_spacing", *, fps: float = 2.0) -> Path:
    """The ``name`` map through the checkpoints as an animated GIF; returns the path."""
    from matplotlib.animation import FuncAnimation, PillowWriter  # only when a movie is asked for

    values = _maps(series, name)
    vmin, vmax = np.nanpercentile(values, [1, 99]) if np.isfinite(values).any() else (0, 1)
    fig = Figure(figsize=(5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(values[0], origin="lower", extent=_extent(series), vmin=vmin, vmax=vmax, cmap="viridis")
    fig.colorbar(image, ax=ax, label=_label(name))
    ax.set_xlabel("x (um)")
    ax.set_ylabel("y (um)")
    title = ax.set_title(_state_label(series, 0))

    def frame(k):
        image.set_data(values[k])
        title.set_text(_state_label(series, k))
        return image, title

    movie = FuncAnimation(fig, frame, frames=series.sizes["checkpoint"], blit=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        movie.save(str(tmp), writer=PillowWriter(fps=fps), dpi=90)
    return path


def save_series_figures(series, outdir, *, curve=None, dpi: int = 110) -> dict:
    """Write ``voltage_curve.png``, ``lattice_trends.png``, ``montage_<map>.png`` and ``movie.gif``
    (SXDM series) into ``outdir``; returns name -> path."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}

    def save(fig, name):
        path = out / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight", pad_inches=0.08)
        paths[name] = path

    save(figure_voltage_curve(curve, series), "voltage_curve.png")
    if "d_mean" in series:
        save(figure_lattice_trends(series), "lattice_trends.png")
    for name in ("d_spacing", "intensity"):
        if name in series and series[name].ndim == 3:
            save(figure_montage(series, name), f"montage_{name}.png")
    if "d_spacing" in series and series["d_spacing"].ndim == 3:
        paths["movie.gif"] = save_movie(series, out / "movie.gif")
    return paths


def _maps(series, name):
    values = np.asarray(series[name].values, dtype=float)
    if values.ndim == 4:  # BCDI: the central slice along z
        values = values[:, values.shape[1] // 2]
    return values


def _extent(series):
    x, y = series.x.values, series.y.values
    dx = float(x[1] - x[0]) if x.size > 1 else 1.0
    dy = float(y[1] - y[0]) if y.size > 1 else 1.0
    return (x[0] - dx / 2, x[-1] + dx / 2, y[0] - dy / 2, y[-1] + dy / 2)


def _state_label(series, k: int) -> str:
    return (f"#{int(series.checkpoint.values[k])}  {float(series['voltage'].values[k]):.3f} V  "
            f"x = {float(series['lithium'].values[k]):.3f}")


def _label(name: str) -> str:
    return {"d_spacing": "d-spacing (Å)", "intensity": "intensity (counts)", "strain": "strain (microstrain)"}.get(
        name, name)
