"""The latest runs of the catalog, and the figure of each, for the page.

:class:`RecentRuns` lists the newest runs of the catalog (scan id, plan, sample, start, exit
status, points) every ``poll_s`` seconds, or at once when a run ends (:meth:`RecentRuns.refresh`),
in a thread of its own: a catalog server that is slow or away never holds up the page.

A run's figure (:meth:`RecentRuns.figure`) is a binary message of the page (its maps or its
curve, :mod:`braggscope.app.web.codec`), from the first source that has it:

1. the live maps or curve the page's server made while the run went on;
2. the maps file ``braggscope live`` wrote for it (``<data_dir>/live/scan<n>_<uid>_live_maps.h5``);
3. for a 1D scan, its motor and counter read from the catalog.

A map run seen by neither has no figure here; ``braggscope reduce sxdm <scan id>`` makes one.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np

from braggscope import storage
from braggscope.analysis.sxdm.files import load_maps
from braggscope.app.bus.consumer import map_path
from braggscope.app.web.codec import encode
from braggscope.app.web.feed import MAP_FIELDS

__all__ = ["RecentRuns"]


class RecentRuns:
    """The newest runs of the configuration's catalog, listed in a thread.

    Parameters
    ----------
    cfg : braggscope.core.config.Config
        Its catalog (``[storage]``) and ``storage.data_dir`` (where ``braggscope live`` writes).
    publish : callable
        Called (from the thread) with ``{"runs": [...], "error": str or None}`` when the list changes.
    figures : mapping
        Run uid -> figure message made live (:attr:`RunFeed.figures`).
    n : int
        Runs listed.
    poll_s : float
        Seconds between two listings.
    """

    def __init__(self, cfg, publish, *, figures=None, n: int = 10, poll_s: float = 5.0):
        self.cfg, self.publish, self.n, self.poll_s = cfg, publish, int(n), float(poll_s)
        self.live_figures = figures if figures is not None else {}
        self.state = {"runs": [], "error": None}
        self._catalog = None
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._work, name="braggscope-web-runs", daemon=True)

    def start(self) -> RecentRuns:
        self._thread.start()
        return self

    def refresh(self) -> None:
        """List the runs again now (a run ended)."""
        self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _work(self):
        while not self._stop.is_set():
            try:
                state = {"runs": self.list(), "error": None}
            except Exception as exc:  # noqa: BLE001 - a catalog away or broken: said on the page, tried again
                self._catalog = None
                state = {"runs": self.state["runs"], "error": f"catalog: {type(exc).__name__}: {_line(exc)}"}
            if state != self.state:
                self.state = state
                self.publish(dict(state))
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def catalog(self):
        if self._catalog is None:
            self._catalog = storage.open_catalog(self.cfg)
        return self._catalog

    def list(self) -> list[dict]:
        """The newest runs, newest first: ``uid``, ``scan_id``, ``plan_name``, ``sample``, ``time``,
        ``exit_status`` (None while it runs), ``points``."""
        rows = []
        for run in itertools.islice(iter(storage.Runs(self.catalog())), self.n):
            start, stop = run.metadata.get("start", {}), run.metadata.get("stop") or {}
            rows.append({"uid": start.get("uid"), "scan_id": start.get("scan_id"),
                         "plan_name": start.get("plan_name"), "sample": start.get("sample"),
                         "time": start.get("time"), "exit_status": stop.get("exit_status"),
                         "points": (stop.get("num_events") or {}).get("primary"),
                         "has_figure": start.get("uid") in self.live_figures})
        return rows

    def figure(self, uid: str) -> bytes | None:
        """The figure message of run ``uid`` (see the module's docstring), or None."""
        if uid in self.live_figures:
            return self.live_figures[uid]
        run = storage.load_run(self.catalog(), uid)
        start = dict(run.metadata["start"])
        path = map_path(self.cfg.expand_path("storage.data_dir") / "live", start)
        if path.is_file():
            ds = load_maps(path)
            header = {"type": "maps", "run": start["uid"], "scan_id": start.get("scan_id"),
                      "n_frames": int(ds.attrs.get("n_frames", 0)), "finished": True, "latency": [],
                      "x": [float(ds.x.values[0]), float(ds.x.values[-1])],
                      "y": [float(ds.y.values[0]), float(ds.y.values[-1])],
                      "units": {name: str(ds[name].attrs.get("units", "")) for name in MAP_FIELDS}}
            return encode(header, {name: ds[name].values for name in MAP_FIELDS})
        motors = start.get("motors") or []
        if len(motors) == 1 and len(start.get("shape") or []) == 1:
            return _curve_from_catalog(run, start, motors[0])
        return None


def _curve_from_catalog(run, start, motor) -> bytes | None:
    stream = run["primary"]
    hints = stream.metadata.get("descriptors", [{}])[0].get("hints", {}) if hasattr(stream, "metadata") else {}
    fields = [f for det in start.get("detectors") or [] for f in hints.get(det, {}).get("fields", [])]
    fields.sort(key=lambda f: "roistat" not in f)
    if not fields:
        return None
    table = stream.read([motor, fields[0]])
    header = {"type": "curve", "run": start["uid"], "scan_id": start.get("scan_id"), "motor": motor,
              "field": fields[0], "finished": True}
    return encode(header, {"x": np.asarray(table[motor], float), "y": np.asarray(table[fields[0]], float)})


def _line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
