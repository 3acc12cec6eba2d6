"""Simulated fluorescence detector IOC (caproto): one counting channel.

An energy-dispersive detector with a region of interest on the particle's
fluorescence line (Ni K-alpha), reduced to the PVs a step scan needs:

============================ ==========================================================
PV (after the prefix)        meaning
============================ ==========================================================
``AcquireTime``, ``_RBV``    counting time (s), in (0, 3600]
``Acquire``                  put 1 to count once; the put completes (put-callback) when
                             the count is done and ``Counts_RBV`` holds it; reads back 0
``Acquire_RBV``              1 while counting, 0 when idle
``Counts_RBV``               ROI counts of the last acquisition
``NumAcquired_RBV``          acquisitions since start-up
============================ ==========================================================

Each count calls a *counter* ``(positions, exposure_s) -> int`` at the
current motor positions of the shared :class:`~.ioc_motors.BeamlineState`
(by default ``SimulatedBeamline.fluorescence``); the physics stays in
:mod:`braggscope.simulators.fluorescence`.
"""

from __future__ import annotations

import asyncio
import time

from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

__all__ = ["FluorescenceIOC"]


class FluorescenceIOC(PVGroup):
    """The simulated fluorescence detector.

    Parameters
    ----------
    prefix : str
        PV prefix, e.g. ``"BSSIM:xrf:"``.
    state : BeamlineState
        Shared motor positions (read at each count).
    counter : callable
        ``counter(positions: dict, exposure_s: float) -> int`` (non-negative counts).
    realtime : bool
        Wait out ``AcquireTime`` before the put completes, as a real detector
        does (default). False (``simulator.realtime = false``): the count
        returns as soon as it is computed (the counts still scale with
        ``AcquireTime``).
    """

    acquire_time = pvproperty(name="AcquireTime", value=0.01, dtype=ChannelType.DOUBLE, precision=4,
                              doc="counting time (s)")
    acquire_time_rbv = pvproperty(name="AcquireTime_RBV", value=0.01, dtype=ChannelType.DOUBLE, precision=4,
                                  read_only=True)
    acquire = pvproperty(name="Acquire", value=0, dtype=ChannelType.LONG,
                         doc="put 1: count once; completes when Counts_RBV is updated")
    acquire_rbv = pvproperty(name="Acquire_RBV", value=0, dtype=ChannelType.LONG, read_only=True)
    counts = pvproperty(name="Counts_RBV", value=0, dtype=ChannelType.LONG, read_only=True,
                        doc="ROI counts of the last acquisition")
    num_acquired = pvproperty(name="NumAcquired_RBV", value=0, dtype=ChannelType.LONG, read_only=True)

    def __init__(self, prefix, *, state, counter, realtime=True, **kwargs):
        super().__init__(prefix, **kwargs)
        self.state = state
        self.counter = counter
        self.realtime = bool(realtime)
        self._busy = None  # asyncio.Lock, made in the server's loop

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
                counts = int(self.counter(positions, exposure))
                if counts < 0:
                    raise ValueError(f"counter returned negative counts {counts}")
                if self.realtime:
                    remaining = exposure - (time.monotonic() - t0)
                    if remaining > 0:
                        await asyncio.sleep(remaining)
                await self.counts.write(counts)
                await self.num_acquired.write(self.num_acquired.value + 1)
            finally:
                await self.acquire_rbv.write(0)
        return counts
