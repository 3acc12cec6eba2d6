"""The simulated beamline a demo runs on: devices, a recording RunEngine and the catalog, cleaned up after.

Also the helpers both demos share: the line they print, the detector window around the reflection
and the live maps' figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from braggscope import storage
from braggscope.analysis.live.plot import LiveMapPlot
from braggscope.app.beamline.connect import connect_simulator, disconnect, inprocess_devices
from braggscope.app.beamline.progress import PointProgress
from braggscope.app.beamline.runengine import recording_run_engine
from braggscope.plans.beam import BeamPolicy
from braggscope.simulators.beamline import SimulatedBeamline
from braggscope.storage.scan_ids import install_scan_ids

__all__ = ["Beamline", "XRF_CALIBRATION_HALF_SPAN_DEG", "reflection_window", "save_live_figure", "say"]

#: Half-width (deg) of the fluorescence calibration's eta span around the Bragg angle: wider
#: than the rocking range (the particle's fluorescence does not need the Bragg condition), so
#: the drift has a longer lever arm than over the +-0.7 deg where NMC622 diffracts.
XRF_CALIBRATION_HALF_SPAN_DEG = 3.0


class Beamline:
    """Devices + RunEngine + catalog for a demo; a context manager that cleans up.

    With ``inprocess`` the devices are in-process around ``SimulatedBeamline``;
    otherwise the caproto simulator is started if none runs (and stopped at the
    end only if started here), and a running one must serve ``sample``.

    Attributes (inside the ``with``)
    --------------------------------
    sim : SimulatedBeamline
        The simulator's physics, for the nominal set-up only (Bragg angles, where the sample sits).
    devices : dict
    detector, xrf
        The area detector; the fluorescence detector (None when ``pv.fluorescence`` is empty).
    RE : bluesky.RunEngine
        Recording (baseline, catalog writer), the beam's suspenders and monitor (``[beam]``), scan ids
        continuing earlier sessions', a progress bar.
    client
        The catalog.
    """

    def __init__(self, cfg, *, inprocess=False, sample=None, out=None, purpose=None):
        self.cfg = cfg
        self.inprocess = inprocess
        self.sample = sample
        self.purpose = purpose  # named when a running simulator serves another sample ("demo sxdm")
        self.out = Path(out) if out else None
        self.started = None  # the simulator started here, stopped on exit

    def __enter__(self):
        cfg = self.cfg
        if self.sample is not None:
            cfg.set("simulator.sample", self.sample)
        # the simulator physics, used here only for the nominal set-up (Bragg angles from the
        # reflection's d-spacing, where the sample was mounted) as a beamline scientist knows it
        self.sim = SimulatedBeamline.from_config(cfg)
        if self.inprocess:
            self.devices = inprocess_devices(cfg, self.sim)
            self.detector = self.devices["mpx1x4"]
        else:
            self.devices, self.started = connect_simulator(cfg, sample=self.sample, purpose=self.purpose)
            self.detector = self.devices["detector"]
        self.xrf = self.devices.get("xrf")
        self.client = storage.open_catalog(cfg)
        self.RE = recording_run_engine(self.devices, self.client, beam=BeamPolicy.from_config(cfg))
        self.RE.subscribe(PointProgress())
        install_scan_ids(self.RE, cfg, self.client)  # scan ids continue those of earlier sessions
        return self

    def __exit__(self, *exc):
        disconnect(self.devices, self.started)
        return False


def say(msg) -> None:
    """A line of the demo's report."""
    print(f"[demo] {msg}", flush=True)


def reflection_window(cch, detector_shape, size=128):
    """A ``size`` x ``size`` detector window (row0, row1, col0, col1) around the direct-beam pixel.

    With the detector arm on the reflection the peak stays within ~15 pixels of
    ``cch`` here: reading 1/16 of the detector keeps the Poisson noise of the
    background elsewhere out of the centres of mass (live and offline alike).
    """
    rows, cols = detector_shape
    r0, c0 = (int(np.clip(round(c) - size // 2, 0, max(n - size, 0))) for c, n in zip(cch, (rows, cols)))
    return (r0, min(r0 + size, rows), c0, min(c0 + size, cols))


def save_live_figure(live, path) -> None:
    """The live maps' final figure as a PNG; a failure is one line on stderr (the run is kept)."""
    try:
        plot = LiveMapPlot(live)
        plot.update(force=True)
        plot.figure.savefig(path, dpi=90)
    except Exception as exc:  # noqa: BLE001 - a missing live figure must not lose the run
        print(f"[demo] live-map figure not written: {exc}", file=sys.stderr)
