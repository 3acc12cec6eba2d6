"""Live map figure: a few ``imshow`` panels refreshed in place.

:class:`LiveMapPlot` draws the maps of a live callback (anything with a
``maps()`` method returning an ``xarray.Dataset`` and a ``version`` counter,
e.g. :class:`braggscope.analysis.live.callback.LiveSXDM`). Each refresh replaces the
image arrays with ``set_data`` (the map is a fixed ``(ny, nx)`` array, so the
cost does not grow with the number of points already measured) and redraws at
most every ``min_interval_s``. It works headless (Agg canvas, no pyplot) and
saves a PNG with :meth:`save`.

Call :meth:`update` from the thread that owns the figure: with a GUI backend
use :meth:`start_timer`; headless, pass ``plot.update`` as ``on_update`` to
:class:`braggscope.analysis.live.dispatch.LiveMapDispatcher`.
"""

from __future__ import annotations

import time

import numpy as np
from matplotlib import ticker

from braggscope.analysis.sxdm.figures import MAP_STYLES, colour_limits

__all__ = ["LiveMapPlot", "DEFAULT_PANELS", "panel"]


def panel(name, title=None, cmap=None):
    """``(variable, colour map, title)`` in the offline figures' style (``analysis.sxdm.figures.MAP_STYLES``)."""
    label, style_cmap = MAP_STYLES.get(name, (name, "viridis"))
    return (name, cmap or style_cmap, title or label)


#: (variable, colour map, title): the offline figures' colour maps and labels
DEFAULT_PANELS = tuple(panel(name) for name in ("intensity", "strain", "tilt_altitude", "tilt_azimuth"))


class LiveMapPlot:
    """A figure of live maps updated in place.

    Parameters
    ----------
    source : object
        Has ``maps() -> xarray.Dataset`` (variables on dims ``(y, x)``) and an
        integer ``version`` that changes when the maps change.
    panels : sequence of (variable, cmap, title)
        What to show, default :data:`DEFAULT_PANELS`.
    min_interval_s : float
        Minimum time between two redraws (seconds); ``update(force=True)``
        ignores it.
    figure : matplotlib.figure.Figure, optional
        Draw into this figure (e.g. from ``pyplot.figure()`` for a GUI);
        default: a new headless figure with an Agg canvas.
    """

    def __init__(self, source, *, panels=DEFAULT_PANELS, min_interval_s=0.5, figure=None):
        if not hasattr(source, "maps"):
            raise TypeError(f"source must have a maps() method, got {type(source).__name__}")
        if float(min_interval_s) < 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s!r}")
        self.source = source
        self.panels = tuple(panels)
        if not self.panels:
            raise ValueError("panels must name at least one variable")
        self.min_interval_s = float(min_interval_s)
        if figure is None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            figure = Figure(figsize=(3.2 * len(self.panels), 3.2), layout="constrained")
            FigureCanvasAgg(figure)
        self.figure = figure
        self._images = {}
        self._axes = {}
        self._last_draw = -np.inf
        self._last_version = None
        self.n_draws = 0
        self._timer = None

    def _build(self, ds):
        extent = None
        if "x" in ds.coords and "y" in ds.coords and ds.sizes["x"] > 1 and ds.sizes["y"] > 1:
            x, y = ds.x.values, ds.y.values
            dx, dy = (x[-1] - x[0]) / (len(x) - 1), (y[-1] - y[0]) / (len(y) - 1)
            extent = (x[0] - dx / 2, x[-1] + dx / 2, y[-1] + dy / 2, y[0] - dy / 2)
        axes = self.figure.subplots(1, len(self.panels), squeeze=False)[0]
        for ax, (var, cmap, title) in zip(axes, self.panels):
            if var not in ds:
                raise KeyError(f"panel variable {var!r} not in the maps: {list(ds.data_vars)}")
            im = ax.imshow(np.asarray(ds[var].values, float), cmap=cmap, extent=extent,
                           interpolation="nearest", origin="upper")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("x (µm)")
            ax.set_ylabel("y (µm)")
            self.figure.colorbar(im, ax=ax, shrink=0.8, format=ticker.ScalarFormatter(useOffset=False))
            self._images[var], self._axes[var] = im, ax

    def update(self, force=False):
        """Refresh the images if due (and if the maps changed). Returns True if drawn."""
        if not getattr(self.source, "active", True):  # no map run yet (e.g. only declined runs)
            return False
        now = time.monotonic()
        version = getattr(self.source, "version", None)
        if not force and (now - self._last_draw < self.min_interval_s
                          or (version is not None and version == self._last_version)):
            return False
        ds = self.source.maps()
        if not self._images:
            self._build(ds)
        for var, _, _ in self.panels:
            data = np.asarray(ds[var].values, float)
            im = self._images[var]
            im.set_data(data)
            finite = data[np.isfinite(data)]
            if finite.size:
                lo, hi = colour_limits(var, data)  # the offline figures' colour scales
                if lo is None:
                    lo, hi = float(finite.min()), float(finite.max())
                im.set_clim(lo, hi if hi > lo else lo + 1e-9)
        self._redraw()
        self._last_draw, self._last_version = time.monotonic(), version
        self.n_draws += 1
        return True

    __call__ = update

    def _redraw(self):
        canvas = self.figure.canvas
        if type(canvas).__name__ == "FigureCanvasAgg":
            canvas.draw()  # headless: render now
        else:  # GUI: drawn by its event loop (a flush_events here, inside a timer callback, re-entered it forever)
            canvas.draw_idle()

    def start_timer(self, interval_ms=None):
        """GUI backends: poll :meth:`update` from the GUI thread every ``interval_ms``."""
        interval_ms = int(1000 * self.min_interval_s if interval_ms is None else interval_ms)
        self._timer = self.figure.canvas.new_timer(interval=max(interval_ms, 1))
        self._timer.add_callback(lambda: self.update() or None)  # a callback returning False is dropped by the timer
        self._timer.start()
        return self._timer

    def save(self, path, dpi=100):
        """Final refresh and save the figure (PNG or any matplotlib format)."""
        self.update(force=True)
        self.figure.savefig(path, dpi=dpi)
        return path
