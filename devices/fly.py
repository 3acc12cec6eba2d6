"""Fly-scan devices: piezo fly stage, position-compare trigger unit, and a flyer over them and the Maxipix.

The flyer follows bluesky's flyer protocol with stream assets (``prepare``,
``kickoff``, ``complete``, ``describe_collect``, ``collect_asset_docs``,
``get_index``). A run writes one detector file and one position-capture file,
open from ``stage`` to ``unstage``, each line appended; the first accepted line
brings a StreamResource per field and every accepted line a StreamDatum naming
its rows of the file, which bluesky-tiled-plugins' ``TiledWriter`` ingests. The
primary stream then holds ``<detector>_image`` (frames), the fast and slow axes'
captured positions (um) and ``<flyer>_time`` (s). docs/fly.md says why ophyd (v1)
and not ophyd-async.
"""

from __future__ import annotations

import threading
import time
from pathlib import PurePosixPath

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, Signal
from ophyd.status import Status

from braggscope.simulators.fly_timing import check_line, line_parameters

__all__ = ["FlyHardware", "FlyScanner", "LineReport", "make_flyer"]


class _Stage(Device):
    start = Cpt(EpicsSignal, "Start", kind="omitted")
    stop_at = Cpt(EpicsSignal, "Stop", kind="omitted")
    velocity = Cpt(EpicsSignal, "Velocity", kind="config")
    accel_time = Cpt(EpicsSignal, "AccelTime", kind="config")
    velo_max = Cpt(EpicsSignalRO, "VeloMax_RBV", kind="config")
    enc_res = Cpt(EpicsSignalRO, "EncRes_RBV", kind="config")
    busy = Cpt(EpicsSignalRO, "Busy_RBV", kind="omitted")
    encoder = Cpt(EpicsSignalRO, "Position_RBV", kind="omitted")
    go = Cpt(EpicsSignal, "Go", kind="omitted", put_complete=True)


class _Pcomp(Device):
    start = Cpt(EpicsSignal, "Start", kind="omitted")
    step = Cpt(EpicsSignal, "Step", kind="config")
    width = Cpt(EpicsSignal, "Width", kind="config")
    pulses = Cpt(EpicsSignal, "Pulses", kind="config")
    arm = Cpt(EpicsSignal, "Arm", kind="omitted")
    armed = Cpt(EpicsSignalRO, "Armed_RBV", kind="omitted", auto_monitor=True)
    pulses_out = Cpt(EpicsSignalRO, "PulsesOut_RBV", kind="omitted")
    status = Cpt(EpicsSignalRO, "Status_RBV", kind="omitted", string=True)


class _Pcap(Device):
    file_path = Cpt(EpicsSignal, "FilePath", kind="omitted", string=True)
    file_name = Cpt(EpicsSignal, "FileName", kind="omitted", string=True)
    file_number = Cpt(EpicsSignal, "FileNumber", kind="omitted")
    capture = Cpt(EpicsSignal, "Capture", kind="omitted")
    full_file_name = Cpt(EpicsSignalRO, "FullFileName_RBV", kind="omitted", string=True)
    captured = Cpt(EpicsSignalRO, "Captured_RBV", kind="omitted")


class _Faults(Device):
    miss_pulse = Cpt(EpicsSignal, "MissPulse", kind="omitted")
    drop_frame = Cpt(EpicsSignal, "DropFrame", kind="omitted")
    arm_fail = Cpt(EpicsSignal, "ArmFail", kind="omitted")


class FlyHardware(Device):
    """The fly-scan hardware PVs (``STAGE:``, ``PCOMP:``, ``PCAP:``, ``FAULT:`` under ``pv.fly``)."""

    lazy_wait_for_connection = False
    stage_ = Cpt(_Stage, "STAGE:", kind="config")
    pcomp = Cpt(_Pcomp, "PCOMP:", kind="config")
    pcap = Cpt(_Pcap, "PCAP:", kind="omitted")
    fault = Cpt(_Faults, "FAULT:", kind="omitted")


