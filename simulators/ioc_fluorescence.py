"""Simulated fluorescence detector IOC (caproto): one counting channel.

An energy-dispersive detector with a region of interest on the particle's fluorescence line
(Ni K-alpha), reduced to the PVs of :class:`~.ioc_counter.CounterIOC` (``AcquireTime``,
``Acquire`` with put-completion, ``Acquire_RBV``, ``Counts_RBV``, ``NumAcquired_RBV``).

Each count calls a *counter* ``(positions, exposure_s) -> int`` at the current motor positions of
the shared :class:`~.ioc_motors.BeamlineState` (by default ``SimulatedBeamline.fluorescence``),
with the exposure scaled by the mean flux of the beam over the count (the fluorescence, its
background included, is excited by the beam: none without it); the physics stays in
:mod:`braggscope.simulators.fluorescence`.
"""

from __future__ import annotations

from .ioc_counter import CounterIOC

__all__ = ["FluorescenceIOC"]


class FluorescenceIOC(CounterIOC):
    """The simulated fluorescence detector.

    Parameters
    ----------
    prefix : str
        PV prefix, e.g. ``"BSSIM:xrf:"``.
    state : BeamlineState
        Shared motor positions (read at each count).
    counter : callable
        ``counter(positions: dict, exposure_s: float) -> int`` (non-negative counts).
    beam : IncidentBeam, optional
        The flux the counts follow (none: always the full flux).
    realtime : bool
        Wait out ``AcquireTime`` before the put completes (default); see :class:`CounterIOC`.
    """

    def __init__(self, prefix, *, counter, **kwargs):
        super().__init__(prefix, **kwargs)
        self.counter = counter

    def count_once(self, positions, exposure_s, flux) -> int:
        return self.counter(positions, exposure_s * flux) if flux > 0 else 0
