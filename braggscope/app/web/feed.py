"""What the page shows of the run in progress, from its documents: progress, live maps, curve, beam.

:class:`RunFeed` takes the documents of the bus one by one (:meth:`RunFeed.feed`) and, after
each batch (:meth:`RunFeed.flush`), says what changed as messages for the page:

- ``run``: the run in progress (uid, scan id, plan, sample, points done of the total, exit status);
- ``maps``: the live SXDM maps of a map run (``sxdm_map``, ``sxdm_fly``; a
  :class:`~braggscope.analysis.live.LiveSXDM`, as ``braggscope live`` makes them): intensity,
  strain, tilt altitude and azimuth, with, for each frame newly in the maps, when its document
  left the acquisition (the page measures document-to-pixel latencies from it);
- ``curve``: the counter against the motor of a 1D scan (``ascan``, an alignment);
- ``beam``: what the runs record of the beam: the baseline's ``machine_*`` readings, the monitor
  with every point, the ``suspensions`` stream.

Map and curve messages are binary (:mod:`braggscope.app.web.codec`), at most one per
``min_interval_s`` while a run goes on, and always one at its end. The final map or curve of
each of the last runs is kept (:attr:`RunFeed.figures`) for the page's list of runs.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

import numpy as np

from braggscope.analysis.live import LiveSXDM
from braggscope.app.web.codec import encode

__all__ = ["RunFeed", "MAP_FIELDS"]

#: The maps the page draws, in order.
MAP_FIELDS = ("intensity", "strain", "tilt_altitude", "tilt_azimuth")


class RunFeed:
    """The documents of the bus turned into the page's messages.

    Parameters
    ----------
    live_kwargs : dict, optional
        Keyword arguments of :class:`~braggscope.analysis.live.LiveSXDM`.
    min_interval_s : float
        Least time between two map (or curve) messages of a run.
    keep_figures : int
        Finished runs whose last map or curve is kept.
    """

    def __init__(self, *, live_kwargs=None, min_interval_s: float = 0.1, keep_figures: int = 20):
        self.live_kwargs = {"batch_size": 64, "frame_timeout_s": 10.0, **(live_kwargs or {}), "announce": False}
        self.min_interval_s = float(min_interval_s)
        self.keep_figures = int(keep_figures)
        self.figures: OrderedDict[str, bytes] = OrderedDict()  # run uid -> its last map or curve message
        self.beam: dict = {}
        self.run: dict | None = None
        self._live = self._curve = None
        self._streams: dict[str, str] = {}  # descriptor uid -> stream name
        self._image_key = {}  # stream resource uid -> its data key
        self._frames = deque()  # [frames, published] of each image document not yet in the maps
        self._latency: list = []  # [[frames, published], ...] newly in the maps, for the next map message
        self._reduced = 0
        self._last_sent = {"maps": -np.inf, "curve": -np.inf}
        self._dirty = set()

    # -- documents -------------------------------------------------------------------
    def feed(self, name: str, doc: dict, published: float | None = None) -> None:
        """One document; ``published``: when the acquisition handed it to the bus (s since the epoch)."""
        if name == "start":
            self._begin(doc)
            return
        if self.run is None:  # joined in the middle of a run: nothing to show until the next one
            return
        handler = getattr(self, f"_{name}", None)
        if handler is not None:
            handler(doc, published)
        if self._live is not None and self._live.declined is None:
            self._live(name, doc)
            if self._live.declined is not None:  # not a map after all (or it failed): no maps message
                self._live = None

    def _begin(self, doc):
        self.run = {"uid": doc["uid"], "scan_id": doc.get("scan_id"), "plan_name": doc.get("plan_name", "?"),
                    "sample": doc.get("sample"), "time": doc.get("time"), "total": _total(doc), "done": 0,
                    "exit_status": None, "reason": "", "kind": "other"}
        self._streams.clear()
        self._image_key.clear()
        self._frames.clear()
        self._latency, self._reduced = [], 0
        self._last_sent = {"maps": -np.inf, "curve": -np.inf}
        self._live = LiveSXDM(**self.live_kwargs)
        self._live("start", doc)
        if self._live.declined is not None:
            self._live = None
        else:
            self.run["kind"] = "map"
        self._curve = _curve_for(doc)
        if self._curve is not None:
            self.run["kind"] = "scan"
        self._dirty.add("run")

    def _descriptor(self, doc, published):
        self._streams[doc["uid"]] = doc.get("name", "primary")
        if self._curve is not None and doc.get("name") == "primary" and self._curve["field"] is None:
            self._curve["field"] = _hinted_field(doc, self._curve["detectors"], self._curve["motor"])

    def _event(self, doc, published):
        stream = self._streams.get(doc["descriptor"])
        data = doc.get("data", {})
        if stream == "primary":
            self.run["done"] += 1
            self._dirty.add("run")
            if self._live is not None:
                self._frames.append([1, published])
            self._note_monitors(data)
            if self._curve is not None and self._curve["field"] in data and self._curve["motor"] in data:
                self._curve["x"].append(float(data[self._curve["motor"]]))
                self._curve["y"].append(float(data[self._curve["field"]]))
                self._dirty.add("curve")
        elif stream == "baseline":
            machine = {k: v for k, v in data.items() if k.startswith("machine_")}
            if machine:
                self.beam.update(machine, machine_time=doc.get("time"))
                self._dirty.add("beam")
        elif stream == "suspensions":
            record = {k.removeprefix("suspension_"): v for k, v in data.items()}
            self.beam.setdefault("suspensions", []).append({**record, "run": self.run["uid"]})
            self.beam["suspensions"] = self.beam["suspensions"][-10:]
            self._dirty.add("beam")

    def _stream_resource(self, doc, published):
        self._image_key[doc["uid"]] = doc.get("data_key")

    def _stream_datum(self, doc, published):
        if self._streams.get(doc["descriptor"]) != "primary":
            return
        n = int(doc["seq_nums"]["stop"]) - int(doc["seq_nums"]["start"])
        if self._live is not None and self._image_key.get(doc["stream_resource"]) == self._live.field:
            self.run["done"] += n
            self._frames.append([n, published])
            self._dirty.add("run")

    def _stop(self, doc, published):
        self.run.update(exit_status=doc.get("exit_status"), reason=doc.get("reason", ""))
        self._dirty.add("run")

    def _note_monitors(self, data):
        monitors = {k: v for k, v in data.items() if k.startswith("mon") and isinstance(v, (int, float))}
        if monitors:
            self.beam.update(monitor=monitors)
            self._dirty.add("beam")

    # -- messages ----------------------------------------------------------------------
    def flush(self, now: float | None = None) -> list[tuple[str, object]]:
        """After a batch: the page's messages due, ``[(kind, dict or bytes), ...]``."""
        now = time.monotonic() if now is None else now
        ended = self.run is not None and self.run["exit_status"] is not None
        out = []
        if self._live is not None:
            self._live.flush()
            self._note_reduced()
            if self._live is not None and self._due("maps", now, ended):
                out.append(("maps", self._maps_message()))
        if self._curve is not None and self._due("curve", now, ended):
            out.append(("curve", self._curve_message()))
        for kind in ("run", "beam"):
            if kind in self._dirty:
                self._dirty.discard(kind)
                out.append((kind, dict(self.run) if kind == "run" else dict(self.beam)))
        if ended:
            for kind, message in out:
                if kind in ("maps", "curve"):
                    self._keep_figure(self.run["uid"], message)
            self._live = self._curve = None
        return out

    def _due(self, kind, now, ended) -> bool:
        if kind not in self._dirty and not ended:
            return False
        if ended or now - self._last_sent[kind] >= self.min_interval_s:
            self._last_sent[kind] = now
            self._dirty.discard(kind)
            return True
        return False

    def _note_reduced(self):
        """Move the frames now in the maps from the waiting list to the latencies of the next message."""
        live = self._live
        if live.declined is not None:
            self._live = None
            return
        done = int(live.n_frames) + int(getattr(live, "off_grid", 0))
        new, self._reduced = done - self._reduced, done
        if new > 0:
            self._dirty.add("maps")
        while new > 0 and self._frames:
            entry = self._frames[0]
            take = min(new, entry[0])
            if entry[1] is not None:
                self._latency.append([take, entry[1]])
            entry[0] -= take
            new -= take
            if not entry[0]:
                self._frames.popleft()

    def _maps_message(self) -> bytes:
        ds = self._live.maps()
        arrays = {name: ds[name].values for name in MAP_FIELDS}
        header = {"type": "maps", "run": self.run["uid"], "scan_id": self.run["scan_id"],
                  "n_frames": int(ds.attrs["n_frames"]), "total": self.run["total"],
                  "finished": self.run["exit_status"] is not None,
                  "x": [float(ds.x.values[0]), float(ds.x.values[-1])],
                  "y": [float(ds.y.values[0]), float(ds.y.values[-1])],
                  "units": {name: ds[name].attrs.get("units", "") for name in MAP_FIELDS},
                  "latency": self._latency, "sent": time.time()}
        self._latency = []
        return encode(header, arrays)

    def _curve_message(self) -> bytes:
        c = self._curve
        header = {"type": "curve", "run": self.run["uid"], "scan_id": self.run["scan_id"], "motor": c["motor"],
                  "field": c["field"], "total": self.run["total"], "finished": self.run["exit_status"] is not None}
        return encode(header, {"x": c["x"], "y": c["y"]})

    def _keep_figure(self, uid, message):
        self.figures[uid] = message
        self.figures.move_to_end(uid)
        while len(self.figures) > self.keep_figures:
            self.figures.popitem(last=False)


def _total(start: dict) -> int | None:
    """The points a run will take, as its start document says (``num_points``, else the shape)."""
    if isinstance(start.get("num_points"), int):
        return start["num_points"]
    shape = start.get("shape")
    if isinstance(shape, (list, tuple)) and shape and all(isinstance(n, int) for n in shape):
        return int(np.prod(shape))
    return None


def _curve_for(start: dict) -> dict | None:
    """A curve for a 1D scan (motors named, one dimension), else None."""
    motors, shape = start.get("motors") or [], start.get("shape") or [0]
    dimensions = (start.get("hints") or {}).get("dimensions") or [()]
    if not motors or len(shape) != 1 or len(dimensions) != 1:
        return None
    return {"motor": motors[0], "detectors": list(start.get("detectors") or []), "field": None, "x": [], "y": []}


def _hinted_field(descriptor: dict, detectors: list, motor: str) -> str | None:
    """The counter a 1D scan plots: the first hinted field of its detectors, a ROI counter first."""
    hints = descriptor.get("hints", {})
    fields = [f for det in detectors for f in hints.get(det, {}).get("fields", []) if f != motor]
    fields.sort(key=lambda f: "roistat" not in f)
    return fields[0] if fields else None
