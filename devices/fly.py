"""The fly scanner: bluesky's flyer over the fly-scan hardware and the Maxipix, one line per kickoff.

``prepare`` sets a line up, ``kickoff`` arms and starts its sweep, ``complete`` ends once its frames
are on disk and counted. The scanner keeps the count of each attempt (:class:`FlyLineReport`, its
latest in :attr:`FlyScanner.last_line`), collects the accepted lines as stream assets of the primary
stream (``describe_collect``/``collect_asset_docs``/``get_index``) and every attempt as an event of the
``lines`` stream (:attr:`FlyScanner.attempts`). A run writes one detector file and one capture file,
open from ``stage`` to ``unstage``. With a beam watch, an attempt during which the beam was down is
reported as lost (``beam_lost``), to be flown again. docs/fly.md says why ophyd (v1) and not ophyd-async.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import time

from bluesky.utils import NoReplayAllowed
from ophyd import Device, Signal
from ophyd.status import Status, SubscriptionStatus

from braggscope.core.errors import ArgumentError
from braggscope.core.fly_line import check_line, line_parameters

from .fly_assets import StreamAssets
from .fly_files import RunFiles
from .fly_hardware import FlyHardware
from .fly_report import FlyLineReport, LineAttempts
from .machine import BeamWatch
from .monitor import MONITOR_NAME
from .serial_worker import SerialWorker

__all__ = ["ARM_S", "FlyHardware", "FlyLineReport", "FlyScanner", "make_flyer"]

#: Time (s) to arm the trigger unit and the detector for a line, counted in its duration.
ARM_S = 0.05


class FlyScanner:
    """Flyer over the fly hardware and the Maxipix: one line per ``prepare``/``kickoff``/``complete``.

    Every operation runs on the scanner's own thread, in the order asked (:class:`SerialWorker`), so
    the detector re-armed for the next line while the plan documents the last one is armed before
    the next line is set up.

    Parameters
    ----------
    hardware : FlyHardware
    detector : braggscope.devices.maxipix.Maxipix
    fast, slow : str
        Names of the fast and slow axes (the captured positions' field names).
    name : str
    readout_s : float
        Detector read-out dead time per frame (s): exposure = dwell - read-out.
    arm_timeout_s : float
        Time the trigger unit has to report armed (s).
    beam : BeamWatch, optional
        When the beam was down: an attempt that saw it down is reported ``beam_lost``.
    monitor : str, optional
        Field of the incident-flux monitor the position capture counts per frame (its ``/mon1``), recorded
        with every point of the primary stream (``mon1``); None: not recorded.

    Attributes
    ----------
    last_line : ophyd.Signal
        The latest counted attempt (:class:`FlyLineReport`; None before the first of a run): what a
        plan reads (``bps.rd``) to decide whether to fly the line again.
    attempts : LineAttempts
        The ``lines`` stream: every counted attempt, collected once.
    """

    def __init__(self, hardware, detector, *, fast="pix", slow="piy", name="flyer", readout_s=3e-4,
                 arm_timeout_s=1.0, beam: BeamWatch | None = None, monitor: str | None = None):
        self.hardware, self.detector, self.name = hardware, detector, name
        self.fast, self.slow = fast, slow
        self.beam, self.monitor = beam, monitor
        self.refill_guard, self.refill_margin_s = beam is not None, 0.5  # see plans.fly.sxdm_fly
        self.readout_s, self.arm_timeout_s = float(readout_s), float(arm_timeout_s)
        self.parent = None
        self.last_line = Signal(name=f"{name}_last_line", value=None, kind="omitted")
        self.attempts = LineAttempts("fly_line", parent=self)
        self.files = RunFiles(detector, hardware.pcap, name)
        self.assets = StreamAssets(self.image_key, fast, slow, f"{name}_time", monitor=monitor)
        self._worker = SerialWorker(self)
        self._line: dict = {}  # the prepared line: its spec and exposure
        self._written: dict = {}  # signal name -> value last written (a line writes only what changed)
        self._limits = None  # the stage's velocity limit and encoder resolution, read once per run
        self._frame_shape = None  # read at stage
        self._go = None  # the sweep in flight: Go's put-completion
        self._prearmed = False  # the detector is armed for the next line already
        self._replayable = True  # no line kicked off since the last prepare (see pause)
        self._t_kick = self._t0 = 0.0
        self._kick_wall = 0.0  # time.time() at the kickoff: the beam watch's clock

    def wait_for_connection(self, timeout: float = 10.0) -> None:
        """Connect every signal of the hardware and the detector within ``timeout`` s (ophyd connects lazily;
        ``read()`` of a signal not yet connected raises instead of waiting)."""
        deadline = time.monotonic() + float(timeout)
        for device in (self.hardware, self.detector):
            _instantiate_without_waiting(device)
            device.wait_for_connection(all_signals=True, timeout=max(deadline - time.monotonic(), 0.1))

    @property
    def image_key(self) -> str:
        return f"{self.detector.name}_image"

    def check_line(self, x0: float, x1: float, num: int, dwell_s: float) -> tuple[float, float]:
        """Velocity (um/s) and exposure (s), or ``ValueError`` naming what to change (reads the stage limit)."""
        if self._limits is None:  # read-only limits: read once per run, not at every line
            self._limits = (float(self.hardware.stage_.velo_max.get()), float(self.hardware.stage_.enc_res.get()))
        velocity_max, resolution = self._limits
        return check_line(x0, x1, num, dwell_s, readout_s=self.readout_s, velocity_max_um_s=velocity_max,
                          encoder_resolution_um=resolution)

    def ramp_um(self, velocity: float) -> float:
        """Run-up (and run-down) distance at ``velocity`` (um/s), um."""
        return velocity * float(self.hardware.stage_.accel_time.get()) / 2.0

    def line_overhead_s(self) -> float:
        """A line's time beside its points' dwell (s): the two ramps and :data:`ARM_S` for the arming."""
        return 2.0 * float(self.hardware.stage_.accel_time.get()) + ARM_S

    def read_configuration(self):
        return {**self.detector.read_configuration(), **self.hardware.read_configuration()}

    def describe_configuration(self):
        return {**self.detector.describe_configuration(), **self.hardware.describe_configuration()}

    # ---------------------------------------------------------------- the run
    def stage(self):
        """Detector to external trigger; open the run's two files (:class:`RunFiles`)."""
        self._frame_shape = tuple(int(v) for v in self.detector.frame_shape.get())
        self._written.clear()
        self._limits = self._go = None
        self.assets.reset()
        self.attempts.clear()
        self.last_line.put(None)
        self.files.open()
        return [self]

    def unstage(self):
        """Disarm the detector and close the run's files, after whatever the scanner is still doing."""
        self._worker.run(self._end_run).wait(60)
        return [self]

    def _end_run(self) -> None:
        self._prearmed = False
        self._stop_camera()
        self.files.close()

    def stop(self, *, success=False):
        """Stop the detector now (a line in flight takes no more frames); ``unstage`` closes the files."""
        self._prearmed = False
        self._stop_camera()

    def pause(self):
        """A RunEngine pausing: its replay from the last checkpoint is safe until a line is kicked off (the
        same settings and moves again); after that the line is flown and its documents may be out, so a
        replay would fly it twice and re-number them: refused (the plan then goes on where it stopped)."""
        if not self._replayable:
            raise NoReplayAllowed(f"{self.name}: a line was kicked off since the last prepare")

    def resume(self):
        pass

    # ---------------------------------------------------------------- one line
    def prepare(self, line: dict):
        """Set a line up: ``line`` = {x0, x1, num, dwell_s, eta_index, row, attempt, max_retries} (um, s).

        Only the settings that changed since the last line are written. The stage's and the trigger
        unit's are written at once, while the detector is re-armed; new detector settings wait for that
        arming to end and disarm it (the detector reads them when armed).
        """
        self._replayable = True
        x0, x1, num, dwell = float(line["x0"]), float(line["x1"]), int(line["num"]), float(line["dwell_s"])
        _, exposure = self.check_line(x0, x1, num, dwell)
        params = line_parameters(x0, x1, num, dwell, exposure)
        hw, cam = self.hardware, self.detector.cam
        self._line = dict(line, num=num, exposure_s=exposure)
        detector = self._changed(((cam.acquire_time, exposure), (cam.acquire_period, dwell), (cam.num_images, num)))
        motion = self._changed(((hw.stage_.start, params["stage_start"]), (hw.stage_.stop_at, params["stage_stop"]),
                                (hw.stage_.velocity, params["velocity"]), (hw.pcomp.start, params["pcomp_start"]),
                                (hw.pcomp.step, params["step"]), (hw.pcomp.width, params["width"]),
                                (hw.pcomp.pulses, num)))
        if detector:
            return self._worker.run(self._write, detector + motion, True)
        return self._write(motion)

    def _changed(self, targets) -> tuple:
        """The (signal, value) pairs whose value differs from the one last written, now taken as written."""
        changed = tuple((sig, value) for sig, value in targets if self._written.get(sig.name) != value)
        self._written.update((sig.name, value) for sig, value in changed)
        return changed

    def _write(self, targets, disarm: bool = False):
        """Write ``targets``: an AndStatus of their sets (waited for when on the scanner's thread)."""
        if disarm:
            self._disarm()
        statuses = [sig.set(value) for sig, value in targets]
        if not statuses:
            status = Status(self)
            status.set_finished()
            return status
        status = functools.reduce(operator.and_, statuses)
        if disarm:  # on the scanner's thread: the kickoff queued next must find them written
            status.wait(30)
        return status

    def kickoff(self):
        """Arm the detector (unless armed while the last line was documented) and the trigger unit, start
        the sweep."""
        self._replayable = False
        return self._worker.run(self._kickoff)

    def _kickoff(self) -> None:
        hw = self.hardware
        t_kick, self._kick_wall = time.monotonic(), time.time()
        try:
            if not self._prearmed:  # a line interrupted by a pause finishes its sweep first
                SubscriptionStatus(hw.stage_.busy, _equals(0), timeout=60.0).wait()
                self._arm_detector()
            self._arm_trigger_unit()
        except Exception:
            self._disarm()
            raise
        self._prearmed = False
        self._t_kick, self._t0 = t_kick, time.monotonic()
        self._go = hw.stage_.go.set(1)

    def _arm_trigger_unit(self) -> None:
        pcomp = self.hardware.pcomp
        armed = SubscriptionStatus(pcomp.armed, _equals(1), timeout=self.arm_timeout_s)
        try:
            (pcomp.arm.set(1) & armed).wait()
        except Exception as exc:
            raise RuntimeError(
                f"{self.name}: trigger unit {pcomp.prefix} did not arm within {self.arm_timeout_s:g} s "
                f"({pcomp.status.get(use_monitor=False)!r})") from exc

    def _arm_detector(self) -> None:
        """Arm the detector for the prepared line (its frames go to the run's open file)."""
        cam = self.detector.cam
        acquiring = SubscriptionStatus(cam.detector_state, _equals("Acquire"), timeout=5.0)
        cam.acquire.put(1, use_complete=False)
        try:
            acquiring.wait()
        except Exception as exc:
            raise TimeoutError(f"{self.detector.name}: not armed within 5 s ({cam.detector_state.get()!r})") from exc

    def complete(self):
        """Finished once the stage stopped, the detector wrote its frames and the attempt is counted (at
        once when no line is in flight); the detector is then armed again for the next line."""
        return self._worker.run(self._complete)

    def _complete(self) -> None:
        go, self._go = self._go, None
        if go is None:  # nothing in flight: a failed kickoff, a plan's clean-up
            return
        go.wait(600)
        swept = time.monotonic()
        written = self._stop_detector()
        # the trigger unit's and the capture's counts are final once the sweep is over: read while the
        # detector writes its last frames
        pulses = int(self.hardware.pcomp.pulses_out.get(use_monitor=False))
        captures = int(self.hardware.pcap.captured.get(use_monitor=False))
        try:
            written.wait()
        except Exception as exc:
            raise TimeoutError(f"{self.detector.name}: frames of the line not written within 30 s") from exc
        frames = int(self.detector.hdf5.num_captured.get(use_monitor=False))
        hdf = self.detector.hdf5  # a writer that failed says why (areaDetector's WriteStatus/WriteMessage)
        writer_error = str(hdf.write_message.get(use_monitor=False)) if hdf.write_status.get(use_monitor=False) else ""
        # after the detector's state came (monitors arrive in order): a beam lost during the sweep is known
        lost = self.beam is not None and self.beam.down_between(self._kick_wall)
        counts = {"pulses": pulses, "dropped": int(self.detector.cam.dropped_frames.get(use_monitor=False)),
                  "beam_lost": lost, "writer_error": writer_error}
        report = self._report(swept, counts, *self.files.next_rows(frames, captures))
        self.last_line.put(report)
        self.attempts.add(report)
        if report.accepted:
            self.assets.add(report)
        self._worker.run(self._prearm)  # after this status: the plan documents and moves meanwhile

    def _stop_detector(self) -> SubscriptionStatus:
        """No more pulses will come: a short line's detector stops waiting for them (a complete line's has
        stopped already). The status finishes once ``DetectorState`` is Idle: every frame in the file."""
        cam = self.detector.cam
        written = SubscriptionStatus(cam.detector_state, lambda value, **_: value in ("Idle", "Error"), timeout=30.0)
        cam.acquire.put(0, use_complete=False)
        return written

    def _report(self, swept: float, counts: dict, first: dict, added: dict) -> FlyLineReport:
        """The attempt counted: ``counts`` (pulses, dropped), ``first`` and ``added`` its rows of the files."""
        line, files = self._line, self.files
        return FlyLineReport(
            eta_index=int(line.get("eta_index", 0)), row=int(line.get("row", 0)), attempt=int(line.get("attempt", 0)),
            max_retries=int(line.get("max_retries", 0)), expected=int(line["num"]), pulses=counts["pulses"],
            positions=added["pcap"], frames=added["image"], dropped=counts["dropped"],
            image_file=files.paths.get("image", ""), pcap_file=files.paths.get("pcap", ""),
            image_first=first["image"], pcap_first=first["pcap"], duration_s=time.monotonic() - self._t0,
            sweep_s=swept - self._t0, kickoff_s=self._t0 - self._t_kick, beam_lost=counts["beam_lost"],
            retry=int(line.get("retry", line.get("attempt", 0))),
            beam_retries_left=int(line.get("beam_retries_left", 0)), writer_error=counts["writer_error"])

    # ---------------------------------------------------------------- the detector armed early
    def _prearm(self) -> None:
        """Arm the detector for the next line now (same settings), so its kickoff only arms the trigger unit."""
        try:
            self._arm_detector()
            self._prearmed = True
        except Exception:  # noqa: BLE001 - the next kickoff arms it again and reports what fails
            self._prearmed = False
            self._stop_camera()

    def _disarm(self) -> None:
        """Disarm a detector armed for a line that will not come (other settings, a failed kickoff)."""
        if self._prearmed:
            self._prearmed = False
            self._stop_camera()

    def _stop_camera(self) -> None:
        with contextlib.suppress(Exception):  # the original error matters more
            self.detector.cam.acquire.set(0).wait(5)

    # ---------------------------------------------------------------- collect
    def describe_collect(self):
        rows, cols = self._frame_shape or tuple(int(v) for v in self.detector.frame_shape.get())
        source = self.hardware.pcap.prefix
        position = {"shape": [], "dtype": "number", "dtype_numpy": "<f8", "external": "STREAM:"}
        keys = {
            self.image_key: {"source": self.detector.hdf5.prefix, "shape": [rows, cols], "dtype": "array",
                             "dtype_numpy": "<u4", "external": "STREAM:"},
            self.fast: {"source": source + "pix", "units": "um", **position},
            self.slow: {"source": source + "piy", "units": "um", **position},
            f"{self.name}_time": {"source": source + "time", "units": "s", **position},
        }
        if self.monitor:
            keys[self.monitor] = {"source": source + "mon1", "units": "counts", **position}
        return keys

    def collect_asset_docs(self, index=None):
        """A StreamResource per field with the first accepted line, then a StreamDatum per field and line."""
        yield from self.assets.docs(self._frame_shape)

    def get_index(self) -> int:
        return self.assets.index


def _equals(target):
    """A :class:`SubscriptionStatus` callback: done when the signal reads ``target``."""
    return lambda value, **_: value == target


def _instantiate_without_waiting(device) -> None:
    """Create every lazy component of ``device`` without ophyd's wait of 1 s for each to connect (a busy
    machine exceeded it: the detector's ``array_size`` group); the caller then waits for them all at once."""
    device.lazy_wait_for_connection = False
    for attr in device.component_names:
        child = getattr(device, attr)
        if isinstance(child, Device):
            _instantiate_without_waiting(child)


def make_flyer(devices: dict, cfg, *, name: str | None = None) -> FlyScanner:
    """The flyer over ``devices["fly"]`` and ``devices["detector"]`` (from ``make_devices``), fast axis
    ``pix``, slow axis ``piy``, read-out time and arm time-out from ``[fly]``.

    Named after the detector by default (``mpx1x4``): the descriptor's configuration then
    carries the detector's geometry under its own name, as a step scan's does. With a ``machine`` in
    ``devices`` it watches the beam (``[beam] current_floor_ma``, ``shutter``); with the monitor
    (``mon1``) it records the position capture's monitor counts with every point.
    """
    if "fly" not in devices:
        raise ArgumentError("no fly-scan hardware: set config pv.fly to its PV prefix (e.g. 'BSSIM:fly:')")
    beam = None
    if "machine" in devices:
        beam = BeamWatch(devices["machine"], current_floor_ma=float(cfg.get("beam.current_floor_ma", 10.0)),
                         shutter=bool(cfg.get("beam.shutter", True)))
    flyer = FlyScanner(devices["fly"], devices["detector"], fast="pix", slow="piy",
                       name=name or devices["detector"].name,
                       readout_s=cfg.get("fly.readout_s", 3e-4), arm_timeout_s=cfg.get("fly.arm_timeout_s", 1.0),
                       beam=beam, monitor=MONITOR_NAME if MONITOR_NAME in devices else None)
    flyer.refill_guard = beam is not None and bool(cfg.get("beam.fly_refill_guard", True))
    flyer.refill_margin_s = float(cfg.get("beam.refill_margin_s", 0.5))
    flyer.wait_for_connection()
    return flyer
