"""The PNG of ``braggscope live``: the live maps figure drawn on a thread of its own, replaced atomically."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import matplotlib.image
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from braggscope.analysis.live.plot import LiveMapPlot
from braggscope.core.atomic import atomic_path

__all__ = ["FigureWriter"]


class FigureWriter:
    """Draw the live maps figure on a thread of its own and replace the PNG atomically.

    Drawing four panels takes 0.1-0.5 s; on this thread the documents keep
    flowing meanwhile, also while the final figure of a run is drawn. Requests
    made while a drawing is under way are merged into one (the latest source).
    """

    def __init__(self, path):
        self.path = Path(path)
        self._plots = {}  # id(source) -> LiveMapPlot
        self._source = None
        self._due = threading.Event()
        self._lock = threading.Lock()  # one drawing at a time
        self.errors = 0
        self.draw_s = 0.0  # how long the last drawing took (s)
        threading.Thread(target=self._run, name="live-figure", daemon=True).start()

    def request(self, source):
        self._source = source
        self._due.set()

    def wait(self, timeout=60.0):
        """Block until no drawing is due or under way (False on timeout)."""
        deadline = time.monotonic() + float(timeout)
        while self._due.is_set() or self._lock.locked():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _run(self):
        while True:
            self._due.wait()
            with self._lock:  # taken before the flag drops: wait() never sees a gap
                self._due.clear()
                self._draw(self._source)

    def _draw(self, source):
        t0 = time.monotonic()
        try:
            self._draw_locked(source)
        except Exception as exc:  # noqa: BLE001 - a figure must not stop the maps
            self.errors += 1
            print(f"braggscope live: warning: figure not refreshed ({type(exc).__name__}: {exc})",
                  file=sys.stderr, flush=True)
        self.draw_s = time.monotonic() - t0

    def _draw_locked(self, source):
        plot = self._plots.get(id(source))
        if plot is None:  # a new run: a new figure (the previous one is dropped)
            plot = LiveMapPlot(source, figure=_figure(), min_interval_s=0.0)
            self._plots = {id(source): plot}
        plot.update(force=True)
        with atomic_path(self.path) as tmp:  # the canvas is drawn: write its pixels, no second drawing
            matplotlib.image.imsave(tmp, np.asarray(plot.figure.canvas.buffer_rgba()))


def _figure():
    """A headless figure with a fixed layout (a constrained layout costs seconds per drawing)."""
    figure = Figure(figsize=(12.8, 3.0), dpi=80)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.04, right=0.97, bottom=0.16, top=0.88, wspace=0.5)
    return figure
