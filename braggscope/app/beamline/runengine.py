"""A RunEngine set up for a beamline: the scan setup and the machine in every run's baseline, the catalog
writer, the beam's suspenders and monitor, live maps.

Shared by the session, the demos and the queue server's profile, which add what is theirs (the guard,
scan ids, progress bars).
"""

from __future__ import annotations

from bluesky import RunEngine
from bluesky.preprocessors import SupplementalData

from braggscope import storage
from braggscope.app.beamline.interrupted_bundle import drop_interrupted_bundle
from braggscope.plans.beam import BeamPolicy, install_beam

__all__ = ["BASELINE_DEVICES", "install_baseline", "recording_run_engine", "subscribe_live_maps"]

#: Devices read at the start and end of every run (stream "baseline"): the energy and the angles of the
#: scan setup (braggscope.core.setup.ScanSetup reads energy, delta, nu, phi there), the piezo, and the
#: machine (ring current, refill countdown, shutter).
BASELINE_DEVICES = ("energy", "eta", "phi", "nu", "delta", "pix", "piy", "piz", "machine")


def recording_run_engine(devices: dict, catalog, *, beam: BeamPolicy | None = None) -> RunEngine:
    """A RunEngine (``call_returns_result=True``) whose runs carry the scan setup and go to ``catalog``.

    Parameters
    ----------
    devices : dict
        Name -> device; those of :data:`BASELINE_DEVICES` present are read in every run's baseline.
    catalog
        The catalog client every run is written to (``braggscope.storage.open_catalog``).
    beam : BeamPolicy, optional
        The beam's suspenders and the monitor counted with every point (``plans.beam.install_beam``,
        with the ``machine`` and ``mon1`` of ``devices``), before the guard the caller installs.
    """
    RE = RunEngine(call_returns_result=True)
    install_baseline(RE, devices)  # energy and angles of every run's scan setup
    storage.subscribe_writer(RE, catalog)
    if beam is not None:
        install_beam(RE, devices, beam)
    return RE


def install_baseline(RE, devices) -> SupplementalData:
    """Record :data:`BASELINE_DEVICES` (those present in ``devices``) in every run's baseline stream.

    Every run then carries the energy and the angles of its scan setup, bluesky's own ``count``,
    ``scan`` and ``grid_scan`` included; the detector's configuration signals carry the rest.
    """
    sd = SupplementalData(baseline=[devices[name] for name in BASELINE_DEVICES if name in devices])
    RE.preprocessors.append(sd)
    drop_interrupted_bundle(RE)  # else the closing baseline read fails an abort that follows a pause mid-point
    return sd


def subscribe_live_maps(RE, detector_roi=None):
    """Subscribe the live SXDM maps to ``RE``, reduced on a worker thread.

    Returns
    -------
    tuple
        ``(live, dispatcher, token)``: the :class:`~braggscope.analysis.live.callback.LiveSXDM` maps,
        their :class:`~braggscope.analysis.live.dispatch.LiveMapDispatcher` and the subscription token.
    """
    # slow to import (the reduction kernels): only where live maps are asked for
    from braggscope.analysis.live.callback import LiveSXDM
    from braggscope.analysis.live.dispatch import LiveMapDispatcher

    live = LiveSXDM(batch_size=32, detector_roi=detector_roi)
    dispatcher = LiveMapDispatcher(live)
    return live, dispatcher, RE.subscribe(dispatcher)
