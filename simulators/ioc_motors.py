"""Simulated EPICS motor records (caproto) for the braggscope simulator.

Each motor is a :class:`MotorRecord` ``PVGroup`` serving the motor-record
fields that ``ophyd.EpicsMotor`` (1.11.2) uses: the record PV (= ``.VAL``),
``.RBV``, ``.DMOV``, ``.MOVN``, ``.STOP``, ``.SPMG``, ``.VELO``, ``.ACCL``,
``.HLM``/``.LLM``, ``.HLS``/``.LLS``, ``.TDIR``, ``.DIR``, ``.OFF``, ``.SET``,
``.FOFF``, ``.MSTA``, ``.CNEN``, ``.HOMF``/``.HOMR``, ``.EGU``, ``.DESC``,
``.PREC``.

Motion is at constant velocity (``.VELO`` in EGU/s; ``.ACCL`` is served but
not simulated), updated every ``tick_s``; a put to ``.VAL`` outside the soft limits ``[.LLM, .HLM]`` is
refused with an error (and the record PV carries the limits as control
limits, so ophyd raises ``LimitError`` before sending). A put to ``.VAL``
completes (put-callback) when the move is done. ``.STOP`` (or ``.SPMG`` set to
``Stop``) halts the motion where it is. The configured range is also the stage's travel: with
soft limits set wider, a move runs onto a hardware limit switch, stops there and ends with
``.HLS``/``.LLS`` set, posted before ``.DMOV`` as the motor record posts them.

All motors of one simulator share a :class:`BeamlineState`, a plain Python
object holding the current positions that the detector IOC reads.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

from caproto import ChannelType, SkipWrite
from caproto.server import PVGroup, pvproperty

__all__ = ["MOTOR_SPECS", "BeamlineState", "MotorSpec", "MotorRecord", "full_pvdb", "motor_groups", "post_if_changed"]


@dataclass(frozen=True)
class MotorSpec:
    """Static description of one simulated motor.

    Parameters
    ----------
    name : str
        Motor name, also the PV suffix (``prefix + name``).
    egu : str
        Engineering units.
    velocity : float
        Default speed in EGU per second.
    limits : tuple of float
        Default soft limits ``(low, high)`` in EGU.
    initial : float
        Start-up position in EGU.
    description : str
        Goes to ``.DESC``.
    precision : int
        Display precision (``.PREC``).
    """

    name: str
    egu: str
    velocity: float
    limits: tuple[float, float]
    initial: float = 0.0
    description: str = ""
    precision: int = 4


#: The simulator's motors: piezo (um), diffractometer circles (deg), energy (keV).
MOTOR_SPECS: tuple[MotorSpec, ...] = (
    MotorSpec("pix", "um", 200.0, (0.0, 100.0), 50.0, "piezo x"),
    MotorSpec("piy", "um", 200.0, (0.0, 100.0), 50.0, "piezo y"),
    MotorSpec("piz", "um", 200.0, (0.0, 100.0), 50.0, "piezo z"),
    MotorSpec("eta", "deg", 5.0, (-5.0, 120.0), 0.0, "sample rocking angle"),
    MotorSpec("phi", "deg", 10.0, (-180.0, 180.0), 0.0, "sample azimuth"),
    MotorSpec("nu", "deg", 5.0, (-10.0, 120.0), 0.0, "detector in-plane angle"),
    MotorSpec("delta", "deg", 5.0, (-5.0, 130.0), 0.0, "detector out-of-plane angle"),
    MotorSpec("energy", "keV", 2.0, (5.0, 30.0), 8.33, "monochromator energy"),
)


@dataclass
class BeamlineState:
    """Positions shared between the motor IOCs and the detector IOC.

    Attributes
    ----------
    positions : dict
        Motor name -> current user position (readback) in the motor's EGU.
    """

    positions: dict[str, float] = field(default_factory=dict)

    def snapshot(self) -> dict[str, float]:
        """A copy of the current positions (safe to hand to a renderer)."""
        return dict(self.positions)


async def post_if_changed(prop, value):
    """Write ``value`` only if it differs: every write is a monitor update to each client, and
    EPICS records post most fields only on change (motor LVIO/TDIR, areaDetector sizes)."""
    if prop.value != value:
        await prop.write(value)


# MSTA bits as in the EPICS motor record
_MSTA_DONE = 1 << 1
_MSTA_MOVING = 1 << 10


class MotorRecord(PVGroup):
    """One simulated EPICS motor record.

    Parameters
    ----------
    prefix : str
        Full record name, e.g. ``"BSSIM:pix"``.
    spec : MotorSpec
        Units, speed, limits and start position.
    state : BeamlineState
        Shared position store (this motor writes ``state.positions[spec.name]``).
    tick_s : float
        Readback update period during a move, in seconds.
    realtime : bool
        Move at ``.VELO`` (default). False: a move reaches its target at once
        (DMOV still goes 1 -> 0 -> 1), to measure the control-system overhead alone.
    """

    val = pvproperty(name="", value=0.0, dtype=ChannelType.DOUBLE, precision=4,
                     doc="user setpoint (record PV = .VAL)")
    rbv = pvproperty(name=".RBV", value=0.0, dtype=ChannelType.DOUBLE, precision=4, read_only=True)
    dmov = pvproperty(name=".DMOV", value=1, dtype=ChannelType.LONG, read_only=True)
    movn = pvproperty(name=".MOVN", value=0, dtype=ChannelType.LONG, read_only=True)
    stop = pvproperty(name=".STOP", value=0, dtype=ChannelType.LONG)
    spmg = pvproperty(name=".SPMG", value="Go", dtype=ChannelType.ENUM,
                      enum_strings=("Stop", "Pause", "Move", "Go"))
    velo = pvproperty(name=".VELO", value=1.0, dtype=ChannelType.DOUBLE, precision=4)
    accl = pvproperty(name=".ACCL", value=0.0, dtype=ChannelType.DOUBLE, precision=3)
    hlm = pvproperty(name=".HLM", value=0.0, dtype=ChannelType.DOUBLE, precision=4)
    llm = pvproperty(name=".LLM", value=0.0, dtype=ChannelType.DOUBLE, precision=4)
    hls = pvproperty(name=".HLS", value=0, dtype=ChannelType.LONG, read_only=True)
    lls = pvproperty(name=".LLS", value=0, dtype=ChannelType.LONG, read_only=True)
    lvio = pvproperty(name=".LVIO", value=0, dtype=ChannelType.LONG, read_only=True)
    tdir = pvproperty(name=".TDIR", value=0, dtype=ChannelType.LONG, read_only=True)
    dir = pvproperty(name=".DIR", value=0, dtype=ChannelType.LONG)
    off = pvproperty(name=".OFF", value=0.0, dtype=ChannelType.DOUBLE, precision=4)
    set = pvproperty(name=".SET", value=0, dtype=ChannelType.LONG)
    foff = pvproperty(name=".FOFF", value=0, dtype=ChannelType.LONG)
    msta = pvproperty(name=".MSTA", value=_MSTA_DONE, dtype=ChannelType.LONG, read_only=True)
    cnen = pvproperty(name=".CNEN", value=1, dtype=ChannelType.LONG)
    homf = pvproperty(name=".HOMF", value=0, dtype=ChannelType.LONG)
    homr = pvproperty(name=".HOMR", value=0, dtype=ChannelType.LONG)
    egu = pvproperty(name=".EGU", value="", dtype=ChannelType.STRING)
    desc = pvproperty(name=".DESC", value="", dtype=ChannelType.STRING)
    prec = pvproperty(name=".PREC", value=4, dtype=ChannelType.LONG)

    def __init__(self, prefix: str, *, spec: MotorSpec, state: BeamlineState,
                 tick_s: float = 0.01, realtime: bool = True, **kwargs):
        super().__init__(prefix, **kwargs)
        if tick_s <= 0:
            raise ValueError(f"tick_s must be > 0, got {tick_s!r}")
        self.spec = spec
        self.state = state
        self.tick_s = float(tick_s)
        self.realtime = bool(realtime)
        self._target = spec.initial
        self._position = spec.initial
        self._halt = False
        self._move_generation = 0
        self._motion_task: asyncio.Task | None = None
        self._done: asyncio.Event | None = None  # created in the server's event loop
        state.positions[spec.name] = spec.initial

    # ------------------------------------------------------------------ start-up
    @val.startup
    async def val(self, instance, async_lib):
        spec = self.spec
        self._done = asyncio.Event()
        self._done.set()
        await self.egu.write(spec.egu)
        await instance.write_metadata(units=spec.egu, precision=spec.precision)
        await self.rbv.write_metadata(units=spec.egu, precision=spec.precision)
        await self.desc.write(spec.description or spec.name)
        await self.prec.write(spec.precision)
        await self.velo.write(spec.velocity)
        await self.llm.write(spec.limits[0])
        await self.hlm.write(spec.limits[1])
        await self.rbv.write(spec.initial)
        await instance.write(spec.initial, verify_value=False)

    # ------------------------------------------------------------------ setpoint
    @val.putter
    async def val(self, instance, value):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{self.prefix}: setpoint must be finite, got {value!r}")
        if self.set.value == 1:
            # calibration (SET mode): change the offset, no motion
            await self.off.write(self.off.value + value - self._position)
            self._position = self._target = value
            await self._publish(value)
            return value
        low, high = self.llm.value, self.hlm.value
        if low < high and not (low <= value <= high):
            await post_if_changed(self.lvio, 1)
            raise ValueError(f"{self.prefix}: {value} is outside the soft limits [{low}, {high}]")
        await post_if_changed(self.lvio, 0)
        if self.spmg.value in ("Stop", "Pause"):
            raise ValueError(f"{self.prefix}: motion disabled (SPMG={self.spmg.value})")
        await instance.write(value, verify_value=False)
        await self._start_move(value)
        raise SkipWrite()

    async def _start_move(self, target: float) -> None:
        """Start (or retarget) a move and wait until it ends."""
        self._target = target
        self._halt = False
        self._move_generation += 1
        self._done.clear()
        if self._motion_task is None or self._motion_task.done():
            self._motion_task = asyncio.get_running_loop().create_task(self._motion())
        await self._done.wait()

    async def _motion(self) -> None:
        """Constant-velocity motion towards ``self._target`` (DMOV 1 -> 0 -> 1), stopped by a
        hardware limit switch at the ends of the travel range (:meth:`_travel`)."""
        await self.dmov.write(0)
        await self.movn.write(1)
        await self.msta.write(_MSTA_MOVING)
        if self.hls.value and self._target < self._position:  # moving off a switch releases it
            await self.hls.write(0)
        if self.lls.value and self._target > self._position:
            await self.lls.write(0)
        last = time.monotonic()
        try:
            while True:
                # sleep one tick, or less when the move ends sooner (short moves stay short)
                eta_s = abs(self._target - self._position) / max(abs(self.velo.value), 1e-12)
                await asyncio.sleep(min(self.tick_s, max(eta_s, 1e-4)) if self.realtime else 0)
                now = time.monotonic()
                dt, last = now - last, now
                if self._halt:
                    break
                remaining = self._target - self._position
                await post_if_changed(self.tdir, 1 if remaining >= 0 else 0)
                step = max(abs(self.velo.value), 1e-12) * dt
                arrived = abs(remaining) <= step or not self.realtime
                low, high = self._travel()
                position = self._target if arrived else self._position + math.copysign(step, remaining)
                if not low <= position <= high:  # on a switch: the motor stops there
                    self._position = min(max(position, low), high)
                    await self._publish(self._position)
                    await post_if_changed(self.hls if position > high else self.lls, 1)
                    self._halt = True
                    break
                self._position = position
                await self._publish(position)
                if arrived:
                    break
        finally:
            if self._halt:
                # a stopped motor records where it is as its new setpoint
                self._target = self._position
                await self.val.write(self._position, verify_value=False)
                self._halt = False
            await self.movn.write(0)
            await self.msta.write(_MSTA_DONE)
            await self.dmov.write(1)
            self._done.set()

    def _travel(self) -> tuple[float, float]:
        """Where the hardware limit switches are, in user units: the configured range (``spec.limits``),
        moved with the user offset (``.OFF``). Soft limits (``.HLM``/``.LLM``) set wider, or disabled,
        let a move run onto a switch, which ends it with ``.HLS`` or ``.LLS`` set, as on a real stage."""
        low, high = self.spec.limits
        return low + self.off.value, high + self.off.value

    async def _publish(self, position: float) -> None:
        self.state.positions[self.spec.name] = position
        await self.rbv.write(position)

    async def follow(self, position: float, *, settle: bool = False) -> None:
        """The record reports ``position``, where another device (the fly stage) has put the axis; with
        ``settle`` its setpoint follows too, so that its next move starts from there."""
        await self._publish(position)
        if settle:
            self._position = self._target = position
            await self.val.write(position, verify_value=False)

    # ------------------------------------------------------------------ stop, limits, homing
    @stop.putter
    async def stop(self, instance, value):
        if value:
            self._halt = True
        return 0

    @spmg.putter
    async def spmg(self, instance, value):
        if value in ("Stop", "Pause"):
            self._halt = True
        return value

    @hlm.putter
    async def hlm(self, instance, value):
        await self.val.write_metadata(upper_ctrl_limit=float(value),
                                      lower_ctrl_limit=float(self.llm.value))
        return value

    @llm.putter
    async def llm(self, instance, value):
        await self.val.write_metadata(lower_ctrl_limit=float(value),
                                      upper_ctrl_limit=float(self.hlm.value))
        return value

    @velo.putter
    async def velo(self, instance, value):
        if not value > 0:
            raise ValueError(f"{self.prefix}.VELO must be > 0, got {value!r}")
        return value

    @homf.putter
    async def homf(self, instance, value):
        if value:
            await self._home()
        return 0

    @homr.putter
    async def homr(self, instance, value):
        if value:
            await self._home()
        return 0

    async def _home(self) -> None:
        """Home search: move to 0 (clamped into the soft limits)."""
        low, high = self.llm.value, self.hlm.value
        home = min(max(0.0, low), high) if low < high else 0.0
        await self.val.write(home, verify_value=False)
        self._target = home
        self._halt = False
        self._done.clear()
        if self._motion_task is None or self._motion_task.done():
            self._motion_task = asyncio.get_running_loop().create_task(self._motion())


def motor_groups(prefix: str, state: BeamlineState, *, specs=MOTOR_SPECS,
                 velocities: dict | None = None, limits: dict | None = None,
                 initial: dict | None = None, tick_s: float = 0.01,
                 realtime: bool = True) -> dict[str, MotorRecord]:
    """Build one :class:`MotorRecord` per motor spec.

    Parameters
    ----------
    prefix : str or dict
        PV prefix prepended to each motor name (``"BSSIM:"`` gives
        ``"BSSIM:pix"``), or a dict motor name -> full record name.
    state : BeamlineState
        Shared positions.
    velocities, limits, initial : dict, optional
        Per-motor overrides: name -> EGU/s, name -> (low, high), name -> start
        position (EGU, clamped into the limits).
    tick_s : float
        Readback update period during moves, seconds.
    realtime : bool
        False: moves take no travel time (see :class:`MotorRecord`).

    Returns
    -------
    dict
        Motor name -> ``MotorRecord``; merge their ``.pvdb`` into one server.
    """
    velocities = velocities or {}
    limits = limits or {}
    initial = initial or {}
    groups = {}
    for spec in specs:
        changes = {}
        if spec.name in initial:
            changes["initial"] = float(initial[spec.name])
        if spec.name in velocities:
            changes["velocity"] = float(velocities[spec.name])
        if spec.name in limits:
            low, high = (float(v) for v in limits[spec.name])
            if not low < high:
                raise ValueError(f"limits[{spec.name!r}] must be (low, high) with low < high, "
                                 f"got {limits[spec.name]!r}")
            start = min(max(changes.get("initial", spec.initial), low), high)
            changes.update(limits=(low, high), initial=start)
        if changes:
            spec = MotorSpec(**{**spec.__dict__, **changes})
        record = prefix[spec.name] if isinstance(prefix, dict) else prefix + spec.name
        groups[spec.name] = MotorRecord(record, spec=spec, state=state, tick_s=tick_s,
                                        realtime=realtime)
    return groups


def full_pvdb(groups) -> dict:
    """Merge groups' pvdbs, adding ``record.VAL`` aliases for motor records."""
    pvdb = {}
    for group in groups:
        pvdb.update(group.pvdb)
        if isinstance(group, MotorRecord):
            pvdb[group.prefix + ".VAL"] = group.val
    return pvdb
