"""The maps of ``braggscope live``: live SXDM maps in a process of their own, fed by the document bus.

The acquisition publishes every run's documents on NATS JetStream
(:mod:`braggscope.app.bus`); ``braggscope live`` (:mod:`braggscope.app.cli.live`) subscribes
with a durable pull consumer (:mod:`braggscope.app.bus.pull`) and feeds each ``sxdm_map`` run to a
:class:`braggscope.analysis.live.LiveSXDM` (:class:`LiveConsumer`, here),
refreshes one PNG of the maps in place while the run goes on
(:mod:`braggscope.app.bus.png`) and writes a maps file per run (NeXus-style HDF5,
``load_maps`` reads it). Frames are read from the detector's HDF5 files named
by the resource documents; ``--path-map OLD=NEW`` relocates them for a host
that mounts the detector directory elsewhere.

Resuming: messages are acknowledged only once their documents are in the maps.
A restarted consumer (same ``--durable`` name) replays the run in progress
from its start document and continues after the last acknowledged message;
finished runs are not redone.
"""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from braggscope.analysis.live import LiveSXDM
from braggscope.analysis.sxdm.files import save_maps
from braggscope.app.bus.format import HEADER_INDEX, HEADER_RUN, PartJoiner, decode_timed_batch
from braggscope.app.bus.png import FigureWriter
from braggscope.core.atomic import atomic_path

__all__ = ["LiveConsumer", "map_path"]


def map_path(out_dir, start_doc) -> Path:
    """The maps file of a run: ``<out>/scan<scan_id>_<uid[:8]>_live_maps.h5``."""
    return Path(out_dir) / f"scan{start_doc.get('scan_id', 0)}_{start_doc['uid'][:8]}_live_maps.h5"


