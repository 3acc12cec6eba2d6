"""The simulated or real beamline an application works with: devices, RunEngine, catalog.

Shared by ``braggscope demo`` and ``braggscope shell``: :class:`Beamline`
connects (starting the caproto simulator when the configuration is simulated
and none runs), :class:`PointProgress` shows a progress bar per run,
:func:`reflection_window` picks a detector window around the reflection, and
:func:`subscribe_live_maps`/:func:`save_live_figure` wire the live SXDM maps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from bluesky import RunEngine
from bluesky.preprocessors import SupplementalData
from tqdm.auto import tqdm

from braggscope.app.beamline.interrupted_bundle import drop_interrupted_bundle
from braggscope import storage
from braggscope.core.config import Config
from braggscope.storage.fly_stream import streamed_only
from braggscope.storage.scan_ids import install_scan_ids

__all__ = ["Beamline", "PointProgress", "StreamedRunsAsProgress", "connect_simulator", "install_baseline", "reflection_window",
           "subscribe_live_maps", "save_live_figure"]

#: Devices read at the start and end of every run (stream "baseline"): the energy and the angles of the
#: scan setup (braggscope.core.setup.ScanSetup reads energy, delta, nu, phi there), and the piezo.
BASELINE_DEVICES = ("energy", "eta", "phi", "nu", "delta", "pix", "piy", "piz")


class Beamline:
    """Devices + RunEngine + catalog for the demo; a context manager that cleans up.

    With ``inprocess`` the devices are in-process around ``SimulatedBeamline``;
    otherwise the caproto simulator is started if none runs (and stopped at the
    end only if started here) and ``make_devices(cfg)`` connects to it.
    """

    def __init__(self, cfg, *, inprocess=False, sample=None, out=None, purpose=None):
        self.cfg = cfg
        self.inprocess = inprocess
        self.sample = sample
        self.purpose = purpose  # named when a running simulator serves another sample ("demo sxdm")
        self.out = Path(out) if out else None
        self._started = None

    def __enter__(self):
        from braggscope.simulators.beamline import SimulatedBeamline

        cfg = self.cfg
        if self.sample is not None:
            cfg.set("simulator.sample", self.sample)
        # the simulator physics, used here only for the nominal set-up (Bragg angles from the
        # reflection's d-spacing, where the sample was mounted) as a beamline scientist knows it
        self.sim = SimulatedBeamline.from_config(cfg)
        if self.inprocess:
            from braggscope.simulators.inprocess import make_inprocess_devices

            self.devices = make_inprocess_devices(self.sim, cfg.expand_path("detector.read_path"),
                                                  limits=cfg["limits"])
            self.detector = self.devices["mpx1x4"]
        else:
            self.devices = connect_simulator(cfg, self)
            self.detector = self.devices["detector"]
        self.xrf = self.devices.get("xrf")  # fluorescence detector (None when pv.fluorescence is empty)
        self.RE = RunEngine(call_returns_result=True)
        install_baseline(self.RE, self.devices)
        self.RE.subscribe(PointProgress())
        self.client = storage.open_catalog(cfg)
        storage.subscribe_writer(self.RE, self.client)
        install_scan_ids(self.RE, cfg, self.client)  # scan ids continue those of earlier sessions
        return self

    def __exit__(self, *exc):
        if self._started is not None:
            from braggscope.app.beamline.simulator import stop_simulator
            from braggscope.devices.ca_client import release_devices

            release_devices(getattr(self, "devices", {}))  # no "Virtual circuit disconnect" report
            stop_simulator(self._started)
        return False


class PointProgress:
    """A tqdm bar per run: points of the primary stream against the start document's ``num_points``.

    A step scan's points are its events; a fly scan sends none, its points are the frames its
    ``stream_datum`` documents announce (the highest sequence number so far: the image and the
    captured positions of a line announce the same range).
    """

    def __init__(self):
        self._bar = None
        self._primary = set()

    def __call__(self, name, doc):
        if name == "start":
            label = doc.get("plan_name", "run") + (f" ({doc['purpose']})" if doc.get("purpose") else "")
            self._bar = tqdm(total=doc.get("num_points"), desc=label, unit="pt", file=sys.stdout, leave=True)
        elif name == "descriptor" and doc.get("name") == "primary":
            self._primary.add(doc["uid"])
        elif name == "event" and self._bar is not None and doc["descriptor"] in self._primary:
            self._bar.update(1)
        elif name == "stream_datum" and self._bar is not None and doc.get("descriptor") in self._primary:
            done = int(doc["seq_nums"]["stop"]) - 1  # the RunEngine numbers the frames 1, 2, ... across lines
            if done > self._bar.n:
                self._bar.update(done - self._bar.n)
        elif name == "stop" and self._bar is not None:
            self._bar.set_postfix_str(doc.get("exit_status", ""))
            self._bar.close()
            self._bar = None


class StreamedRunsAsProgress:
    """Forward a run's documents to a table callback (the session's ``BestEffortCallback``), except a run
    whose primary stream is all stream data (a fly scan): its table would have no row to show, so from
    that descriptor on the callback gets only the stop, and a :class:`PointProgress` bar counts the points.

    Parameters
    ----------
    table : callable
        ``table(name, doc)``.
    """

    def __init__(self, table):
        self.table = table
        self._start = None
        self._progress = None

    def __call__(self, name, doc):
        if name == "start":
            self._start, self._progress = doc, None
        elif name == "descriptor" and doc.get("name") == "primary" and self._progress is None \
                and streamed_only(doc):
            self._progress = PointProgress()
            self._progress("start", self._start)
        if self._progress is None:
            return self.table(name, doc)
        self._progress(name, doc)
        if name == "stop":
            self._progress = None
            return self.table(name, doc)
        return None


def install_baseline(RE, devices) -> SupplementalData:
    """Record :data:`BASELINE_DEVICES` (those present in ``devices``) in every run's baseline stream.

    Every run then carries the energy and the angles of its scan setup, bluesky's own ``count``,
    ``scan`` and ``grid_scan`` included; the detector's configuration signals carry the rest.
    """
    sd = SupplementalData(baseline=[devices[name] for name in BASELINE_DEVICES if name in devices])
    RE.preprocessors.append(sd)
    drop_interrupted_bundle(RE)  # else the closing baseline read fails an abort that follows a pause mid-point
    return sd


def connect_simulator(cfg, owner=None):
    """Start the caproto simulator unless one runs, point CA at it, connect the devices.

    A running simulator must serve the sample the owner asks for (``owner.sample``, e.g. the
    demos), else :class:`braggscope.app.beamline.simulator.SampleMismatchError` (one line) is raised before
    any connection. Without such a request (the shell) the configuration takes the sample the
    simulator serves (``simulator.sample``), and says so when it differs.
    """
    from braggscope.devices.factory import make_devices
    from braggscope.app.beamline.simulator import apply_client_env, check_sample, read_state, start_simulator, state_file_for

    handle = read_state(state_file_for(cfg))
    wanted = getattr(owner, "sample", None)
    if handle is None:
        print(f"starting the simulator (braggscope sim start) with sample {cfg['simulator.sample']} ...",
              flush=True)
        handle = start_simulator(cfg, set_env=True)
        if owner is not None:
            owner._started = handle
    else:
        if wanted is not None:
            check_sample(handle, wanted, needed_by=getattr(owner, "purpose", None) or "this")
        elif handle.sample and handle.sample != cfg.get("simulator.sample"):
            print(f"the running simulator serves sample {handle.sample} (pid {handle.pid}); using it", flush=True)
            cfg.set("simulator.sample", handle.sample)
        apply_client_env(handle.port)
    return make_devices(cfg, connect_timeout=30.0)


def reflection_window(cch, detector_shape, size=128):
    """A ``size`` x ``size`` detector window (row0, row1, col0, col1) around the direct-beam pixel.

    With the detector arm on the reflection the peak stays within ~15 pixels of
    ``cch`` here: reading 1/16 of the detector keeps the Poisson noise of the
    background elsewhere out of the centres of mass (live and offline alike).
    """
    rows, cols = detector_shape
    r0, c0 = (int(np.clip(round(c) - size // 2, 0, max(n - size, 0))) for c, n in zip(cch, (rows, cols)))
    return (r0, min(r0 + size, rows), c0, min(c0 + size, cols))


def subscribe_live_maps(RE, detector_roi=None):
    """Subscribe the live SXDM maps (worker thread) if the live-analysis module is there."""
    try:
        from braggscope.analysis.live.callback import LiveSXDM
        from braggscope.analysis.live.dispatch import LiveMapDispatcher
    except ImportError:
        return None, None, None
    live = LiveSXDM(batch_size=32, background=1.0, detector_roi=detector_roi)
    dispatcher = LiveMapDispatcher(live)
    return live, dispatcher, RE.subscribe(dispatcher)


def save_live_figure(live, path):
    try:
        from braggscope.analysis.live.plot import LiveMapPlot

        plot = LiveMapPlot(live)
        plot.update(force=True)
        plot.figure.savefig(path, dpi=90)
    except Exception as exc:  # noqa: BLE001 - a missing live figure must not lose the run
        print(f"[demo] live-map figure not written: {exc}", file=sys.stderr)
