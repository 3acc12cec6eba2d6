"""External-trigger acquisition of the simulated Maxipix (fly scans): one frame per trigger pulse.

The trigger unit's pulses arrive on the IOC's event loop (:meth:`ExternalAcquisition.trigger`);
the dead-time check is made there, at once, and each accepted frame is queued for one
writer thread, which renders it at the beam's mean flux over its exposure (once the exposure is
over), composes and compresses it (:mod:`.frame_chunks`) and
appends its chunks to the open HDF5 file with ``write_direct_chunk``. The file is flushed
every :data:`FLUSH_S` and when the last frame is in, and only then are the counts posted
(``HDF1:NumCaptured_RBV``, ``cam1:NumImagesCounter_RBV``, the array counters): a count a client
reads never includes a frame that is not in the file. ``Acquire_RBV`` returns to Done
after the final flush.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np

__all__ = ["FLUSH_S", "ExternalAcquisition"]

#: Longest time between two flushes of the frame file while frames arrive (s).
FLUSH_S = 0.05
_IDLE = object()


class ExternalAcquisition:
    """One armed acquisition: ``NumImages`` frames, one per accepted pulse.

    Parameters
    ----------
    ioc : MaxipixIOC
        Its ``cam``/``hdf`` groups, renderers (``render_frame``) and chunk pool.
    loop : asyncio event loop
        The IOC's loop (posts and the completion go through it).
    """

    def __init__(self, ioc, loop):
        cam = ioc.cam
        self.ioc, self.loop = ioc, loop
        self.wanted = max(int(cam.num_images.value), 1)
        self.exposure = float(cam.acquire_time.value)
        self.dead_s = self.exposure + float(cam.readout_time.value)
        self.unique_id = int(cam.array_counter.value)
        self.accepted = self.pulses = self.dropped = 0
        self.last_t = None
        self.stopped = False
        # written by the worker, read on the loop when posting
        self.written = self.last_written_id = self.posted_written = 0
        self.file_count = None
        self.stats = None
        self.error = None
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.finished = loop.create_future()
        self.thread = threading.Thread(target=self._work, daemon=True, name="mpx-external")
        self.thread.start()

    # ---------------------------------------------------------------- on the loop
    def trigger(self, t_s: float, positions: dict, drop: bool = False) -> bool:
        """A pulse at ``t_s`` (s) with the stage at ``positions``: queue its frame, or count it dropped
        (exposure or read-out of the previous frame still running, or ``drop``). Returns whether queued."""
        if self.stopped:
            return False
        self.pulses += 1
        busy = self.last_t is not None and t_s < self.last_t + self.dead_s - 1e-9
        if drop or busy:
            self.dropped += 1
            return False
        self.last_t = t_s
        self.accepted += 1
        self.unique_id += 1
        t_start = time.monotonic()  # the exposure starts now
        if self.ioc.beam is not None:
            self.ioc.beam.exposure_started(t_start)
        self.jobs.put((dict(positions), self.unique_id, t_start))
        if self.accepted >= self.wanted:
            self.stop()
        return True

    def stop(self) -> None:
        """No more frames (all taken, or Acquire = 0): the writer finishes the queued ones and flushes."""
        if not self.stopped:
            self.stopped = True
            self.jobs.put(None)

    # ---------------------------------------------------------------- writer thread
    def _work(self) -> None:
        pending, ids = [], []
        last_flush = time.monotonic()
        try:
            while True:
                try:
                    job = self.jobs.get(timeout=FLUSH_S if pending else None)
                except queue.Empty:
                    job = _IDLE
                if job is None:
                    break
                if job is not _IDLE:
                    positions, unique_id, t_start = job
                    flux = self.ioc.frame_flux(t_start, self.exposure)
                    frame = self.ioc.render_frame(positions, self.exposure, flux)
                    self.stats = frame.stats
                    pending.append(frame)
                    ids.append(unique_id)
                if pending and (job is _IDLE or time.monotonic() - last_flush >= FLUSH_S):
                    self._write(pending, ids)
                    pending, ids = [], []
                    last_flush = time.monotonic()
            self._write(pending, ids)
        except Exception as exc:  # noqa: BLE001 - reported on the loop (WriteMessage, DetectorState Error)
            self.error = exc
        finally:
            self.loop.call_soon_threadsafe(self._finish)

    def _write(self, frames, ids) -> None:
        """Append and flush; then post the counts (the frames are in the file)."""
        hdf = self.ioc.hdf
        with hdf.lock:
            if hdf.h5 is not None and hdf.enable.value == "Enable":
                if frames:
                    self.file_count = self.ioc.append_frames(frames, ids)
                hdf.flush()
        if frames:
            self.written += len(frames)
            self.last_written_id = ids[-1]
            self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self.post()))

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)

    async def post(self) -> None:
        """Post the latest counts (whatever the worker reached: posts may run late, never backwards)."""
        written = self.written
        if written <= self.posted_written:
            return
        new, self.posted_written = written - self.posted_written, written
        cam, hdf = self.ioc.cam, self.ioc.hdf
        await cam.num_images_counter.write(written)
        await cam.array_counter.write(max(int(cam.array_counter.value), self.last_written_id))
        if self.file_count is not None:
            await hdf.frame_written(self.file_count, self.ioc.shape, self.last_written_id, new=new)


def as_uint32(frame: np.ndarray, shape) -> np.ndarray:
    """A renderer's frame checked (shape, non-negative integer counts) and as uint32."""
    frame = np.asarray(frame)
    if frame.shape != tuple(shape):
        raise ValueError(f"renderer returned shape {frame.shape}, expected {tuple(shape)}")
    if frame.dtype.kind == "f" or (frame.dtype.kind == "i" and frame.size and frame.min() < 0):
        raise ValueError("renderer must return non-negative integer counts")
    return frame.astype(np.uint32, copy=False)
