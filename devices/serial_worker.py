"""Run a device's operations one after another on its own thread, each reported by an ophyd status.

A fly scanner re-arms its detector for the next line while the plan documents the last one; the next
line's set-up must come after that arming. Queuing every operation on one thread gives that order
without a flag or an event per operation, and keeps the RunEngine's thread free while an operation
waits on the hardware.
"""

from __future__ import annotations

import queue
import threading

from ophyd.status import DeviceStatus

__all__ = ["SerialWorker"]


class SerialWorker:
    """A daemon thread that runs queued calls in order.

    Parameters
    ----------
    device : ophyd-like object with a ``name``
        The device the statuses belong to.
    """

    def __init__(self, device):
        self.device = device
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()

    def run(self, work, *args) -> DeviceStatus:
        """Queue ``work(*args)``; the status finishes when it returns, or fails with what it raised."""
        status = DeviceStatus(self.device)
        self._queue.put((work, args, status))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name=f"{self.device.name}-worker")
                self._thread.start()
        return status

    def _loop(self) -> None:
        while True:
            work, args, status = self._queue.get()
            try:
                work(*args)
            except Exception as exc:  # noqa: BLE001 - reported through the status
                status.set_exception(exc)
            else:
                status.set_finished()
