"""The incident-flux monitor (an ion chamber or a diode on a counter, ``mon1`` at ID01).

Counted like a detector, once per point, so that every frame can be normalised by the flux that made
it; the reading's field is the device's name (``mon1``), as in a BLISS file's ``measurement/mon1``.
The PVs are those of the simulated counter (:mod:`braggscope.simulators.ioc_counter`); on a real
beamline point ``pv.monitor`` at a counter with the same PV names, or leave it empty for none.
"""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, EpicsSignalWithRBV

__all__ = ["IncidentMonitor", "MONITOR_NAME"]

#: The monitor's ophyd name, its event field in every run (``mon1``, as ID01 calls it).
MONITOR_NAME = "mon1"


class IncidentMonitor(Device):
    """A counter of the incident flux, counted once per trigger.

    Parameters
    ----------
    prefix : str
        PV prefix, e.g. ``"BSSIM:mon1:"``.
    name : str
        ophyd name, also the counts field (default :data:`MONITOR_NAME`, hinted).

    Notes
    -----
    ``trigger()`` puts 1 to ``Acquire`` with put-completion; ``Counts_RBV`` then holds the count
    (read with a fresh Channel Access get). Its count time (``acquire_time``) follows the detectors'
    (``ct(0.1)`` sets it; the beam preprocessor of :mod:`braggscope.plans.beam` sets it to the area
    detector's exposure when a plan counts the monitor beside it).
    """

    #: What it measures: the beam, not the sample (the plans never take it for the diffraction detector).
    incident_flux = True
    bragg_independent = True

    acquire_time = Cpt(EpicsSignalWithRBV, "AcquireTime", kind="config")
    acquire = Cpt(EpicsSignal, "Acquire", put_complete=True, kind="omitted")
    acquiring = Cpt(EpicsSignalRO, "Acquire_RBV", kind="omitted")
    counts = Cpt(EpicsSignalRO, "Counts_RBV", kind="hinted")

    def __init__(self, prefix="", *, name=MONITOR_NAME, **kwargs):
        kwargs.setdefault("labels", {"detectors"})  # ct() and the operator's scans count it
        super().__init__(prefix, name=name, **kwargs)
        self.counts.name = self.name  # the field is "mon1", not "mon1_counts"

    def trigger(self):
        """Count once; the returned status finishes on put-completion of ``Acquire``."""
        return self.acquire.set(1)
