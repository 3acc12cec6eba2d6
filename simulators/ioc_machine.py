"""Simulated storage ring and front-end shutter IOC (caproto): what the machine tells a beamline.

PVs under the prefix (``pv.machine``, default ``"BSSIM:machine:"``), served from
:class:`~.beam.IncidentBeam` (the physics is in :mod:`.beam`):

============================ ==========================================================
``Current_RBV``              ring current (mA); posted as it changes (every 0.5 s while
                             it decays) and at once when the beam is lost or restored
``RefillCountdown_RBV``      seconds to the next refill (0 during one, -1: none scheduled),
                             posted every 0.5 s
``Status_RBV``               ``beam``, ``refill`` or ``dump``
``Shutter``                  the front-end shutter: put 1 to open, 0 to close
``Shutter_RBV``              1 open, 0 closed (closed too while the machine refills)
``SIM:Dump``                 put S: the beam is dumped now and back after S s (0: the
                             configured ``dump_duration_s``); for tests and demos
``SIM:RefillIn``             put S: the next refill starts in S s
``SIM:DumpInExposure``       put S: the beam is dumped S s into the next detector exposure
                             that starts (for ``dump_duration_s``)
============================ ==========================================================
"""

from __future__ import annotations

import asyncio
import time

from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

__all__ = ["MachineIOC", "UPDATE_S"]

#: Period (s) of the current and countdown updates between the beam's changes.
UPDATE_S = 0.5
_STR = dict(dtype=ChannelType.CHAR, max_length=40, string_encoding="utf-8")


class _SimulationGroup(PVGroup):
    """``SIM:`` -- what a test asks of the simulated machine."""

    dump = pvproperty(name="Dump", value=0.0, dtype=ChannelType.DOUBLE,
                      doc="put S: dump the beam now, back after S s (0: the configured duration)")
    refill_in = pvproperty(name="RefillIn", value=0.0, dtype=ChannelType.DOUBLE,
                           doc="put S: the next refill starts in S s")
    dump_in_exposure = pvproperty(name="DumpInExposure", value=0.0, dtype=ChannelType.DOUBLE,
                                  doc="put S: dump the beam S s into the next detector exposure")

    @dump.putter
    async def dump(self, instance, value):
        if not value >= 0:
            raise ValueError(f"{self.prefix}Dump must be >= 0 s, got {value}")
        self.parent.beam.ring.dump(time.monotonic(), float(value) or None)
        await self.parent.changed()
        return value

    @dump_in_exposure.putter
    async def dump_in_exposure(self, instance, value):
        self.parent.beam.arm_dump(float(value))
        return value

    @refill_in.putter
    async def refill_in(self, instance, value):
        if not value >= 0:
            raise ValueError(f"{self.prefix}RefillIn must be >= 0 s, got {value}")
        self.parent.beam.ring.refill_in(time.monotonic(), float(value))
        await self.parent.changed()
        return value


class MachineIOC(PVGroup):
    """The machine's PVs for one beamline.

    Parameters
    ----------
    prefix : str
        e.g. ``"BSSIM:machine:"``.
    beam : IncidentBeam
        The ring and the shutter, on :func:`time.monotonic`'s clock.
    """

    current = pvproperty(name="Current_RBV", value=0.0, dtype=ChannelType.DOUBLE, precision=3, read_only=True,
                         units="mA")
    refill_countdown = pvproperty(name="RefillCountdown_RBV", value=-1.0, dtype=ChannelType.DOUBLE, precision=1,
                                  read_only=True, units="s")
    status = pvproperty(name="Status_RBV", value="beam", read_only=True, **_STR)
    shutter = pvproperty(name="Shutter", value=1, dtype=ChannelType.LONG, doc="1 open, 0 close")
    shutter_rbv = pvproperty(name="Shutter_RBV", value=1, dtype=ChannelType.LONG, read_only=True)
    sim = SubGroup(_SimulationGroup, prefix="SIM:")

    def __init__(self, prefix, *, beam, **kwargs):
        super().__init__(prefix, **kwargs)
        self.beam = beam
        self._wake = None  # asyncio.Event, made in the server's loop
        beam.listeners.append(self._poke)  # a dump armed for an exposure: posted when it happens

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    @shutter.putter
    async def shutter(self, instance, value):
        self.beam.set_shutter(time.monotonic(), bool(value))
        await self.changed()
        return 1 if value else 0

    @current.startup
    async def current(self, instance, async_lib):
        """Post the machine's state at each of its changes, and every :data:`UPDATE_S` between them."""
        self._wake = asyncio.Event()
        while True:
            now = time.monotonic()
            await self.publish(now)
            delay = min(self.beam.ring.next_change(now) - time.monotonic(), UPDATE_S)
            try:
                await asyncio.wait_for(self._wake.wait(), max(delay, 0.0))
            except TimeoutError:
                pass
            self._wake.clear()

    async def publish(self, now: float | None = None) -> None:
        """Post the state at ``now`` (default: the clock now): current, countdown, status, shutter."""
        now = time.monotonic() if now is None else now
        state = self.beam.ring.state(now)
        delivering = state.status != "refill" and self.beam.shutter_open(now)
        if self.status.value != state.status:
            await self.status.write(state.status)
        if self.shutter_rbv.value != int(delivering):
            await self.shutter_rbv.write(int(delivering))
        if abs(self.current.value - state.current_ma) > 1e-6:
            await self.current.write(round(state.current_ma, 6))
        countdown = round(state.countdown_s, 1)
        if self.refill_countdown.value != countdown:
            await self.refill_countdown.write(countdown)

    async def changed(self) -> None:
        """Post a change asked for by a put, and let the update loop plan its next wake-up again."""
        await self.publish()
        self._poke()