class LineReport(Device):
    """What one line attempt did (read into the ``lines`` stream after every attempt, retries included).

    ``status``: ``"accepted"`` (in the primary stream), ``"superseded"`` (short, flown again: its frames
    and positions stay in the files, referenced here only) or ``"short"`` (short after the last retry: the
    run fails). ``image_file``/``pcap_file``: the run's detector and position-capture files;
    ``image_first``/``pcap_first``: the attempt's first frame and first capture in them (its ``frames``
    and ``positions`` follow), so every row a run leaves on disk is named by the run.
    """

    eta_index = Cpt(Signal, value=0, kind="normal")
    row = Cpt(Signal, value=0, kind="normal")
    attempt = Cpt(Signal, value=0, kind="normal")
    expected = Cpt(Signal, value=0, kind="normal")
    pulses = Cpt(Signal, value=0, kind="normal")
    positions = Cpt(Signal, value=0, kind="normal")
    frames = Cpt(Signal, value=0, kind="normal")
    dropped = Cpt(Signal, value=0, kind="normal")
    accepted = Cpt(Signal, value=0, kind="normal")
    status = Cpt(Signal, value="", kind="normal")
    image_file = Cpt(Signal, value="", kind="normal")
    pcap_file = Cpt(Signal, value="", kind="normal")
    image_first = Cpt(Signal, value=0, kind="normal")
    pcap_first = Cpt(Signal, value=0, kind="normal")
    duration_s = Cpt(Signal, value=0.0, kind="normal")


