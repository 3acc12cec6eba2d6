"""Progress of a run as a bar: points of a step scan's events or of a fly scan's stream data."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

from braggscope.storage.fly_stream import streamed_only

__all__ = ["PointProgress", "StreamedRunsAsProgress"]


class PointProgress:
    """A tqdm bar per run: points of the primary stream against the start document's ``num_points``.

    A step scan's points are its events; a fly scan sends none, its points are the frames its
    ``stream_datum`` documents announce (the highest sequence number so far: the image and the
    captured positions of a line announce the same range). A run that announces no ``num_points``
    (a search whose length depends on what it finds, such as an operando campaign's tracking, with a
    stream per search) counts the events of all its streams but the baseline and the monitors.
    """

    def __init__(self):
        self._bar = None
        self._counted = set()
        self._every_stream = False

    def __call__(self, name, doc):
        if name == "start":
            label = doc.get("plan_name", "run") + (f" ({doc['purpose']})" if doc.get("purpose") else "")
            self._every_stream = doc.get("num_points") is None
            self._bar = tqdm(total=doc.get("num_points"), desc=label, unit="pt", file=sys.stdout, leave=True)
        elif name == "descriptor" and _counts(doc.get("name"), self._every_stream):
            self._counted.add(doc["uid"])
        elif name == "event" and self._bar is not None and doc["descriptor"] in self._counted:
            self._bar.update(1)
        elif name == "stream_datum" and self._bar is not None and doc.get("descriptor") in self._counted:
            done = int(doc["seq_nums"]["stop"]) - 1  # the RunEngine numbers the frames 1, 2, ... across lines
            if done > self._bar.n:
                self._bar.update(done - self._bar.n)
        elif name == "stop" and self._bar is not None:
            self._bar.set_postfix_str(doc.get("exit_status", ""))
            self._bar.close()
            self._bar = None


def _counts(stream, every_stream: bool) -> bool:
    """Whether the events of ``stream`` are points (a monitor's stream is ``<signal>_monitor``)."""
    if stream == "primary":
        return True
    return every_stream and stream not in (None, "baseline") and not stream.endswith("_monitor")


class StreamedRunsAsProgress:
    """Forward a run's documents to a table callback (the session's ``BestEffortCallback``), except a run
    whose primary stream is all stream data (a fly scan): its table would have no row to show, so from
    that descriptor on the callback gets only the stop, and a :class:`PointProgress` bar counts the points.

    Parameters
    ----------
    table : callable
        ``table(name, doc)``.
    """

    def __init__(self, table):
        self.table = table
        self._start = None
        self._progress = None

    def __call__(self, name, doc):
        if name == "start":
            self._start, self._progress = doc, None
        elif name == "descriptor" and doc.get("name") == "primary" and self._progress is None \
                and streamed_only(doc):
            self._progress = PointProgress()
            self._progress("start", self._start)
        if self._progress is None:
            return self.table(name, doc)
        self._progress(name, doc)
        if name == "stop":
            self._progress = None
            return self.table(name, doc)
        return None