class LiveConsumer:
    """Feed bus messages to one :class:`LiveSXDM` per run; write the figure and the maps.

    Parameters
    ----------
    out_dir : path-like
        Directory of ``live_maps.png`` (refreshed in place) and the maps files.
    path_map : list of (str, str)
        ``(old_prefix, new_prefix)`` applied to the detector file paths.
    live_kwargs : dict
        Keyword arguments of ``LiveSXDM``.
    png_interval_s : float
        Least time between two PNG refreshes (s).
    echo : callable
        Where the one-line reports go (default ``print`` to stdout, flushed).
    """

    def __init__(self, out_dir, *, path_map=(), live_kwargs=None, png_interval_s=1.0, echo=None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.png = self.out_dir / "live_maps.png"
        self.path_map = [(str(o).rstrip("/"), str(n).rstrip("/")) for o, n in path_map]
        self.live_kwargs = dict(live_kwargs or {})
        self.png_interval_s = float(png_interval_s)
        self.echo = echo or (lambda line: print(line, flush=True))
        self.finished = []      # (run uid, maps path or None)
        self.documents = 0
        self._last_index = {}   # run uid -> index of the last document fed
        self._skipped = set()   # runs seen without their start document
        self._live = self._start = None
        self._figure = FigureWriter(self.png)
        self._declined = False
        self._primary = set()
        self._event_times = []
        self._latency = []
        self._n_events = 0
        self._stream_keys = {}  # stream resource uid -> its data key
        self._stream_times = deque()  # [frames, time published] of each image stream datum not yet mapped
        self._n_stream_frames = 0
        self._stream_done = 0  # frames of stream datums reduced (mapped or off the grid)
        self._stream_off = 0
        self._last_png = -np.inf
        self._joiner = PartJoiner()

    # -- messages --------------------------------------------------------------
    def feed_message(self, headers, payload) -> None:
        """Feed one bus message; documents already fed (a re-delivery) are skipped."""
        payload = self._joiner.add(headers, payload)
        if payload is None:
            return  # a part of a document sent in parts: fed with its last part
        run_uid = (headers or {}).get(HEADER_RUN)
        first = int((headers or {}).get(HEADER_INDEX, 0))
        last = self._last_index.get(run_uid, -1)
        if first > 0 and last < 0 and run_uid not in self._skipped:  # its start came before this consumer
            self._skipped.add(run_uid)
            self.echo(f"braggscope live: run {str(run_uid)[:8]} began before this consumer subscribed: skipped "
                      "(--deliver all, with a new --durable name, maps it from the stream)")
        for k, (name, doc, published) in enumerate(decode_timed_batch(payload)):
            if first + k <= last:
                continue
            if name == "start" or (self._start is not None and self._start["uid"] == run_uid):
                self.feed(name, doc, published)  # (a document of another run than the current one is not fed)
            self._last_index[run_uid] = first + k

    def feed(self, name, doc, published=None) -> None:
        """Feed one document; ``published``: when the acquisition handed it to the publisher (s since
        the epoch), the start of the latency of the frames a stream datum delivers."""
        self.documents += 1
        if name == "start":
            self._begin(doc)
            return
        if self._live is None:
            return
        if name == "stop":
            self._finish(doc)
            return
        if self._declined:
            return
        if name == "resource":
            doc = self._relocate_resource(doc)
        elif name == "stream_resource":
            self._stream_keys[doc["uid"]] = doc.get("data_key")
            doc = self._relocate_stream_resource(doc)
        elif name == "descriptor" and doc.get("name") == "primary":
            self._primary.add(doc["uid"])
        elif name == "event" and doc["descriptor"] in self._primary:
            self._event_times.append(float(doc["time"]))
            self._n_events += 1
        elif (name == "stream_datum" and doc["descriptor"] in self._primary
              and self._stream_keys.get(doc["stream_resource"]) == getattr(self._live, "field", None)):
            n = int(doc["seq_nums"]["stop"]) - int(doc["seq_nums"]["start"])
            self._n_stream_frames += n
            if published is not None:
                self._stream_times.append([n, float(published)])
        self._call(name, doc)

    def close(self, timeout=60.0) -> None:
        """Wait for the figure thread to draw what is due (the last run's final figure)."""
        self._figure.wait(timeout)

    def flush(self) -> None:
        """After a batch of messages: reduce pending frames, note latencies, refresh the PNG if due."""
        if not self._mapping():
            return
        self._live.flush()
        if self._check_declined():
            return
        now = time.time()
        self._latency.extend(now - t for t in self._event_times)
        self._event_times.clear()
        self._stream_latency(now)
        # at most one drawing per png_interval_s, and the figure thread busy a quarter of the time at most
        # (it takes the GIL from the maps: on a loaded host a drawing can take seconds)
        interval = max(self.png_interval_s, 4.0 * self._figure.draw_s)
        if time.monotonic() - self._last_png >= interval and self._live.n_frames:
            self._figure.request(self._live)  # drawn on the figure thread: documents go on meanwhile
            self._last_png = time.monotonic()

    def _stream_latency(self, now):
        """Latencies of the frames stream datums delivered that are now in the maps.

        A fly frame is reduced once its line's captured positions are in too, in the order of its
        stream datum, so the frames reduced since the last call are taken from the front of the queue
        of stream datums (those of one datum share its time). Frames off the grid are not in the maps:
        they are taken, with no latency.
        """
        live = self._live
        off = int(getattr(live, "off_grid", 0))
        done = live.n_frames + off - self._n_events  # frames of the events are all reduced at a flush
        new, mapped = done - self._stream_done, done - self._stream_done - (off - self._stream_off)
        self._stream_done, self._stream_off = done, off
        while new > 0 and self._stream_times:
            entry = self._stream_times[0]
            take = min(new, entry[0])
            timed = min(take, max(mapped, 0))
            self._latency.extend([now - entry[1]] * timed)
            mapped -= timed
            entry[0] -= take
            new -= take
            if not entry[0]:
                self._stream_times.popleft()

    def _mapping(self) -> bool:
        """Whether the current run is being mapped (accepted by LiveSXDM, not declined)."""
        return (self._live is not None and not self._declined and getattr(self._live, "active", True)
                and getattr(self._live, "declined", None) is None)

    def _call(self, name, doc):
        try:
            self._live(name, doc)
        except Exception as exc:  # noqa: BLE001 - a LiveSXDM that raises instead of declining
            self._live.declined = f"{type(exc).__name__}: {exc}"
        self._check_declined()

    def _check_declined(self) -> bool:
        reason = getattr(self._live, "declined", None)
        if reason is not None and not self._declined:
            self._declined = True
            hint = ("; check --path-map for this host" if any(w in reason for w in ("not ready", "No such file"))
                    else "")
            self.echo(f"braggscope live: run {self._start['uid'][:8]} ({self._start.get('plan_name', '?')}) "
                      f"not mapped: {reason}{hint}")
        return self._declined

    # -- runs ------------------------------------------------------------------
    def _begin(self, doc):
        kwargs = {**self.live_kwargs, "announce": False}  # the reason is echoed here, once
        self._live, self._start, self._declined = LiveSXDM(**kwargs), doc, False
        self._primary.clear()
        self._event_times.clear()
        self._latency = []
        self._n_events = 0
        self._stream_keys.clear()
        self._stream_times.clear()
        self._n_stream_frames = self._stream_done = self._stream_off = 0
        self._last_png = -np.inf
        self._call("start", doc)
        if not self._declined:
            self.echo(f"braggscope live: run {doc['uid'][:8]} (scan {doc.get('scan_id', '?')}): "
                      f"figure refreshed in {self.png}")

    def _finish(self, doc):
        path = None
        if self._mapping():
            self.flush()
        if self._mapping():
            self._live("stop", doc)
            self._figure.request(self._live)  # the final figure, drawn on the figure thread
            maps = self._live.maps()
            lat = np.asarray(self._latency, float)
            if lat.size:
                maps.attrs.update(latency_median_s=float(np.median(lat)),
                                  latency_p99_s=float(np.percentile(lat, 99)), latency_max_s=float(lat.max()))
            maps.attrs.update(run_uid=self._start["uid"], exit_status=str(doc.get("exit_status", "")),
                              n_events=int(self._n_events), n_stream_frames=int(self._n_stream_frames),
                              n_frames=int(self._live.n_frames), n_latencies=int(lat.size))
            path = map_path(self.out_dir, self._start)
            with atomic_path(path) as tmp:
                save_maps(maps, tmp)
            lat_txt = (f", document-to-map latency median {1e3 * np.median(lat):.0f} ms, "
                       f"p99 {1e3 * np.percentile(lat, 99):.0f} ms" if lat.size else "")
            self.echo(f"braggscope live: run {self._start['uid'][:8]} {doc.get('exit_status', '')}: maps in "
                      f"{path} ({self._live.n_frames} frames{lat_txt})")
        self.finished.append((self._start["uid"], path))
        self._live = None

    # -- relocation --------------------------------------------------------------
    def map_file(self, path: str) -> str:
        """``path`` with the first matching ``--path-map`` prefix replaced."""
        for old, new in self.path_map:
            if path == old or path.startswith(old + "/"):
                return new + path[len(old):]
        return path

    def _relocate_resource(self, doc):
        full = os.path.join(doc.get("root", "") or "", doc["resource_path"])
        mapped = self.map_file(full)
        return doc if mapped == full else {**doc, "root": "", "resource_path": mapped}

    def _relocate_stream_resource(self, doc):
        path = urlparse(doc["uri"]).path
        mapped = self.map_file(path)
        return doc if mapped == path else {**doc, "uri": f"file://localhost{mapped}"}