class FlyScanner:
    """Flyer over the fly hardware and the Maxipix: one line per ``prepare``/``kickoff``/``complete``.

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
    """

    def __init__(self, hardware, detector, *, fast="pix", slow="piy", name="flyer", readout_s=3e-4,
                 arm_timeout_s=1.0):
        self.hardware, self.detector, self.name = hardware, detector, name
        self.fast, self.slow = fast, slow
        self.readout_s, self.arm_timeout_s = float(readout_s), float(arm_timeout_s)
        self.parent = None
        self.line_report = LineReport(name="fly_line")
        self.last_line: dict = {}
        self._line: dict = {}
        self._index = 0
        self._pending: list = []
        self._go_status = None
        self._saved: dict = {}
        self._cache: dict = {}
        self._prearmed = False  # the detector is armed for the next line already
        self._limits = None  # the stage's velocity limit and encoder resolution
        self._prearm_done = None
        self._files: dict = {}  # the run's open files: {"image": path, "pcap": path}
        self._rows = {"image": 0, "pcap": 0}  # frames and captures in them so far (where the next line starts)
        self._resources: dict = {}  # data key -> ComposeStreamResource bundle (one per field per run)

    def wait_for_connection(self, timeout: float = 10.0) -> None:
        """Connect every signal of the hardware and the detector within ``timeout`` s (ophyd connects lazily;
        ``read()`` of a signal not yet connected raises instead of waiting)."""
        deadline = time.monotonic() + float(timeout)
        for device in (self.hardware, self.detector):
            _instantiate_without_waiting(device)
            device.wait_for_connection(all_signals=True, timeout=max(deadline - time.monotonic(), 0.1))

    # ---------------------------------------------------------------- protocol helpers
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

    def read_configuration(self):
        return {**self.detector.read_configuration(), **self.hardware.read_configuration()}

    def describe_configuration(self):
        return {**self.detector.describe_configuration(), **self.hardware.describe_configuration()}

    def stage(self):
        """Detector to external trigger; open the run's two files: the detector's (compressed, streamed:
        every line's frames appended) and the position capture's beside it.

        One file per run rather than per line: the catalog lists a field's files in every update, so a
        file per line made each update, and the run's end, grow with the map (300 lines: 2 s at the stop).
        """
        det, hdf, pcap = self.detector, self.detector.hdf5, self.hardware.pcap
        self._saved = {sig: sig.get() for sig in (det.cam.trigger_mode, det.cam.image_mode, hdf.file_write_mode,
                                                   hdf.auto_increment, hdf.num_capture)}
        write = hdf.write_path_template
        run_tag = f"fly_{int(time.time() * 1e3) % 10**9:09d}"
        for sig, value in ((det.cam.acquire, 0), (det.cam.trigger_mode, 1), (det.cam.image_mode, 1),
                           (hdf.enable, "Enable"), (hdf.file_path, write), (hdf.file_name, run_tag),
                           (hdf.file_template, "%s%s_%6.6d.h5"), (hdf.file_number, 0), (hdf.auto_increment, 1),
                           (hdf.file_write_mode, 2), (hdf.num_capture, 0), (pcap.file_path, write.rstrip("/") or "/"),
                           (pcap.file_name, run_tag + "_pcap"), (pcap.file_number, 0)):
            sig.set(value).wait(10)
        self._cache.clear()
        self._limits = None
        self._resources.clear()
        self._rows = {"image": 0, "pcap": 0}
        self._files = {}
        try:
            self._open_files()
        except Exception:
            self._close_files()
            raise
        return [self]

    def _open_files(self) -> None:
        """Open the detector's and the position capture's files, or raise naming why they did not open."""
        hdf, pcap = self.detector.hdf5, self.hardware.pcap
        hdf.capture.put(1, wait=True, timeout=10)
        if int(hdf.write_status.get(use_monitor=False)) != 0:
            raise RuntimeError(f"{self.name}: the detector did not open its file in {hdf.file_path.get()!r}: "
                               f"{hdf.write_message.get(use_monitor=False)}; check detector.write_path")
        self._files["image"] = str(hdf.full_file_name.get(use_monitor=False))
        pcap.capture.put(1, wait=True, timeout=10)  # a refused put leaves Capture at 0
        if int(pcap.capture.get(use_monitor=False)) != 1:
            raise RuntimeError(f"{self.name}: the position capture did not open a file in "
                               f"{pcap.file_path.get()!r} (does the directory exist there?)")
        self._files["pcap"] = str(pcap.full_file_name.get(use_monitor=False))

    def unstage(self):
        self._wait_prearm()
        self._disarm_prearmed()
        self._close_files()
        for sig, value in self._saved.items():
            sig.set(value).wait(10)
        self._saved = {}
        return [self]

    def _close_files(self) -> None:
        """Stop the detector and close the run's files (their frames and captures stay)."""
        self._prearmed = False
        self._stop_camera()
        try:
            for capture in (self.detector.hdf5.capture, self.hardware.pcap.capture):
                if capture.get(use_monitor=False) != 0:
                    capture.set(0).wait(10)
        except Exception:  # noqa: BLE001 - the original error matters more; the next stage reopens
            pass

    # ---------------------------------------------------------------- one line
    def prepare(self, line: dict):
        """Set the line up: ``line`` = {x0, x1, num, dwell_s, eta_index, row, attempt} (um, s)."""
        x0, x1, num, dwell = float(line["x0"]), float(line["x1"]), int(line["num"]), float(line["dwell_s"])
        _, exposure = self.check_line(x0, x1, num, dwell)
        params = line_parameters(x0, x1, num, dwell, exposure)
        hw, cam = self.hardware, self.detector.cam
        detector = ((cam.acquire_time, exposure), (cam.acquire_period, dwell), (cam.num_images, num))
        targets = ((hw.stage_.start, params["stage_start"]), (hw.stage_.stop_at, params["stage_stop"]),
                   (hw.stage_.velocity, params["velocity"]), (hw.pcomp.start, params["pcomp_start"]),
                   (hw.pcomp.step, params["step"]), (hw.pcomp.width, params["width"]),
                   (hw.pcomp.pulses, num)) + detector
        if any(self._cache.get(sig.name) != value for sig, value in detector):
            self._wait_prearm()  # else the arming goes on while the stage and trigger unit are set up
            self._disarm_prearmed()  # armed for other settings: the detector reads them when armed
        statuses = []
        for sig, value in targets:  # only what changed since the last line: fewer round trips
            if self._cache.get(sig.name) != value:
                statuses.append(sig.set(value))
                self._cache[sig.name] = value
        self._line = dict(line, num=num, exposure_s=exposure)
        return _all(statuses, self)

    def kickoff(self):
        """Arm the detector (unless done while the last line was collected), arm the trigger unit, start the
        sweep."""
        status = Status(obj=self)
        hw = self.hardware
        self._t_kick = time.monotonic()
        try:
            self._wait_prearm()
            if not self._prearmed:
                deadline = time.monotonic() + 60.0  # a line interrupted by a pause finishes its sweep first
                while hw.stage_.busy.get(use_monitor=False) and time.monotonic() < deadline:
                    time.sleep(0.01)
                self._arm_detector()
                self._prearmed = True
            hw.pcomp.arm.put(1, wait=True)
            if not _wait_for(hw.pcomp.armed, lambda v: v == 1, self.arm_timeout_s):
                raise RuntimeError(
                    f"{self.name}: trigger unit {hw.pcomp.prefix} did not arm within {self.arm_timeout_s:g} s "
                    f"({hw.pcomp.status.get(use_monitor=False)!r}); the lines taken so far are in the run")
        except Exception as exc:  # noqa: BLE001 - fails the kickoff with the cause
            self._disarm_prearmed()
            status.set_exception(exc)
            return status
        self._prearmed = False
        self._t0 = time.monotonic()
        self._go_status = hw.stage_.go.set(1)
        status.set_finished()
        return status

    def _arm_detector(self) -> None:
        """Arm the detector for the prepared line (its frames go to the run's open file)."""
        det = self.detector
        det.cam.acquire.put(1, use_complete=False)
        if not _wait_for(det.cam.detector_state, lambda v: v == "Acquire", 5.0):
            raise TimeoutError(f"{det.name}: not armed within 5 s ({det.cam.detector_state.get()!r})")

    def complete(self):
        """Finished once the stage stopped, the detector wrote its frames and the counts are read; then the
        detector is armed again for the next line (while the plan collects and moves)."""
        status = Status(obj=self)
        go = self._go_status

        def finish():
            try:
                go.wait(600)
                self._t_swept = time.monotonic()
                det = self.detector
                # no more pulses will come: a short line's detector stops waiting for them (a complete
                # line's has stopped already); DetectorState goes Idle once every frame is in the file
                det.cam.acquire.put(0, use_complete=False)
                if not _wait_for(det.cam.detector_state, lambda v: v in ("Idle", "Error"), 30.0):
                    raise TimeoutError(f"{det.name}: frames of the line not written within 30 s")
                self.last_line = self._count()
            except Exception as exc:  # noqa: BLE001
                status.set_exception(exc)
                return
            self._prearm_done = done = threading.Event()  # before the plan goes on: prepare waits for it
            status.set_finished()
            self._prearm(done)

        threading.Thread(target=finish, daemon=True, name=f"{self.name}-complete").start()
        return status

    # ---------------------------------------------------------------- the next line armed early
    def _prearm(self, done: threading.Event) -> None:
        """Arm the detector for the next line now (same settings), so its kickoff only arms the trigger unit."""
        try:
            self._arm_detector()
            self._prearmed = True
        except Exception:  # noqa: BLE001 - the next kickoff arms it again and reports what fails
            self._prearmed = False
            self._stop_camera()
        finally:
            done.set()

    def _wait_prearm(self) -> None:
        done = self._prearm_done
        if done is not None:
            done.wait(30)
            self._prearm_done = None

    def _disarm_prearmed(self) -> None:
        """Disarm the detector armed for a line that will not come (other settings, end of the run); the
        run's file stays open."""
        if self._prearmed:
            self._prearmed = False
            self._stop_camera()

    def _stop_camera(self) -> None:
        try:
            self.detector.cam.acquire.set(0).wait(5)
        except Exception:  # noqa: BLE001 - the original error matters more
            pass

    def _count(self) -> dict:
        """The line's counts: pulses, captures and frames it added to the run's files, where they start."""
        hw, det = self.hardware, self.detector
        n = int(self._line["num"])
        rows = self._rows
        in_files = {"image": int(det.hdf5.num_captured.get(use_monitor=False)),
                    "pcap": int(hw.pcap.captured.get(use_monitor=False))}
        report = dict(self._line, expected=n, pulses=int(hw.pcomp.pulses_out.get(use_monitor=False)),
                      positions=in_files["pcap"] - rows["pcap"], frames=in_files["image"] - rows["image"],
                      dropped=int(det.cam.dropped_frames.get(use_monitor=False)), image_file=self._files.get("image", ""),
                      pcap_file=self._files.get("pcap", ""), image_first=rows["image"], pcap_first=rows["pcap"],
                      duration_s=time.monotonic() - self._t0, sweep_s=self._t_swept - self._t0,
                      kickoff_s=self._t0 - self._t_kick)
        self._rows = in_files  # a short attempt's rows stay in the files; the next line starts after them
        report["ok"] = (report["pulses"] == report["positions"] == report["frames"] == n
                        and report["dropped"] == 0)
        return report

    def show_line(self, report: dict) -> None:
        """Put a counted attempt in ``line_report`` (read next into the ``lines`` stream). The plan
        documents a line while the next one flies, so the report is passed, not taken as the latest."""
        for key in ("eta_index", "row", "attempt", "expected", "pulses", "positions", "frames", "dropped",
                    "image_first", "pcap_first", "duration_s"):
            getattr(self.line_report, key).put(report.get(key, 0))
        self.line_report.accepted.put(int(report["ok"]))
        last = int(report.get("attempt", 0)) >= int(report.get("max_retries", 0))
        self.line_report.status.put("accepted" if report["ok"] else "short" if last else "superseded")
        self.line_report.image_file.put(self._readable(report["image_file"]))
        self.line_report.pcap_file.put(self._readable(report["pcap_file"]))

    def accept_line(self, report: dict) -> None:
        """Queue a counted line's assets for the next ``collect`` (only an accepted line is collected)."""
        if report["ok"]:
            self._pending.append(report)

    # ---------------------------------------------------------------- collect
    def describe_collect(self):
        rows, cols = (int(v) for v in self.detector.frame_shape.get())
        hw = self.hardware
        source = hw.pcap.prefix
        return {
            self.image_key: {"source": self.detector.hdf5.prefix, "shape": [rows, cols], "dtype": "array",
                             "dtype_numpy": "<u4", "external": "STREAM:"},
            self.fast: {"source": source + "pix", "shape": [], "dtype": "number", "dtype_numpy": "<f8",
                        "units": "um", "external": "STREAM:"},
            self.slow: {"source": source + "piy", "shape": [], "dtype": "number", "dtype_numpy": "<f8",
                        "units": "um", "external": "STREAM:"},
            f"{self.name}_time": {"source": source + "time", "shape": [], "dtype": "number", "dtype_numpy": "<f8",
                                  "units": "s", "external": "STREAM:"},
        }

    def collect_asset_docs(self, index=None):
        """A StreamResource per field with the first accepted line (the run's files), then a StreamDatum per
        field and line naming its rows in them (a retried line's rows follow its short attempt's)."""
        from event_model import ComposeStreamResource, StreamRange

        rows, cols = (int(v) for v in self.detector.frame_shape.get())
        pending, self._pending = self._pending, []
        for line in pending:
            n = int(line["expected"])
            image = (self._readable(line["image_file"]), int(line["image_first"]))
            pcap = (self._readable(line["pcap_file"]), int(line["pcap_first"]))
            sources = ((self.image_key, image, "/entry/data/data", [1, rows, cols]),
                       (self.fast, pcap, "/pix", [n]), (self.slow, pcap, "/piy", [n]),
                       (f"{self.name}_time", pcap, "/time", [n]))
            for data_key, (path, first), dataset, chunks in sources:
                bundle = self._resources.get(data_key)
                if bundle is None:  # the file is open for writing: read in SWMR mode
                    bundle = ComposeStreamResource()(
                        mimetype="application/x-hdf5", uri=f"file://localhost{path}", data_key=data_key,
                        parameters={"dataset": dataset, "chunk_shape": chunks, "swmr": True})
                    self._resources[data_key] = bundle
                    yield "stream_resource", bundle.stream_resource_doc
                yield "stream_datum", bundle.compose_stream_datum(indices=StreamRange(start=first, stop=first + n))
            self._index += n

    def get_index(self) -> int:
        return self._index

    def _readable(self, path: str) -> str:
        """A file path as this computer sees it (the detector's write path -> read path)."""
        hdf = self.detector.hdf5
        write, read = hdf.write_path_template, hdf.read_path_template
        if write != read and path.startswith(write):
            path = read + path[len(write):]
        return str(PurePosixPath(path))

    def stop(self, *, success=False):
        """Stop the detector (a line in flight takes no more frames); ``unstage`` closes the files."""
        self._wait_prearm()
        self._prearmed = False
        self._stop_camera()

    def pause(self):
        pass

    def resume(self):
        pass


