"""Fluorescence detector: one counting channel (the ROI on the particle's fluorescence line).

A declaration of the PVs (see :mod:`braggscope.simulators.ioc_fluorescence`
for the simulated IOC serving them); on a real beamline point ``pv.fluorescence``
at an IOC with the same PV names (e.g. a record alias layer over the
energy-dispersive detector's ROI), or leave it empty for no such detector.
"""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, EpicsSignalWithRBV

__all__ = ["FluorescenceDetector"]


class FluorescenceDetector(Device):
    """An energy-dispersive detector's region of interest, counted once per trigger.

    Parameters
    ----------
    prefix : str
        PV prefix, e.g. ``"BSSIM:xrf:"``.
    name : str
        ophyd name; the counts field is ``<name>_counts`` (``xrf_counts``, hinted).

    Notes
    -----
    ``trigger()`` puts 1 to ``Acquire`` with put-completion: the status
    finishes when the IOC reports the count done, after which ``Counts_RBV``
    (read with a fresh CA get, not a monitor, so never a stale value) holds it.
    Use it in any plan as a detector, e.g.
    ``calibrate_eccentricity([xrf], ..., intensity_field="xrf_counts")``.
    """

    #: The signal does not depend on the Bragg condition (see calibrate_eccentricity).
    bragg_independent = True

    acquire_time = Cpt(EpicsSignalWithRBV, "AcquireTime", kind="config")
    acquire = Cpt(EpicsSignal, "Acquire", put_complete=True, kind="omitted")
    acquiring = Cpt(EpicsSignalRO, "Acquire_RBV", kind="omitted")
    counts = Cpt(EpicsSignalRO, "Counts_RBV", kind="hinted")

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("labels", {"detectors"})  # bluesky's %ct and braggscope's ct() count it
        super().__init__(*args, **kwargs)

    def trigger(self):
        """Count once; the returned status finishes on put-completion of ``Acquire``."""
        return self.acquire.set(1)
