"""Simulated fly-scan hardware (caproto): piezo fly stage, position-compare trigger unit, position capture.

Served by the same simulator as the motors and the Maxipix (:mod:`.ioc_run`), on the
same :class:`~braggscope.simulators.ioc_motors.BeamlineState`, so each detector frame
is rendered where the stage really was. PVs under the prefix (``pv.fly``, default
``"BSSIM:fly:"``):

``STAGE:`` the fast piezo axis in fly mode
    ``Start``, ``Stop`` (um: the constant-velocity part of the sweep), ``Velocity`` (um/s),
    ``AccelTime`` (s, each ramp), ``VeloMax_RBV`` (um/s), ``EncRes_RBV`` (um), ``Go``
    (put 1: sweep the line; put-completion when the stage has stopped and the
    capture file is written), ``Busy_RBV``, ``Position_RBV`` (um, the encoder).
``PCOMP:`` the position-compare unit (PandA/Zebra-like)
    ``Start`` (um), ``Step`` (um, signed: the direction), ``Width`` (s, the gate),
    ``Pulses``, ``Arm`` (put 1; armed for one line), ``Armed_RBV``, ``PulsesOut_RBV``,
    ``Status_RBV`` (text).
``PCAP:`` the position capture
    ``FilePath``, ``FileName``, ``FileNumber`` (auto-incremented), ``Capture`` (put 1: open
    ``<FilePath>/<FileName>_<FileNumber:06d>.h5``; every armed line's captures are appended to
    it until put 0 closes it, as PandA's HDF writer keeps one file per scan),
    ``FullFileName_RBV``, ``Captured_RBV`` (captures in the open file): ``/pix`` (mean encoder
    position over each gate, um), ``/piy`` (slow axis, um), ``/time`` (pulse time from the start
    of its line's motion, s) and ``/mon1`` (the incident-flux monitor's counts over each gate, as a
    PandA counts a diode's pulses), appended and flushed (SWMR) during each line's run-down. An
    armed line while no file is open captures nothing (``Status_RBV`` says so).
``FAULT:`` switches for tests
    ``MissPulse`` (index of a pulse the next line does not emit; -1: none), ``DropFrame``
    (index of a pulse whose frame the detector loses; -1: none), ``ArmFail`` (1: the
    unit refuses to arm, ``Status_RBV`` says why). One-shot faults clear after the line.

The timing is :mod:`.fly_timing` played in real time (``realtime=False``: no waiting).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from braggscope.core import compat

from .fly_timing import sweep

__all__ = ["FlyIOC", "append_capture", "open_capture"]

_STR = dict(dtype=ChannelType.CHAR, max_length=1024, string_encoding="utf-8")


CAPTURE_FIELDS = ("pix", "piy", "time", "mon1")


def open_capture(path: Path):
    """A new capture file: empty ``/pix``, ``/piy`` (um), ``/time`` (s), ``/mon1`` (counts) datasets that
    grow, in SWMR mode (the catalog and the live maps read it while lines are appended)."""
    import h5py

    f = h5py.File(path, "w", libver="latest")
    for name in CAPTURE_FIELDS:
        f.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(4096,), dtype=np.float64)
    f.swmr_mode = True
    return f


def append_capture(f, pix, piy, times, mon1) -> int:
    """Append one line's captures and flush them; returns the captures now in the file."""
    n = f["pix"].shape[0]
    for name, values in zip(CAPTURE_FIELDS, (pix, piy, times, mon1)):
        dset = f[name]
        dset.resize(n + len(values), axis=0)
        dset[n:] = np.asarray(values, dtype=np.float64)
        dset.flush()
    f.flush()
    return n + len(pix)


class StageGroup(PVGroup):
    """``STAGE:`` -- the fast axis in fly mode."""

    start = pvproperty(name="Start", value=0.0, dtype=ChannelType.DOUBLE)
    stop = pvproperty(name="Stop", value=1.0, dtype=ChannelType.DOUBLE)
    velocity = pvproperty(name="Velocity", value=10.0, dtype=ChannelType.DOUBLE)
    accel_time = pvproperty(name="AccelTime", value=0.005, dtype=ChannelType.DOUBLE)
    velo_max = pvproperty(name="VeloMax_RBV", value=500.0, dtype=ChannelType.DOUBLE, read_only=True)
    enc_res = pvproperty(name="EncRes_RBV", value=0.001, dtype=ChannelType.DOUBLE, read_only=True)
    busy = pvproperty(name="Busy_RBV", value=0, dtype=ChannelType.LONG, read_only=True)
    position = pvproperty(name="Position_RBV", value=0.0, dtype=ChannelType.DOUBLE, read_only=True)
    go = pvproperty(name="Go", value=0, dtype=ChannelType.LONG)

    @velocity.putter
    async def velocity(self, instance, value):
        if not 0 < value <= self.velo_max.value:
            raise ValueError(f"{self.prefix}Velocity must be in (0, {self.velo_max.value}] um/s, got {value}")
        return value

    @accel_time.putter
    async def accel_time(self, instance, value):
        if not 0 <= value <= 10:
            raise ValueError(f"{self.prefix}AccelTime must be in [0, 10] s, got {value}")
        return value

    @go.putter
    async def go(self, instance, value):
        if int(value) == 1:
            await self.parent.run_line()
        return 0


