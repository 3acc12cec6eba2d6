"""What a fly scanner reports of each line attempt: :class:`FlyLineReport`, and the ``lines`` stream.

The flyer counts every attempt once its sweep is over (pulses emitted, positions captured, frames
written, frames dropped) and keeps the report; :class:`LineAttempts` hands the attempts not yet
documented to bluesky's ``collect`` as events of the ``lines`` stream (``fly_line_*`` fields), so a
run names every row its files hold, retried attempts included.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

__all__ = ["FlyLineReport", "LineAttempts"]


@dataclass(frozen=True)
class FlyLineReport:
    """One line attempt, counted.

    ``expected`` points were asked; ``pulses`` emitted, ``positions`` captured, ``frames`` written and
    ``dropped`` lost by the detector. ``image_file``/``pcap_file``: the run's detector and capture files
    (as this computer reads them); ``image_first``/``pcap_first``: the attempt's first frame and first
    capture in them (its ``frames`` and ``positions`` follow). Times in s from the stage's ``Go``:
    ``sweep_s`` until the stage stopped, ``duration_s`` until the frames were on disk and counted;
    ``kickoff_s`` the arming before ``Go``. ``beam_lost``: the beam was down at some time between the
    kickoff and the end of the sweep (the scanner's :class:`~braggscope.devices.machine.BeamWatch`).
    ``retry``: the earlier short attempts of the line (``max_retries`` limits them; beam losses do not
    count), ``beam_retries_left``: how many more times the plan flies the line if the beam is lost.
    ``writer_error``: the detector's file writer's message when it failed (``HDF1:WriteStatus``); a line
    cannot be flown again then.
    """

    eta_index: int
    row: int
    attempt: int
    max_retries: int
    expected: int
    pulses: int
    positions: int
    frames: int
    dropped: int
    image_file: str
    pcap_file: str
    image_first: int
    pcap_first: int
    duration_s: float
    sweep_s: float
    kickoff_s: float
    beam_lost: bool = False
    retry: int | None = None
    beam_retries_left: int = 0
    writer_error: str = ""

    @property
    def complete(self) -> bool:
        """Every point has its pulse, its captured position and its frame, none dropped."""
        return self.pulses == self.positions == self.frames == self.expected and self.dropped == 0

    @property
    def accepted(self) -> bool:
        """Complete, flown with beam all along, its frames written."""
        return self.complete and not self.beam_lost and not self.writer_error

    @property
    def status(self) -> str:
        """``"accepted"`` (in the primary stream), ``"superseded"`` (short or without beam, flown again: its
        rows stay in the files, named by the ``lines`` stream only), ``"short"`` (short after the last
        retry), ``"no beam"`` (the beam lost on the last flight the plan allows) or ``"write error"`` (the
        detector could not write its frames: the run stops)."""
        if self.accepted:
            return "accepted"
        if self.writer_error:
            return "write error"
        if self.beam_lost:
            return "superseded" if self.beam_retries_left > 0 else "no beam"
        retry = self.attempt if self.retry is None else self.retry
        return "short" if retry >= self.max_retries else "superseded"

    def counts(self) -> str:
        """The counts in words, for an error message."""
        lost = "; the beam was lost during the line" if self.beam_lost else ""
        return (f"{self.pulses} pulses, {self.positions} positions, {self.frames} frames of {self.expected}, "
                f"{self.dropped} dropped{lost}")


#: Fields of the ``lines`` stream (``<name>_<field>``) and their event-model dtype.
LINE_FIELDS = {"eta_index": "integer", "row": "integer", "attempt": "integer", "expected": "integer",
               "pulses": "integer", "positions": "integer", "frames": "integer", "dropped": "integer",
               "accepted": "integer", "status": "string", "image_file": "string", "pcap_file": "string",
               "image_first": "integer", "pcap_first": "integer", "duration_s": "number", "sweep_s": "number",
               "beam_lost": "integer", "writer_error": "string"}


class LineAttempts:
    """The ``lines`` stream: one event per counted attempt, handed to ``collect`` once (bluesky's
    ``EventCollectable``; declare it with ``declare_stream(attempts, name="lines", collect=True)``).

    Parameters
    ----------
    name : str
        Prefix of the fields (``fly_line`` -> ``fly_line_row``, ...).
    parent : object
        The flyer that counts the attempts.
    """

    def __init__(self, name: str = "fly_line", parent=None):
        self.name, self.parent = name, parent
        self._queue: deque = deque()

    def add(self, report: FlyLineReport) -> None:
        """Queue a counted attempt for the next ``collect``."""
        self._queue.append((time.time(), report))

    def clear(self) -> None:
        self._queue.clear()

    def describe_collect(self) -> dict:
        source = f"flyer:{getattr(self.parent, 'name', self.name)}"
        return {f"{self.name}_{field}": {"source": source, "dtype": dtype, "shape": []}
                for field, dtype in LINE_FIELDS.items()}

    def collect(self):
        """Events of the attempts counted since the last call, in their order."""
        while self._queue:
            stamp, report = self._queue.popleft()
            values = {field: getattr(report, field) for field in LINE_FIELDS}
            values["accepted"], values["beam_lost"] = int(report.accepted), int(report.beam_lost)
            data = {f"{self.name}_{field}": value for field, value in values.items()}
            yield {"data": data, "timestamps": dict.fromkeys(data, stamp), "time": stamp}

    def read_configuration(self) -> dict:
        return {}

    def describe_configuration(self) -> dict:
        return {}
