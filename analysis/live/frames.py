"""Resolve file-backed detector frames from bluesky documents, racing the writer.

Two document families are supported:

* ``resource`` / ``datum`` with ``spec == "AD_HDF5"`` (ophyd area detectors):
  the file is ``root/resource_path``, frames are
  ``/entry/data/data[point_number * fpp:(point_number + 1) * fpp]`` with
  ``fpp = resource_kwargs["frame_per_point"]``;
* ``stream_resource`` / ``stream_datum`` (ophyd-async style): the file is the
  path of ``uri`` (``file://`` scheme), the dataset ``parameters["dataset"]``
  and the frames of ``seq_nums[start:stop]`` are rows ``indices[start:stop]``.

The file writer may not have flushed the frame when the event arrives, so each
read is retried with an exponential backoff until ``timeout_s``.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlparse

import numpy as np

__all__ = ["FrameResolver", "read_hdf5_rows", "FrameNotReady"]


class FrameNotReady(TimeoutError):
    """The requested frames did not appear in the file before the timeout."""


def read_hdf5_rows(path, dataset, start, stop, *, timeout_s=10.0, first_wait_s=0.005,
                   max_wait_s=0.5, cache=None):
    """Read rows ``[start, stop)`` of an HDF5 dataset, retrying while the writer catches up.

    Parameters
    ----------
    path : str
        HDF5 file path.
    dataset : str
        Dataset path inside the file, e.g. ``"/entry/data/data"``.
    start, stop : int
        Row range along the first axis (frames).
    timeout_s : float
        Give up (``FrameNotReady``) after this many seconds.
    first_wait_s, max_wait_s : float
        Backoff: the wait doubles from ``first_wait_s`` up to ``max_wait_s``.
    cache : dict, optional
        ``{path: h5py.File}`` of open files to reuse between calls (SWMR files
        are refreshed, others reopened when too short); the caller closes them.
        Default: open and close the file here.

    Returns
    -------
    ndarray, shape (stop - start, rows, cols)
    """
    if not 0 <= int(start) < int(stop):
        raise ValueError(f"need 0 <= start < stop, got start={start!r}, stop={stop!r}")
    own_cache = cache is None
    cache = {} if own_cache else cache
    deadline = time.monotonic() + float(timeout_s)
    wait = float(first_wait_s)
    last_error = "file not found"
    try:
        while True:
            try:
                f = cache.get(path)
                if f is None and os.path.exists(path):
                    f = cache[path] = _open_h5(path)
                if f is not None:
                    dset = _dataset(cache, path, f, dataset)
                    if f.swmr_mode and dset.shape[0] < stop:  # refresh only when the rows are not known yet
                        dset.refresh()
                    if dset.shape[0] >= stop:
                        return read_rows(dset, int(start), int(stop))
                    last_error = f"{dataset} has {dset.shape[0]} frames, need {stop}"
                    _close(cache, path)  # reopen: the file may have been replaced
            except (OSError, KeyError) as exc:  # locked / half written / not yet created
                last_error = f"{type(exc).__name__}: {exc}"
                _close(cache, path)
            now = time.monotonic()
            if now >= deadline:
                raise FrameNotReady(f"frames {start}:{stop} of {path}:{dataset} not ready "
                                    f"after {timeout_s} s ({last_error})")
            time.sleep(min(wait, max(deadline - now, 0.0)))
            wait = min(2.0 * wait, float(max_wait_s))
    finally:
        if own_cache:
            _close(cache, path)


#: HDF5 filter id of Blosc (hdf5plugin / hdf5-blosc): its chunks are plain Blosc buffers.
_BLOSC = 32001
#: Frames read per h5py call on the general path: h5py holds the GIL while HDF5 decompresses, so a
#: line's frames in one call would stall the RunEngine's and Channel Access's threads for tens of ms.
_ROWS_PER_READ = 2


def read_rows(dset, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of a 3-D dataset, decompressed without holding the GIL for long.

    Blosc-compressed datasets chunked one frame deep (the fly-scan detector's layout) are read
    chunk by chunk with ``read_direct_chunk`` and decompressed by numcodecs' Blosc, which releases
    the GIL; anything else is read a few frames per h5py call.
    """
    chunks = dset.chunks
    if dset.ndim == 3 and chunks is not None and chunks[0] == 1 and _filter_ids(dset) == [_BLOSC]:
        return _read_blosc_chunks(dset, start, stop)
    parts = [np.asarray(dset[i:min(i + _ROWS_PER_READ, stop)]) for i in range(start, stop, _ROWS_PER_READ)]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _filter_ids(dset) -> list[int]:
    """The HDF5 filter ids of a dataset's pipeline, in order."""
    plist = dset.id.get_create_plist()
    return [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


def _read_blosc_chunks(dset, start, stop):
    from numcodecs import blosc

    _, rows, cols = dset.shape
    _, cr, cc = dset.chunks
    dtype = dset.dtype
    out = np.empty((stop - start, rows, cols), dtype=dtype)
    for k, i in enumerate(range(start, stop)):
        for r in range(0, rows, cr):
            for c in range(0, cols, cc):
                mask, payload = dset.id.read_direct_chunk((i, r, c))
                if not mask & 1 and cc == cols and r + cr <= rows:  # whole rows: straight into the frame
                    blosc.decompress(payload, out[k, r:r + cr])
                    continue
                raw = payload if mask & 1 else blosc.decompress(payload)  # bit 0 set: stored unfiltered
                block = np.frombuffer(raw, dtype=dtype).reshape(cr, cc)  # edge chunks are stored whole
                out[k, r:r + cr, c:c + cc] = block[:rows - r, :cols - c]
    return out


def _open_h5(path):
    import h5py
    import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 filters)

    # SWMR read when the writer allows it (consistent while the file grows); the
    # default locking first, because HDF5 refuses to reopen a file this process
    # already has open (e.g. an in-process writer) with other locking flags;
    # locking=False last, for files on file systems without locks.
    error = None
    for kwargs in ({"swmr": True}, {}, {"locking": False}):
        try:
            return h5py.File(path, "r", **kwargs)
        except OSError as exc:
            error = exc
    raise error


