"""The two files of a fly run: the detector's frames and the position capture's, open from stage to unstage.

One file of each per run, every line appended, rather than a file per line: the catalog lists a field's
files in every update, so a file per line made each update, and the run's end, grow with the map
(docs/fly.md, "One file per run").
"""

from __future__ import annotations

import contextlib
import functools
import operator
import time
from pathlib import PurePosixPath

__all__ = ["RunFiles", "readable_path"]


class RunFiles:
    """Open, count and close a fly run's detector file and position-capture file.

    Parameters
    ----------
    detector : braggscope.devices.maxipix.Maxipix
        Its HDF5 plugin streams every line's frames into one compressed file.
    pcap : the fly hardware's ``PCAP:`` block
        Writes the captured positions and times beside it.
    owner : str
        The flyer's name, for error messages.
    """

    def __init__(self, detector, pcap, owner: str):
        self.detector, self.pcap, self.owner = detector, pcap, owner
        self.paths: dict = {}  # "image", "pcap" -> the open file, as this computer reads it
        self.rows = {"image": 0, "pcap": 0}  # frames and captures in them so far (where the next line starts)
        self._saved: dict = {}

    def open(self) -> None:
        """Detector to external trigger, both files opened; raises naming why a file did not open (the
        detector's settings are restored then)."""
        det, hdf, pcap = self.detector, self.detector.hdf5, self.pcap
        self._saved = {sig: sig.get() for sig in (det.cam.trigger_mode, det.cam.image_mode, hdf.file_write_mode,
                                                   hdf.auto_increment, hdf.num_capture)}
        write = hdf.write_path_template
        run_tag = f"fly_{int(time.time() * 1e3) % 10**9:09d}"
        det.cam.acquire.set(0).wait(10)
        _set_all(((det.cam.trigger_mode, 1), (det.cam.image_mode, 1), (hdf.enable, "Enable"),
                  (hdf.file_path, write), (hdf.file_name, run_tag), (hdf.file_template, "%s%s_%6.6d.h5"),
                  (hdf.file_number, 0), (hdf.auto_increment, 1), (hdf.file_write_mode, 2), (hdf.num_capture, 0),
                  (pcap.file_path, write.rstrip("/") or "/"), (pcap.file_name, run_tag + "_pcap"),
                  (pcap.file_number, 0)))
        self.rows = {"image": 0, "pcap": 0}
        self.paths = {}
        try:
            self._capture()
        except Exception:
            self.close()
            raise

    def _capture(self) -> None:
        hdf, pcap = self.detector.hdf5, self.pcap
        hdf.capture.put(1, wait=True, timeout=10)
        if int(hdf.write_status.get(use_monitor=False)) != 0:
            raise RuntimeError(f"{self.owner}: the detector did not open its file in {hdf.file_path.get()!r}: "
                               f"{hdf.write_message.get(use_monitor=False)}; check detector.write_path")
        self.paths["image"] = self.readable(hdf.full_file_name.get(use_monitor=False))
        pcap.capture.put(1, wait=True, timeout=10)  # a refused put leaves Capture at 0
        if int(pcap.capture.get(use_monitor=False)) != 1:
            raise RuntimeError(f"{self.owner}: the position capture did not open a file in "
                               f"{pcap.file_path.get()!r} (does the directory exist there?)")
        self.paths["pcap"] = self.readable(pcap.full_file_name.get(use_monitor=False))

    def next_rows(self, frames: int, captures: int) -> tuple[dict, dict]:
        """Where the last line's rows start in the files, and how many it added (``image``: frames,
        ``pcap``: captures), from the files' ``frames`` and ``captures`` now; the next line starts after
        them, a short line's rows included."""
        in_files = {"image": int(frames), "pcap": int(captures)}
        first, self.rows = self.rows, in_files
        return first, {key: in_files[key] - first[key] for key in in_files}

    def close(self) -> None:
        """Close both files (their rows stay; a failure to close is not raised: the error that ended the
        run matters more, and the next ``open`` closes them) and restore the detector's settings."""
        with contextlib.suppress(Exception):  # the next open closes them
            for capture in (self.detector.hdf5.capture, self.pcap.capture):
                if capture.get(use_monitor=False) != 0:
                    capture.set(0).wait(10)
        saved, self._saved = self._saved, {}
        _set_all(saved.items())

    def readable(self, path: str) -> str:
        """A file path as this computer sees it (the detector's write path -> read path)."""
        return readable_path(self.detector, path)


def readable_path(detector, path: str) -> str:
    """A file the ``detector``'s IOC wrote (``path`` as it names it) as this computer sees it: its write path
    template replaced by its read path template."""
    hdf = detector.hdf5
    write, read = hdf.write_path_template, hdf.read_path_template
    if write != read and path.startswith(write):
        path = read + path[len(write):]
    return str(PurePosixPath(path))


def _set_all(targets, timeout: float = 10.0) -> None:
    """Set independent settings together and wait for them all (one wait instead of one per setting)."""
    statuses = [sig.set(value) for sig, value in targets]
    if statuses:
        functools.reduce(operator.and_, statuses).wait(timeout)