class PcompGroup(PVGroup):
    """``PCOMP:`` -- position compare: a pulse each time the encoder crosses the next position."""

    start = pvproperty(name="Start", value=0.0, dtype=ChannelType.DOUBLE)
    step = pvproperty(name="Step", value=0.1, dtype=ChannelType.DOUBLE)
    width = pvproperty(name="Width", value=0.001, dtype=ChannelType.DOUBLE)
    pulses = pvproperty(name="Pulses", value=1, dtype=ChannelType.LONG)
    arm = pvproperty(name="Arm", value=0, dtype=ChannelType.LONG)
    armed = pvproperty(name="Armed_RBV", value=0, dtype=ChannelType.LONG, read_only=True)
    pulses_out = pvproperty(name="PulsesOut_RBV", value=0, dtype=ChannelType.LONG, read_only=True)
    status = pvproperty(name="Status_RBV", value="idle", read_only=True, **_STR)

    @pulses.putter
    async def pulses(self, instance, value):
        if value < 1:
            raise ValueError(f"{self.prefix}Pulses must be >= 1, got {value}")
        return value

    @arm.putter
    async def arm(self, instance, value):
        if int(value) != 1:
            await self.armed.write(0)
            return 0
        if self.parent.fault.arm_fail.value:
            await self.status.write("arm refused: position-compare encoder input not ready")
            await self.armed.write(0)
            return 0
        await self.pulses_out.write(0)
        await self.status.write("armed")
        await self.armed.write(1)
        return 0