def _instantiate_without_waiting(device) -> None:
    """Create every lazy component of ``device`` without ophyd's wait of 1 s for each to connect (a busy
    machine exceeded it: the detector's ``array_size`` group); the caller then waits for them all at once."""
    device.lazy_wait_for_connection = False
    for attr in device.component_names:
        child = getattr(device, attr)
        if isinstance(child, Device):
            _instantiate_without_waiting(child)


def _wait_for(signal, ok, timeout: float) -> bool:
    """Wait until a monitored ``signal``'s value satisfies ``ok`` (no polling round trips)."""
    event = threading.Event()

    def check(value, **kwargs):
        if ok(value):
            event.set()

    token = signal.subscribe(check, run=True)
    try:
        return event.wait(timeout)
    finally:
        signal.unsubscribe(token)


def _all(statuses, obj):
    status = Status(obj=obj)
    if not statuses:
        status.set_finished()
        return status

    def wait():
        try:
            for s in statuses:
                s.wait(30)
        except Exception as exc:  # noqa: BLE001
            status.set_exception(exc)
        else:
            status.set_finished()

    threading.Thread(target=wait, daemon=True).start()
    return status


def make_flyer(devices: dict, cfg, *, name: str | None = None) -> FlyScanner:
    """The flyer over ``devices["fly"]`` and ``devices["detector"]`` (from ``make_devices``), fast axis
    ``pix``, slow axis ``piy``, read-out time and arm time-out from ``[fly]``.

    Named after the detector by default (``mpx1x4``): the descriptor's configuration then
    carries the detector's geometry under its own name, as a step scan's does.
    """
    if "fly" not in devices:
        raise ValueError("no fly-scan hardware: set config pv.fly to its PV prefix (e.g. 'BSSIM:fly:')")
    flyer = FlyScanner(devices["fly"], devices["detector"], fast="pix", slow="piy",
                       name=name or devices["detector"].name,
                       readout_s=cfg.get("fly.readout_s", 3e-4), arm_timeout_s=cfg.get("fly.arm_timeout_s", 1.0))
    flyer.wait_for_connection()
    return flyer