def _dataset(cache, path, f, name):
    """``f[name]``, kept in ``cache`` with the file (a path lookup costs ~0.2 ms, a refresh ~0.03 ms)."""
    key = (path, name)
    dset = cache.get(key)
    if dset is None:
        dset = cache[key] = f[name]
    return dset


def _close(cache, path):
    for key in [k for k in cache if isinstance(k, tuple) and k[0] == path]:
        del cache[key]  # the file's datasets go with it
    f = cache.pop(path, None)
    if f is not None:
        try:
            f.close()
        except Exception:  # already closed / invalid handle
            pass


class FrameResolver:
    """Keep resource/datum documents and turn datum ids into frames.

    Parameters
    ----------
    timeout_s : float
        Per-read retry budget in seconds (see :func:`read_hdf5_rows`).
    root_map : dict, optional
        ``{old_root: new_root}`` to relocate files written elsewhere.
    """

    def __init__(self, timeout_s: float = 10.0, root_map=None):
        self.timeout_s = float(timeout_s)
        self.root_map = dict(root_map or {})
        self._resources = {}
        self._datums = {}
        self._stream_resources = {}
        self._files = {}

    # -- documents ---------------------------------------------------------
    def resource(self, doc):
        self._resources[doc["uid"]] = doc

    def datum(self, doc):
        self._datums[doc["datum_id"]] = doc

    def datum_page(self, doc):
        for i, datum_id in enumerate(doc["datum_id"]):
            kwargs = {k: v[i] for k, v in doc["datum_kwargs"].items()}
            self._datums[datum_id] = {"datum_id": datum_id, "resource": doc["resource"],
                                      "datum_kwargs": kwargs}

    def stream_resource(self, doc):
        self._stream_resources[doc["uid"]] = doc

    def stream_resource_of(self, stream_datum: dict) -> dict:
        """The ``stream_resource`` document a ``stream_datum`` refers to ({} when not seen)."""
        return self._stream_resources.get(stream_datum["stream_resource"], {})

    def clear(self):
        """Forget the documents and close the files kept open."""
        for path in [p for p in self._files if not isinstance(p, tuple)]:
            _close(self._files, path)
        self._resources.clear()
        self._datums.clear()
        self._stream_resources.clear()

    # -- reads -------------------------------------------------------------
    def frame(self, datum_id):
        """The frame (rows, cols) of an ``AD_HDF5`` datum (summed if fpp > 1)."""
        try:
            datum = self._datums[datum_id]
        except KeyError:
            raise KeyError(f"datum_id {datum_id!r}: no datum document seen") from None
        try:
            res = self._resources[datum["resource"]]
        except KeyError:
            raise KeyError(f"resource {datum['resource']!r}: no resource document seen") from None
        spec = res.get("spec")
        if spec != "AD_HDF5":
            raise ValueError(f"resource spec {spec!r} is not supported (only 'AD_HDF5')")
        fpp = int(res.get("resource_kwargs", {}).get("frame_per_point", 1))
        point = int(datum["datum_kwargs"]["point_number"])
        path = self._path(res.get("root", ""), res["resource_path"])
        rows = read_hdf5_rows(path, "/entry/data/data", point * fpp, (point + 1) * fpp,
                              timeout_s=self.timeout_s, cache=self._files)
        return rows[0] if fpp == 1 else rows.sum(axis=0)

    def stream_frames(self, doc):
        """``(seq_nums, frames)`` of a ``stream_datum`` document."""
        try:
            res = self._stream_resources[doc["stream_resource"]]
        except KeyError:
            raise KeyError(f"stream_resource {doc['stream_resource']!r} not seen") from None
        path = self._path("", urlparse(res["uri"]).path)
        dataset = res.get("parameters", {}).get("dataset", "/entry/data/data")
        i0, i1 = int(doc["indices"]["start"]), int(doc["indices"]["stop"])
        s0, s1 = int(doc["seq_nums"]["start"]), int(doc["seq_nums"]["stop"])
        if i1 - i0 != s1 - s0:
            raise ValueError(f"stream_datum {doc['uid']}: indices and seq_nums differ in length")
        frames = read_hdf5_rows(path, dataset, i0, i1, timeout_s=self.timeout_s,
                                cache=self._files)
        return np.arange(s0, s1), frames

    def _path(self, root, rel):
        for old, new in self.root_map.items():
            if root == old:
                root = new
        return os.path.join(root, rel) if root else rel
