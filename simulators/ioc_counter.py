"""A simulated counting channel (caproto): count once on ``Acquire``, the counts scaled by the beam.

The PVs a step scan needs of a scaler or an energy-dispersive detector's region of interest:

============================ ==========================================================
PV (after the prefix)        meaning
============================ ==========================================================
``AcquireTime``, ``_RBV``    counting time (s), in (0, 3600]
``Acquire``                  put 1 to count once; the put completes (put-callback) when
                             the count is done and ``Counts_RBV`` holds it; reads back 0
``Acquire_RBV``              1 while counting, 0 when idle
``Counts_RBV``               counts of the last acquisition
``NumAcquired_RBV``          acquisitions since start-up
============================ ==========================================================

Subclasses say what one count is (:meth:`CounterIOC.counts`): the fluorescence detector
(:mod:`.ioc_fluorescence`) and the incident-flux monitor (:class:`MonitorIOC`). With a beam
(:class:`~.beam.IncidentBeam`) the counts follow the mean flux over the count: computed from the
flux the schedule foresees when the count starts, and again at its end when something nobody
could foresee (a dump, the shutter) happened meanwhile.
"""

from __future__ import annotations

import asyncio
import time

from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

__all__ = ["CounterIOC", "MonitorIOC", "exposure_flux"]


def exposure_flux(beam, t0: float, exposure_s: float) -> tuple[float, int | None]:
    """``(mean flux over [t0, t0 + exposure_s], beam revision)``; ``(1.0, None)`` without a beam."""
    if beam is None:
        return 1.0, None
    return beam.mean_flux(t0, t0 + exposure_s), beam.revision


class CounterIOC(PVGroup):
    """One counting channel.

    Parameters
    ----------
    prefix : str
        PV prefix, e.g. ``"BSSIM:mon1:"``.
    state : BeamlineState
        Shared motor positions (read when a count starts).
    beam : IncidentBeam, optional
        The flux the counts follow (none: always the full flux).
    realtime : bool
        Wait out ``AcquireTime`` before the put completes, as a real counter does (default).
        False (``simulator.realtime = false``): the count returns as soon as it is computed
        (the counts still scale with ``AcquireTime``).
    """

    acquire_time = pvproperty(name="AcquireTime", value=0.01, dtype=ChannelType.DOUBLE, precision=4,
                              doc="counting time (s)")
    acquire_time_rbv = pvproperty(name="AcquireTime_RBV", value=0.01, dtype=ChannelType.DOUBLE, precision=4,
                                  read_only=True)
    acquire = pvproperty(name="Acquire", value=0, dtype=ChannelType.LONG,
                         doc="put 1: count once; completes when Counts_RBV is updated")
    acquire_rbv = pvproperty(name="Acquire_RBV", value=0, dtype=ChannelType.LONG, read_only=True)
    counts = pvproperty(name="Counts_RBV", value=0, dtype=ChannelType.LONG, read_only=True,
                        doc="counts of the last acquisition")
    num_acquired = pvproperty(name="NumAcquired_RBV", value=0, dtype=ChannelType.LONG, read_only=True)

    def __init__(self, prefix, *, state, beam=None, realtime=True, **kwargs):
        super().__init__(prefix, **kwargs)
        self.state = state
        self.beam = beam
        self.realtime = bool(realtime)
        self._busy = None  # asyncio.Lock, made in the server's loop

    def count_once(self, positions: dict, exposure_s: float, flux: float) -> int:
        """The counts of one acquisition of ``exposure_s`` s at ``positions`` and mean ``flux``."""
        raise NotImplementedError

    @acquire_time.putter
    async def acquire_time(self, instance, value):
        if not 0 < value <= 3600:
            raise ValueError(f"{self.prefix}AcquireTime must be in (0, 3600] s, got {value}")
        await self.acquire_time_rbv.write(value)
        return value

    @acquire.putter
    async def acquire(self, instance, value):
        if value:
            await self.count()
        return 0

    async def count(self) -> int:
        """Count once at the current positions; returns the counts (also in ``Counts_RBV``)."""
        if self._busy is None:
            self._busy = asyncio.Lock()
        async with self._busy:  # a second Acquire waits for the first, as a busy record would
            t0 = time.monotonic()
            exposure = float(self.acquire_time.value)
            await self.acquire_rbv.write(1)
            try:
                positions = self.state.snapshot()
                flux, revision = exposure_flux(self.beam, t0, exposure)
                counts = self._checked(self.count_once(positions, exposure, flux))
                if self.realtime:
                    remaining = exposure - (time.monotonic() - t0)
                    if remaining > 0:
                        await asyncio.sleep(remaining)
                    if self.beam is not None and self.beam.revision != revision:  # the beam changed meanwhile
                        counts = self._checked(self.count_once(positions, exposure,
                                                               self.beam.mean_flux(t0, t0 + exposure)))
                await self.counts.write(counts)
                await self.num_acquired.write(self.num_acquired.value + 1)
            finally:
                await self.acquire_rbv.write(0)
        return counts

    @staticmethod
    def _checked(counts) -> int:
        counts = int(counts)
        if counts < 0:
            raise ValueError(f"counter returned negative counts {counts}")
        return counts


class MonitorIOC(CounterIOC):
    """The incident-flux monitor (``mon1``): counts proportional to the flux over each count.

    Parameters
    ----------
    prefix, state, beam, realtime
        As for :class:`CounterIOC`.
    monitor : MonitorCounter
        Its rate and noise (:class:`~.beam.MonitorCounter`).
    """

    def __init__(self, prefix, *, monitor, **kwargs):
        super().__init__(prefix, **kwargs)
        self.monitor = monitor

    def count_once(self, positions, exposure_s, flux) -> int:
        return self.monitor.count(exposure_s, flux)
