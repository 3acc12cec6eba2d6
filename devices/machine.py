"""The storage ring and the front-end shutter as a beamline sees them, and a watch on the beam.

:class:`Machine` reads the ring current, the refill countdown and the shutter (``pv.machine``; the
simulated machine is :mod:`braggscope.simulators.ioc_machine`); it is recorded in every run's
baseline, as a BLISS file records ``instrument/machine``. Its signals are monitored, so the
suspenders and :class:`BeamWatch` hear of a lost beam as soon as the IOC posts it.

:class:`BeamWatch` keeps the times the beam was down (current below a floor, shutter closed): the fly
scanner asks whether a line was flown without beam, and the plans whether a point was exposed
without it.
"""

from __future__ import annotations

import threading
import time

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO

__all__ = ["BeamWatch", "Machine"]


class Machine(Device):
    """Ring current (mA), refill countdown (s; -1: none scheduled) and front-end shutter (1 open, 0 closed).

    Fields: ``machine_current``, ``machine_refill_countdown``, ``machine_shutter``,
    ``machine_status`` (``beam``, ``refill``, ``dump``). ``open_shutter()``/``close_shutter()`` move
    the shutter (``Shutter``, put 1 or 0).
    """

    current = Cpt(EpicsSignalRO, "Current_RBV", kind="hinted", auto_monitor=True)
    refill_countdown = Cpt(EpicsSignalRO, "RefillCountdown_RBV", kind="normal", auto_monitor=True)
    shutter = Cpt(EpicsSignalRO, "Shutter_RBV", kind="normal", auto_monitor=True)
    status = Cpt(EpicsSignalRO, "Status_RBV", kind="normal", string=True, auto_monitor=True)
    shutter_command = Cpt(EpicsSignal, "Shutter", kind="omitted", put_complete=True)

    def open_shutter(self):
        """Open the front-end shutter; returns the put's status."""
        return self.shutter_command.set(1)

    def close_shutter(self):
        """Close the front-end shutter; returns the put's status."""
        return self.shutter_command.set(0)


class BeamWatch:
    """When the beam was down, from the machine's monitored current and shutter (thread-safe).

    The beam is down while the current is below ``current_floor_ma`` or (``shutter``) the shutter is
    closed. Times are this computer's (``time.time()`` when the update arrives).

    Parameters
    ----------
    machine : Machine
    current_floor_ma : float
    shutter : bool
        Whether a closed shutter counts as no beam.
    """

    def __init__(self, machine, *, current_floor_ma: float = 10.0, shutter: bool = True):
        self.machine = machine
        self.current_floor_ma = float(current_floor_ma)
        self.use_shutter = bool(shutter)
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._outages: list[tuple[float, float]] = []  # (down, back), closed intervals of the past
        self._values = {"current": None, "shutter": None}
        self._tokens = [(machine.current, machine.current.subscribe(self._on_current)),
                        (machine.shutter, machine.shutter.subscribe(self._on_shutter))]

    def close(self) -> None:
        """Stop watching."""
        for signal, token in self._tokens:
            signal.unsubscribe(token)
        self._tokens = []

    def _on_current(self, value=None, **kwargs):
        self._update("current", value)

    def _on_shutter(self, value=None, **kwargs):
        self._update("shutter", value)

    def _update(self, key: str, value) -> None:
        now = time.time()
        with self._lock:
            self._values[key] = value
            down = self._down_now()
            if down and self._down_since is None:
                self._down_since = now
            elif not down and self._down_since is not None:
                self._outages.append((self._down_since, now))
                self._outages = self._outages[-256:]
                self._down_since = None

    def _down_now(self) -> bool:
        current, shutter = self._values["current"], self._values["shutter"]
        if current is not None and float(current) < self.current_floor_ma:
            return True
        return self.use_shutter and shutter is not None and int(shutter) == 0

    @property
    def down(self) -> bool:
        """Whether the beam is down now."""
        with self._lock:
            return self._down_since is not None

    def down_between(self, t0: float, t1: float | None = None) -> bool:
        """Whether the beam was down at any time in ``(t0, t1]`` (``time.time()`` s; t1 default now)."""
        t1 = time.time() if t1 is None else t1
        with self._lock:
            if self._down_since is not None and self._down_since <= t1:
                return True
            return any(down <= t1 and back > t0 for down, back in self._outages)
