"""Live figures as image files refreshed in place: 1D scans with peak statistics, and the live SXDM maps.

Where no display exists (a terminal over ssh, a test), ``braggscope shell``
writes what a window would show into ``<storage.data_dir>/live/``:

* ``scan.png`` (:class:`LiveScanFile`, a RunEngine callback): each 1D scan's
  hinted counters against the motor, redrawn every ``every_n`` points or
  ``every_s`` seconds and at the end with bluesky's peak statistics (cen,
  com, peak, FWHM) marked;
* ``maps.png`` (:class:`LiveMapFiles`, an update hook of the live-map
  worker): the live SXDM maps (:class:`braggscope.analysis.live.plot.LiveMapPlot`:
  intensity, detector centre of mass, d-spacing, tilts) redrawn as the map
  fills, with the offline figures' colour maps, colour scales and units
  (``analysis.sxdm.figures``).

Each file is replaced atomically (a viewer never sees half a PNG); its path is
printed when a run starts drawing into it. Drawing happens on a worker thread,
so the RunEngine does not wait for matplotlib, except at the end of a run
(the final figure is on disk when the scan command returns).

Where a display exists, :func:`show_live_maps` opens the live maps in a
window redrawn by a GUI timer, and :class:`GuiDuringTask` keeps every
matplotlib window responsive while a plan runs (bluesky's default does so only
for Qt: with Tk the windows froze until the scan returned).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import matplotlib
import numpy as np
from bluesky.utils import DefaultDuringTask, DuringTask
from matplotlib import backends
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from braggscope.analysis.live.plot import LiveMapPlot, panel
from braggscope.app.commands.scans import PeakTracker, hinted_fields
from braggscope.core import compat
from braggscope.core.atomic import atomic_path

__all__ = ["LIVE_MAP_PANELS", "GuiDuringTask", "LiveMapFiles", "LiveScanFile", "install_live_figures",
           "keep_windows_alive", "live_directory", "show_live_maps"]

#: The live map panels: the offline figures' styles for intensity, d-spacing and tilts, plus the
#: detector centre of mass (pixels), which the offline maps do not show.
LIVE_MAP_NAMES = ("intensity", "com_row", "com_col", "d_spacing", "tilt_altitude", "tilt_azimuth")


def _live_map_panels():
    titles = {"com_row": "detector COM row (pixel)", "com_col": "detector COM column (pixel)"}
    return tuple(panel(name, titles.get(name)) for name in LIVE_MAP_NAMES)


LIVE_MAP_PANELS = _live_map_panels()


def live_directory(cfg) -> Path:
    """``<storage.data_dir>/live`` (created)."""
    path = Path(cfg.expand_path("storage.data_dir")) / "live"
    path.mkdir(parents=True, exist_ok=True)
    return path


class _LatestWorker:
    """One daemon thread running the latest submitted job (older pending jobs are dropped)."""

    def __init__(self, name):
        self._cond = threading.Condition()
        self._job = None
        self._busy = False
        self.errors: list[BaseException] = []
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def submit(self, job):
        with self._cond:
            self._job = job
            self._cond.notify_all()

    def wait(self, timeout=10.0) -> bool:
        """Until the submitted job has run; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._job is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _loop(self):
        while True:
            with self._cond:
                while self._job is None:
                    self._cond.wait()
                job, self._job, self._busy = self._job, None, True
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - a figure must never fail a measurement
                self.errors.append(exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


class LiveScanFile:
    """RunEngine callback: ``<directory>/scan.png`` of each 1D scan, refreshed in place.

    Parameters
    ----------
    directory : path-like
        Where ``scan.png`` goes (created).
    every_n : int
        Redraw after this many new points ...
    every_s : float
        ... or when this many seconds passed since the last drawing.
    out : callable
        Prints the file's path when a scan starts drawing (default ``print``).
    """

    def __init__(self, directory, *, every_n: int = 10, every_s: float = 2.0, out=print):
        if int(every_n) < 1 or not float(every_s) >= 0:
            raise ValueError(f"every_n must be >= 1 and every_s >= 0, got {every_n!r}, {every_s!r}")
        self.path = Path(directory) / "scan.png"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.every_n, self.every_s, self.out = int(every_n), float(every_s), out
        self.peaks = PeakTracker()
        self.n_draws = 0
        self._worker = _LatestWorker("live-scan-figure")
        self._reset()

    def _reset(self):
        self._x, self._y, self._fields, self._primary = None, {}, [], None
        self._title, self._since, self._last = "", 0, 0.0

    def __call__(self, name, doc):
        self.peaks(name, doc)
        getattr(self, "_" + name, lambda doc: None)(doc)

    def _start(self, doc):
        self._reset()
        if self.peaks.current is not None:  # a 1D scan
            self._x = self.peaks.current.x
            self._start_doc = doc
            self._title = f"scan {doc.get('scan_id', '?')} ({doc.get('plan_name', '')}): {self._x}"

    def _descriptor(self, doc):
        if self._x is None or doc.get("name") != "primary" or self._primary is not None:
            return
        self._primary = doc["uid"]
        self._fields = hinted_fields(doc, self._start_doc.get("detectors") or [])[:3]
        self._xs, self._y = [], {f: [] for f in self._fields}
        self.out(f"live plot: {self.path}")

    def _event(self, doc):
        if self._primary is None or doc["descriptor"] != self._primary:
            return
        data = doc["data"]
        self._xs.append(float(data.get(self._x, np.nan)))
        for f in self._fields:
            self._y[f].append(float(data.get(f, np.nan)))
        self._since += 1
        if self._since >= self.every_n or time.monotonic() - self._last >= self.every_s:
            self._submit(None)

    def _stop(self, doc):
        if self._primary is None:
            return
        last = self.peaks.last
        stats = last.stats if last is not None and last.uid == self._start_doc["uid"] else {}
        self._submit(stats)
        self._worker.wait(10.0)  # the final figure is on disk when the scan returns
        self._primary = None

    def wait(self, timeout: float = 10.0) -> bool:
        """Until the figure asked for last is on disk (False on timeout)."""
        return self._worker.wait(timeout)

    def _submit(self, stats):
        self._since, self._last = 0, time.monotonic()
        x = np.asarray(self._xs, float)
        ys = {f: np.asarray(v, float) for f, v in self._y.items()}
        title = self._title
        self._worker.submit(lambda: self._draw(x, ys, title, stats))

    def _draw(self, x, ys, title, stats):
        fig = Figure(figsize=(6.4, 2.2 + 1.6 * len(ys)), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(ys), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (field, y) in zip(axes, ys.items()):
            ax.plot(x, y, "o-", ms=3, lw=1)
            ax.set_ylabel(f"{field} (counts)", fontsize=8)
            ps = (stats or {}).get(field)
            for name, value, style in _marks(ps):
                ax.axvline(value, ls=style, lw=1, color={"cen": "C3", "com": "C2", "peak": "C1"}[name],
                           label=f"{name} {value:.6g}")
            if ps is not None:
                ax.legend(fontsize=7, loc="best")
        axes[0].set_title(title + ("" if stats is None else "  (done)"), fontsize=9)
        axes[-1].set_xlabel(self._x)
        with atomic_path(self.path) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        self.n_draws += 1


def _marks(stats):
    if stats is None:
        return []
    out = []
    if stats.cen is not None:
        out.append(("cen", float(stats.cen), "--"))
    if stats.com is not None:
        out.append(("com", float(stats.com), ":"))
    if stats.max is not None:
        out.append(("peak", float(stats.max[0]), "-."))
    return out


class LiveMapFiles:
    """Update hook of the live-map worker: ``<directory>/maps.png`` of the live SXDM maps, refreshed in place.

    Parameters
    ----------
    live : braggscope.analysis.live.callback.LiveSXDM
        The live maps (``maps()``, ``version``, ``active``, ``finished``).
    directory : path-like
        Where ``maps.png`` goes (created).
    min_interval_s : float
        Least time between two drawings while the map fills; the finished
        map is always drawn.
    panels : sequence, optional
        ``LiveMapPlot`` panels (default :data:`LIVE_MAP_PANELS`).
    out : callable
        Prints the file's path when a map starts drawing into it.

    Examples
    --------
    >>> live, dispatcher, _ = subscribe_live_maps(RE)                 # doctest: +SKIP
    >>> dispatcher.on_update.append(LiveMapFiles(live, "live/"))      # doctest: +SKIP
    """

    def __init__(self, live, directory, *, min_interval_s: float = 2.0, panels=None, out=print):
        self.live = live
        self.path = Path(directory) / "maps.png"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.min_interval_s = float(min_interval_s)
        self.panels = LIVE_MAP_PANELS if panels is None else tuple(panels)
        self.out = out
        self.n_saved = 0
        self._plot = None
        self._key = None
        self._saved_version = None

    def __call__(self):
        """Draw and save if the maps changed and a drawing is due (the worker calls it after each batch)."""
        live = self.live
        if not getattr(live, "active", False):
            return False
        ds = live.maps()
        key = tuple(tuple(np.asarray(ds[c].values, float).round(9)) for c in ("y", "x", "eta"))  # the map's grid
        if self._plot is None or key != self._key:
            self._plot = LiveMapPlot(live, panels=self.panels, min_interval_s=self.min_interval_s)
            self._key, self._saved_version = key, None
            self.out(f"live maps: {self.path}")
        finished = bool(getattr(live, "finished", False))
        version = getattr(live, "version", None)
        if finished and version == self._saved_version:
            return False
        if not self._plot.update(force=finished):
            return False
        with atomic_path(self.path) as tmp:
            self._plot.figure.savefig(tmp, dpi=80, format="png")
        self._saved_version = version
        self.n_saved += 1
        return True


def install_live_figures(RE, cfg, live=None, dispatcher=None, *, scan_file=True, out=print) -> dict:
    """The session's live image files: ``scan.png`` (subscribed to ``RE``) and, with the live maps, ``maps.png``.

    Parameters
    ----------
    RE : bluesky.RunEngine
    cfg : braggscope.core.config.Config
        ``storage.data_dir`` (files under ``live/``).
    live, dispatcher : optional
        The live SXDM maps and their worker (``app.beamline.subscribe_live_maps``).
    scan_file : bool
        Write ``scan.png`` (the session does where no display shows bluesky's plots).

    Returns
    -------
    dict
        ``scan`` (:class:`LiveScanFile` or None), ``maps`` (:class:`LiveMapFiles` or None), ``directory``.

    Also installs :class:`GuiDuringTask` in ``RE`` (:func:`keep_windows_alive`).
    """
    directory = live_directory(cfg)
    keep_windows_alive(RE)
    scan = None
    if scan_file:
        scan = LiveScanFile(directory, out=out)
        RE.subscribe(scan)
    maps = None
    if live is not None and dispatcher is not None:
        maps = LiveMapFiles(live, directory, out=out)
        dispatcher.on_update.append(maps)
    return {"scan": scan, "maps": maps, "directory": directory}


def show_live_maps(live, *, min_interval_s: float = 1.0, out=print):
    """A window of the live SXDM maps (pyplot, where a display exists), redrawn by a GUI timer as the map fills.

    Call it from the shell's main thread once ``%matplotlib`` chose a GUI
    backend (``braggscope shell`` does when a display exists); the RunEngine
    keeps the window responsive during a plan with :class:`GuiDuringTask`.
    Closing the window stops its timer (the maps file is still written).

    Returns
    -------
    braggscope.analysis.live.plot.LiveMapPlot
        Where matplotlib has no interactive backend (no GUI toolkit) there is
        no window: a line says so and points at the maps file, and the plot
        draws off screen.
    """
    import matplotlib.pyplot as plt  # only for a window: pyplot takes the GUI's event loop over

    window = _interactive_backend()
    if not window:
        out(f"live maps: no window (matplotlib backend {matplotlib.get_backend()!r} is not interactive: "
            "install tkinter or a Qt binding); the maps file is refreshed instead")
    figure = plt.figure("braggscope live maps", figsize=(3.2 * len(LIVE_MAP_PANELS), 3.2), layout="constrained")
    plot = LiveMapPlot(live, panels=LIVE_MAP_PANELS, figure=figure, min_interval_s=min_interval_s)
    timer = plot.start_timer()
    figure.canvas.mpl_connect("close_event", lambda event: timer.stop())
    if window:
        plt.show(block=False)
    return plot


def _interactive_backend() -> bool:
    """Whether matplotlib's backend draws in windows (TkAgg, QtAgg, ...), not only into files."""
    backend = matplotlib.get_backend().lower()
    if hasattr(backends, "backend_registry"):  # matplotlib >= 3.9
        return backend not in backends.backend_registry.list_builtin(backends.BackendFilter.NON_INTERACTIVE)
    return backend not in ("agg", "cairo", "pdf", "pgf", "ps", "svg", "template")


class GuiDuringTask(DuringTask):
    """RunEngine during-task that keeps matplotlib windows responsive while a plan runs.

    While a plan runs, the RunEngine's event loop works in its own thread and
    the main thread (the GUI's) waits in ``block``. bluesky's
    :class:`~bluesky.utils.DefaultDuringTask` runs the Qt event loop there; with
    any other interactive backend (TkAgg) the windows froze, timers included,
    until the plan returned. This one processes the windows' events every
    ``interval_s`` instead (timers fire, so the live maps redraw), and hands
    Qt and non-interactive backends to ``fallback``.

    Parameters
    ----------
    fallback : bluesky.utils.DuringTask, optional
        For Qt and file-only backends (default :class:`~bluesky.utils.DefaultDuringTask`).
    interval_s : float
        How often the windows' events are processed while waiting.
    """

    def __init__(self, fallback=None, interval_s: float = 0.05):
        self.fallback = fallback if fallback is not None else DefaultDuringTask()
        self.interval_s = float(interval_s)
        self.n_pumps = 0

    def block(self, blocking_event):
        """Wait for ``blocking_event``, processing the windows' events meanwhile."""
        if not _interactive_backend() or "qt" in matplotlib.get_backend().lower():
            return self.fallback.block(blocking_event)
        while not blocking_event.wait(self.interval_s):
            for manager in compat.figure_managers():
                try:
                    manager.canvas.flush_events()  # Tk: update(), which also runs due timers
                except Exception:  # noqa: BLE001 - a window closed meanwhile must not fail the plan
                    pass
            self.n_pumps += 1


def keep_windows_alive(RE) -> GuiDuringTask:
    """Install :class:`GuiDuringTask` in ``RE`` (keeping its current during-task for Qt and headless use).

    bluesky takes a during-task only in ``RunEngine(during_task=...)``; this
    sets the same attribute on an existing RunEngine.
    """
    current = compat.during_task(RE)
    if isinstance(current, GuiDuringTask):
        return current
    task = GuiDuringTask(current)
    compat.set_during_task(RE, task)
    return task
