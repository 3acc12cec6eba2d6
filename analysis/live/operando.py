"""The live view of an operando campaign: the current map and the d-spacing against voltage so far.

:class:`LiveOperando` wraps the live SXDM maps (:class:`~braggscope.analysis.live.callback.LiveSXDM`):
it passes the documents of every run but the tracking's on to them and, when a checkpoint's
measurement ends (a run whose start document says ``operando_role="measure"``), records the
checkpoint: the cell's state its start document carries (voltage, lithium, protocol time) and the
mean and spread of the live d-spacing map over its mask. Give it to a
:class:`~braggscope.analysis.live.dispatch.LiveMapDispatcher` as the live maps would be (it has their
``maps()``, ``version``, ``active`` and ``flush``); :class:`LiveOperandoPlot` draws both panels.
"""

from __future__ import annotations

import threading
import time

import numpy as np

__all__ = ["LiveOperando", "LiveOperandoPlot"]


class LiveOperando:
    """Live maps of each checkpoint plus the campaign's d-spacing against the cell's state so far."""

    def __init__(self, live):
        self.live = live
        self._lock = threading.Lock()
        self._measure = None  # start document of the measurement in progress
        self._tracking = False  # the run in progress is a tracking run (not passed to the live maps)
        self._points: list[dict] = []
        self._version = 0

    def __call__(self, name, doc):
        if name == "start":
            self._measure = doc if doc.get("operando_role") == "measure" else None
            # the tracking's line and rocking scans are not maps: the live maps would decline each
            # with a line on the terminal, at every checkpoint
            self._tracking = doc.get("operando_role") == "track"
        if not self._tracking:
            self.live(name, doc)
        if name == "stop" and self._measure is not None and doc.get("run_start") == self._measure["uid"]:
            start, self._measure = self._measure, None
            if doc.get("exit_status") == "success":
                self._record(start)

    def _record(self, start: dict) -> None:
        state = (start.get("operando") or {}).get("state") or {}
        d_mean = d_std = float("nan")
        if getattr(self.live, "active", False):
            maps = self.live.maps()
            d = np.asarray(maps["d_spacing"].where(maps["mask"]).values, float)
            if np.isfinite(d).any():
                d_mean, d_std = float(np.nanmean(d)), float(np.nanstd(d))
        point = {"checkpoint": start.get("checkpoint"), "campaign_id": start.get("campaign_id"),
                 "uid": start["uid"], "d_mean": d_mean, "d_std": d_std,
                 **{k: float(state[k]) for k in ("time_s", "voltage", "lithium", "charge") if state.get(k) is not None}}
        with self._lock:
            self._points.append(point)
            self._version += 1

    def flush(self):
        flush = getattr(self.live, "flush", None)
        if flush is not None:
            flush()

    @property
    def active(self) -> bool:
        return bool(getattr(self.live, "active", False))

    @property
    def version(self) -> tuple:
        return getattr(self.live, "version", 0), self._version

    def maps(self):
        """The current (or last) checkpoint's live maps."""
        return self.live.maps()

    def history(self) -> list[dict]:
        """The checkpoints measured so far: ``checkpoint``, ``voltage``, ``lithium``, ``time_s``, ``charge``
        (the cell at the measurement's start), ``d_mean``, ``d_std`` (Angstrom, over the live map's mask)."""
        with self._lock:
            return [dict(p) for p in self._points]


class LiveOperandoPlot:
    """Two panels updated in place: the current d-spacing map, and mean +- spread of d-spacing against
    voltage for the checkpoints so far. ``update(force=False)`` redraws when something changed (at most
    every ``min_interval_s``); ``save(path)``."""

    def __init__(self, source: LiveOperando, *, min_interval_s: float = 0.5, figure=None):
        if figure is None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            figure = Figure(figsize=(9.0, 3.6), layout="constrained")
            FigureCanvasAgg(figure)
        self.source, self.figure = source, figure
        self.min_interval_s = float(min_interval_s)
        self.ax_map, self.ax_curve = figure.subplots(1, 2)
        self._image = self._colorbar = None
        self._last_version, self._last_draw = None, -np.inf
        self.n_draws = 0

    def update(self, force: bool = False) -> bool:
        if not self.source.active:
            return False
        version, now = self.source.version, time.monotonic()
        if not force and (version == self._last_version or now - self._last_draw < self.min_interval_s):
            return False
        ds = self.source.maps()
        d = np.asarray(ds["d_spacing"].values, float)
        x, y = ds.x.values, ds.y.values
        extent = (x[0], x[-1], y[-1], y[0]) if x.size > 1 and y.size > 1 else None
        if self._image is None or self._image.get_array().shape != d.shape:
            self.ax_map.clear()
            self._image = self.ax_map.imshow(d, cmap="viridis", extent=extent, interpolation="nearest")
            if self._colorbar is None:
                self._colorbar = self.figure.colorbar(self._image, ax=self.ax_map, shrink=0.8, label="d (Å)")
            else:
                self._colorbar.update_normal(self._image)
            self.ax_map.set_xlabel("x (µm)")
            self.ax_map.set_ylabel("y (µm)")
        else:
            self._image.set_data(d)
            if extent is not None:
                self._image.set_extent(extent)
        finite = d[np.isfinite(d)]
        if finite.size:
            lo, hi = np.percentile(finite, [2, 98])
            self._image.set_clim(lo, hi if hi > lo else lo + 1e-6)
        history = self.source.history()
        self.ax_map.set_title(f"checkpoint {len(history)}: d-spacing (live)", fontsize=9)
        self.ax_curve.clear()
        points = [p for p in history if "voltage" in p]
        if points:
            v = [p["voltage"] for p in points]
            self.ax_curve.errorbar(v, [p["d_mean"] for p in points], yerr=[p["d_std"] for p in points], fmt="o-",
                                   capsize=3, ms=4)
            for p in points:
                self.ax_curve.annotate(str(p["checkpoint"]), (p["voltage"], p["d_mean"]), textcoords="offset points",
                                       xytext=(4, 4), fontsize=7)
        self.ax_curve.set_xlabel("voltage (V)")
        self.ax_curve.set_ylabel("mean d-spacing (Å)")
        self.ax_curve.set_title("d-spacing against voltage so far", fontsize=9)
        canvas = self.figure.canvas
        if type(canvas).__name__ == "FigureCanvasAgg":
            canvas.draw()
        else:
            canvas.draw_idle()
        self._last_version, self._last_draw = version, time.monotonic()
        self.n_draws += 1
        return True

    __call__ = update

    def save(self, path, dpi: int = 100) -> None:
        self.update(force=True)
        self.figure.savefig(path, dpi=dpi)