class PcapGroup(PVGroup):
    """``PCAP:`` -- position capture: one HDF5 file from ``Capture`` = 1 to 0, every armed line appended."""

    file_path = pvproperty(name="FilePath", value="/tmp", **_STR)
    file_name = pvproperty(name="FileName", value="pcap", **_STR)
    file_number = pvproperty(name="FileNumber", value=0, dtype=ChannelType.LONG)
    capture = pvproperty(name="Capture", value=0, dtype=ChannelType.LONG)
    full_file_name = pvproperty(name="FullFileName_RBV", value="", read_only=True, **_STR)
    captured = pvproperty(name="Captured_RBV", value=0, dtype=ChannelType.LONG, read_only=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h5 = None  # the open capture file

    @capture.putter
    async def capture(self, instance, value):
        loop = asyncio.get_running_loop()
        if self.parent.stage.busy.value:
            raise RuntimeError(f"{self.prefix}Capture: a line is running")
        if self.h5 is not None:  # 0 closes; 1 closes the open file and opens the next
            h5, self.h5 = self.h5, None
            await loop.run_in_executor(None, h5.close)
        if int(value) != 1:
            return 0
        directory = Path(self.file_path.value)
        if not directory.is_dir():
            raise ValueError(f"{self.prefix}FilePath: directory does not exist: {directory}")
        path = directory / f"{self.file_name.value}_{int(self.file_number.value):06d}.h5"
        self.h5 = await loop.run_in_executor(None, open_capture, path)
        await self.full_file_name.write(str(path))
        await self.captured.write(0)
        await self.file_number.write(int(self.file_number.value) + 1)
        return 1

    async def append(self, pix, piy, times, mon1) -> None:
        """Append a line's captures to the open file (off the event loop) and post the count."""
        count = await asyncio.get_running_loop().run_in_executor(None, append_capture, self.h5, pix, piy, times,
                                                                 mon1)
        await self.captured.write(count)


class FaultGroup(PVGroup):
    """``FAULT:`` -- faults the tests switch on."""

    miss_pulse = pvproperty(name="MissPulse", value=-1, dtype=ChannelType.LONG)
    drop_frame = pvproperty(name="DropFrame", value=-1, dtype=ChannelType.LONG)
    arm_fail = pvproperty(name="ArmFail", value=0, dtype=ChannelType.LONG)


class FlyIOC(PVGroup):
    """The fly-scan hardware.

    Parameters
    ----------
    prefix : str
        e.g. ``"BSSIM:fly:"``.
    state : BeamlineState
        Shared positions; the sweep writes ``state.positions[fast]``.
    detector : MaxipixIOC or None
        Receives one :meth:`~.ioc_detector.MaxipixIOC.external_trigger` per pulse.
    fast_motor : MotorRecord or None
        The fast axis' motor record, kept in step with the sweep (its readback and setpoint).
    fast, slow : str
        Names of the fast and slow axes in ``state``.
    velocity_max_um_s, encoder_resolution_um, accel_time_s : float
        Stage limits and defaults.
    realtime : bool
        Play the line in real time (False: at once).
    beam : IncidentBeam, optional
        The flux the captured monitor counts follow (none: the full flux).
    monitor : MonitorCounter, optional
        The incident-flux monitor counted over each gate (none: ``/mon1`` holds zeros).
    """

    stage = SubGroup(StageGroup, prefix="STAGE:")
    pcomp = SubGroup(PcompGroup, prefix="PCOMP:")
    pcap = SubGroup(PcapGroup, prefix="PCAP:")
    fault = SubGroup(FaultGroup, prefix="FAULT:")

    def __init__(self, prefix, *, state, detector=None, fast_motor=None, fast="pix", slow="piy",
                 velocity_max_um_s=500.0, encoder_resolution_um=0.001, accel_time_s=0.005, realtime=True,
                 beam=None, monitor=None, **kwargs):
        super().__init__(prefix, **kwargs)
        self.state, self.detector, self.fast_motor = state, detector, fast_motor
        self.fast, self.slow, self.realtime = fast, slow, bool(realtime)
        self.beam, self.monitor = beam, monitor
        compat.set_initial_value(self.stage.velo_max, float(velocity_max_um_s))
        compat.set_initial_value(self.stage.enc_res, float(encoder_resolution_um))
        compat.set_initial_value(self.stage.accel_time, float(accel_time_s))

    async def run_line(self) -> None:
        """Sweep one line; pulses (if armed) trigger the detector; write the captures."""
        stage, pcomp, pcap, fault = self.stage, self.pcomp, self.pcap, self.fault
        if stage.busy.value:
            raise RuntimeError(f"{stage.prefix}Go: a line is already running")
        await stage.busy.write(1)
        try:
            accel = float(stage.accel_time.value)
            timing = sweep(stage_start=float(stage.start.value), stage_stop=float(stage.stop.value),
                           velocity=float(stage.velocity.value), accel_time_s=accel,
                           pcomp_start=float(pcomp.start.value), step=float(pcomp.step.value),
                           pulses=int(pcomp.pulses.value), width=float(pcomp.width.value),
                           encoder_resolution_um=float(stage.enc_res.value))
            await self._move_to(timing.runup_start)
            armed = bool(pcomp.armed.value)
            miss, drop = int(fault.miss_pulse.value), int(fault.drop_frame.value)
            pix, piy, times = [], [], []
            t0 = time.monotonic()
            last_publish = 0.0
            for k, (t_k, centre, captured) in enumerate(zip(timing.pulse_times, timing.centres, timing.captured)):
                await self._wait_until(t0 + t_k)
                self.state.positions[self.fast] = float(timing.pulse_positions[k])
                if t_k - last_publish > 0.02:  # readbacks at ~50 Hz, not per pulse
                    await self._publish(float(timing.pulse_positions[k]))
                    last_publish = t_k
                if not armed or k == miss:
                    continue
                positions = self.state.snapshot()
                positions[self.fast] = float(centre)  # the beam's mean position over the exposure
                pix.append(float(captured))
                piy.append(float(positions.get(self.slow, 0.0)))
                times.append(float(t_k))
                if self.detector is not None:
                    await self.detector.external_trigger(float(t_k), positions, drop=(k == drop))
            await pcomp.pulses_out.write(len(pix))  # once per line: no CA traffic per pulse
            capturing = armed and pcap.h5 is not None
            if capturing:  # the captures are written during the run-down, the last gate closed
                await self._wait_until(t0 + (times[-1] if times else 0.0) + float(pcomp.width.value))
                mon1 = self._monitor_counts(t0, times, float(pcomp.width.value))
                written = asyncio.get_running_loop().create_task(pcap.append(pix, piy, times, mon1))
            await self._wait_until(t0 + timing.duration)
            await self._publish(timing.runup_end, settle=True)
            if armed:
                if capturing:
                    await written
                await pcomp.armed.write(0)
                await pcomp.status.write(f"done: {len(pix)} pulses" if capturing else
                                         f"done: {len(pix)} pulses, not captured (PCAP:Capture is 0)")
            for switch in (fault.miss_pulse, fault.drop_frame):  # one-shot faults: cleared after their line
                if switch.value != -1:
                    await switch.write(-1)
        finally:
            await stage.busy.write(0)

    def _monitor_counts(self, t0: float, times, width: float) -> np.ndarray:
        """The monitor's counts over each gate ``[t0 + t, t0 + t + width]`` (monotonic clock, s)."""
        if self.monitor is None:
            return np.zeros(len(times))
        fluxes = [1.0 if self.beam is None else self.beam.mean_flux(t0 + t, t0 + t + width) for t in times]
        return self.monitor.counts(np.full(len(times), width), fluxes)

    async def _wait_until(self, when: float) -> None:
        if self.realtime:
            delay = when - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _move_to(self, position: float) -> None:
        """Go to the start of the run-up at the stage's maximum velocity."""
        here = float(self.state.positions.get(self.fast, position))
        duration = abs(position - here) / max(float(self.stage.velo_max.value), 1e-9)
        await self._wait_until(time.monotonic() + duration)
        self.state.positions[self.fast] = position
        await self._publish(position, settle=True)

    async def _publish(self, position: float, settle: bool = False) -> None:
        """Encoder readback, and the fast motor record kept where the stage is."""
        self.state.positions[self.fast] = position
        await self.stage.position.write(position)
        if self.fast_motor is not None:  # its setpoint follows too when settled: a later move starts here
            await self.fast_motor.follow(position, settle=settle)

