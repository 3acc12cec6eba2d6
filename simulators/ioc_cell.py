"""Simulated potentiostat and electrochemical cell IOC (caproto): what an operando cell tells a beamline.

PVs under the prefix (``pv.potentiostat``, e.g. ``"BSSIM:cell:"``), served from a :class:`.cell.Cell`
(the physics is in :mod:`.cell` and :mod:`.cell_sample`):

============================ ==========================================================
``Voltage_RBV``              cell voltage (V vs Li/Li+), OCV plus the IR drop
``Current_RBV``              current (mA), positive on charge
``Charge_RBV``               charge passed since the protocol started (mAh)
``LiContent_RBV``            lithium content x of the electrode (from the charge, as a
                             potentiostat's software computes it from the active mass)
``Cycle_RBV``, ``Step_RBV``  cycle and step number (1-based; 0 before a start)
``StepKind_RBV``             ``rest``, ``cc_charge``, ``cc_discharge``, ``cv_hold`` or ``""``
``Status_RBV``               ``idle``, ``running``, ``paused`` or ``done``
``Time_RBV``                 protocol time (s of the cell's clock)
``Protocol``                 the protocol, JSON (:class:`braggscope.core.electrochem.Protocol`)
``Start``                    put 1: run ``Protocol`` from its first step
``Pause``                    put 1: open circuit, the protocol's clock stopped; put 0: go on
``Stop``                     put 1: end the protocol
``Capacity_RBV``             the nominal capacity defining 1 C (mAh)
``Material_RBV``             the electrode material
``SIM:TimeScale``            seconds of the cell's clock per second (tests and demos)
``SIM:Front_RBV``            the fraction of the particle behind the lithium front (truth)
``SIM:ShellLi_RBV``,         lithium content behind and ahead of the front (truth)
``SIM:CoreLi_RBV``
``SIM:DriftX_RBV`` ...       the particle's drift (um), x, y, z (truth)
``SIM:Reset``                put 1: a fresh cell, the protocol forgotten
============================ ==========================================================

The cell is saved to a state file (an autosave) every second; a restarted IOC goes on from it, the
time it was down added to a running protocol (the cell went on working meanwhile).

The crystal follows the cell in a thread (:class:`SampleFollower`: a BCDI particle takes about half a second
to rebuild on a quiet machine, seconds under load), so while the cell runs the detectors see it as it was up
to two rebuilds ago. A put to ``Pause`` (1), ``Stop`` or ``SIM:Reset`` completes only once the crystal is the
held cell's (at most :data:`FOLLOW_TIMEOUT_S`): whatever is measured after it is the state the cell's PVs
show, as a real crystal would be.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path

from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from braggscope.core import compat
from braggscope.core.atomic import atomic_path
from braggscope.core.electrochem import Protocol

from .cell import Cell, CellSettings, CellState
from .cell_sample import cell_sample, drift_um
from .ioc_motors import post_if_changed

__all__ = ["PotentiostatIOC", "SampleFollower", "TICK_S", "cell_settings", "write_autosave"]

_log = logging.getLogger(__name__)

#: Period (s) of the cell's updates.
TICK_S = 0.2
#: Seconds between two saves of the cell's state.
AUTOSAVE_S = 1.0
#: Longest wait (s) of a Pause, Stop or Reset put for the crystal to be the held cell's.
FOLLOW_TIMEOUT_S = 30.0
_STR = dict(dtype=ChannelType.CHAR, max_length=40, string_encoding="utf-8")
_RO = dict(dtype=ChannelType.DOUBLE, read_only=True, precision=5)
#: Material of each sample preset when ``[simulator.cell] material = "auto"``.
SAMPLE_MATERIALS = {"nmc622": "nmc622", "lmno_bcdi": "lmno", "lno_cluster": "nmc622"}


def cell_settings(cfg) -> tuple[CellSettings, dict]:
    """The cell of ``[simulator.cell]``: its :class:`CellSettings` and the rest (``time_scale``,
    ``drift_um_per_h``, ``breathing_um``, ``front_width``, ``state_file``, ``update_lithium``)."""
    table = dict(cfg.get("simulator.cell", {}) or {})
    name = table.get("material", "auto") or "auto"
    if name == "auto":
        name = SAMPLE_MATERIALS.get(str(cfg.get("simulator.sample", "nmc622")), "nmc622")
    settings = CellSettings(material=name, **{k: float(table[k]) for k in (
        "active_mass_mg", "resistance_ohm", "x_initial", "relax_time_s", "gradient_per_c") if k in table})
    state_file = table.get("state_file", "") or str(Path(cfg.expand_path("storage.data_dir")) / "cell_state.json")
    extra = {"time_scale": float(table.get("time_scale", 1.0)),
             "drift_um_per_h": tuple(float(v) for v in table.get("drift_um_per_h", (0.0, 0.0, 0.0))),
             "breathing_um": tuple(float(v) for v in table.get("breathing_um", (0.0, 0.0, 0.0))),
             "front_width": float(table.get("front_width", 0.04)),
             "update_lithium": float(table.get("update_lithium", 0.002)),
             "state_file": Path(os.path.expanduser(state_file))}
    return settings, extra


def write_autosave(path, state: CellState, settings: CellSettings, time_scale: float, *,
                   saved: float | None = None) -> None:
    """The cell's autosave at ``path``, written atomically: ``state`` as of wall time ``saved`` (now), the
    cell's clock ``time_scale`` times the wall's; an IOC restores it only for a cell of these ``settings``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"saved": time.time() if saved is None else float(saved), "time_scale": float(time_scale),
               "state": state.to_dict(), "settings": _settings_key(settings)}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload))


def _settings_key(settings: CellSettings) -> dict:
    """What makes an autosave this cell's (another cell's history is not restored)."""
    return dict(vars(settings))


class SampleFollower:
    """Keeps a :class:`~.beamline.SimulatedBeamline`'s sample and drift on the cell's state, in a thread.

    A sample is rebuilt when the shell, core or front moved by more than ``update_lithium`` (a BCDI
    particle, seconds to rebuild, by five times that); the drift is set at every state. Each state
    submitted gets a ticket; :meth:`shows` says whether the crystal is that state's (or a later one's).
    """

    def __init__(self, beamline, cell_material, *, x_initial=1.0, front_width=0.04, drift_um_per_h=(0, 0, 0),
                 breathing_um=(0, 0, 0), update_lithium=0.002):
        self.beamline = beamline
        self.pristine = beamline.sample
        self.material = cell_material
        self.x_initial = float(x_initial)
        self.front_width = float(front_width)
        self.drift = {"drift_um_per_h": drift_um_per_h, "breathing_um": breathing_um, "x_initial": self.x_initial}
        self.threshold = float(update_lithium) * (5 if beamline.is_bcdi else 1)
        self._depths: dict = {}
        self._shown = None
        self._pending = None
        self._submitted = 0  # tickets: the last state submitted, the last one the crystal stands for
        self._applied = 0
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="cell-sample", daemon=True)
        self._thread.start()

    def submit(self, state: CellState) -> int:
        """The cell's latest state (a copy); the drift is applied now, the sample when the thread gets to it.
        Returns the state's ticket (for :meth:`shows`)."""
        self.beamline.set_drift(drift_um(state, **self.drift))
        with self._wake:
            self._submitted += 1
            self._pending = (self._submitted, state)
            self._wake.notify_all()
            return self._submitted

    def shows(self, ticket: int) -> bool:
        """Whether the crystal is the state of ``ticket`` (or of a later one): applied, or within
        ``update_lithium`` of the one shown."""
        with self._wake:
            return self._applied >= ticket

    def update_now(self, state: CellState) -> None:
        """Apply ``state`` in the caller's thread (start-up)."""
        self.beamline.set_drift(drift_um(state, **self.drift))
        self._apply(state)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._pending is None:
                    self._wake.wait()
                (ticket, state), self._pending = self._pending, None
            try:
                self._apply(state)
            except Exception:  # noqa: BLE001 - the crystal stays as it was; the next state is tried again
                _log.exception("the simulated crystal could not follow the cell's state %s", state)
            with self._wake:  # a failed rebuild does not keep a put waiting for it
                self._applied = max(self._applied, ticket)
                self._wake.notify_all()

    def _apply(self, state: CellState) -> None:
        key = (state.x_shell, state.x_core, state.front)
        if self._shown is not None and max(abs(a - b) for a, b in zip(key, self._shown)) < self.threshold:
            return
        sample = cell_sample(self.pristine, self.material, state, x_initial=self.x_initial,
                             front_width=self.front_width, depths=self._depths)
        self.beamline.set_sample(sample)
        self._shown = key


class _SimulationGroup(PVGroup):
    """``SIM:`` -- the cell's truth and its clock, for tests and demos."""

    time_scale = pvproperty(name="TimeScale", value=1.0, dtype=ChannelType.DOUBLE, precision=3,
                            doc="seconds of the cell's clock per second")
    front = pvproperty(name="Front_RBV", value=0.0, **_RO)
    shell_lithium = pvproperty(name="ShellLi_RBV", value=1.0, **_RO)
    core_lithium = pvproperty(name="CoreLi_RBV", value=1.0, **_RO)
    drift_x = pvproperty(name="DriftX_RBV", value=0.0, **_RO)
    drift_y = pvproperty(name="DriftY_RBV", value=0.0, **_RO)
    drift_z = pvproperty(name="DriftZ_RBV", value=0.0, **_RO)
    reset = pvproperty(name="Reset", value=0, dtype=ChannelType.LONG, doc="put 1: a fresh cell")

    @time_scale.putter
    async def time_scale(self, instance, value):
        if not 0 <= value <= 1e6:
            raise ValueError(f"{self.prefix}TimeScale must be in [0, 1e6], got {value}")
        return value

    @reset.putter
    async def reset(self, instance, value):
        if value:
            self.parent.cell = Cell(self.parent.cell.settings)
            await self.parent.settle(await self.parent.publish())
        return 0


class PotentiostatIOC(PVGroup):
    """The potentiostat and its cell.

    Parameters
    ----------
    prefix : str
        e.g. ``"BSSIM:cell:"``.
    cell : Cell
    follower : SampleFollower, optional
        Keeps the simulated crystal on the cell.
    time_scale : float
        Seconds of the cell's clock per second.
    state_file : path, optional
        The autosave; read at start-up when present.
    """

    voltage = pvproperty(name="Voltage_RBV", value=0.0, units="V", **_RO)
    current = pvproperty(name="Current_RBV", value=0.0, units="mA", **_RO)
    charge = pvproperty(name="Charge_RBV", value=0.0, units="mAh", **_RO)
    lithium = pvproperty(name="LiContent_RBV", value=1.0, **_RO)
    cycle = pvproperty(name="Cycle_RBV", value=0, dtype=ChannelType.LONG, read_only=True)
    step = pvproperty(name="Step_RBV", value=0, dtype=ChannelType.LONG, read_only=True)
    step_kind = pvproperty(name="StepKind_RBV", value="", read_only=True, **_STR)
    status = pvproperty(name="Status_RBV", value="idle", read_only=True, **_STR)
    elapsed = pvproperty(name="Time_RBV", value=0.0, units="s", **_RO)
    protocol = pvproperty(name="Protocol", value="", dtype=ChannelType.CHAR, max_length=8192,
                          string_encoding="utf-8", doc="the protocol, JSON")
    start = pvproperty(name="Start", value=0, dtype=ChannelType.LONG, doc="put 1: run the protocol")
    pause = pvproperty(name="Pause", value=0, dtype=ChannelType.LONG, doc="1: pause, 0: go on")
    stop = pvproperty(name="Stop", value=0, dtype=ChannelType.LONG, doc="put 1: end the protocol")
    capacity = pvproperty(name="Capacity_RBV", value=0.0, units="mAh", **_RO)
    material_name = pvproperty(name="Material_RBV", value="", read_only=True, **_STR)
    sim = SubGroup(_SimulationGroup, prefix="SIM:")

    def __init__(self, prefix, *, cell: Cell, follower: SampleFollower | None = None, time_scale: float = 1.0,
                 state_file=None, **kwargs):
        super().__init__(prefix, **kwargs)
        self.cell = cell
        self.follower = follower
        self.state_file = Path(state_file) if state_file else None
        compat.set_initial_value(self.sim.time_scale, float(time_scale))
        self._saved_at = 0.0
        self._sleep = None  # the server's async sleep (its library), set at start-up
        self._restore()
        if follower is not None:
            follower.update_now(CellState.from_dict(self.cell.state.to_dict()))

    @protocol.putter
    async def protocol(self, instance, value):
        Protocol.from_json(value)  # refused here (the put fails) when it does not parse
        return value

    @start.putter
    async def start(self, instance, value):
        if value:
            text = self.protocol.value
            if not text:
                raise ValueError(f"{self.prefix}Protocol is empty: put a protocol before Start")
            self.cell.start(Protocol.from_json(text))
            await self.publish()
        return 0

    @pause.putter
    async def pause(self, instance, value):
        self.cell.pause() if value else self.cell.resume()
        ticket = await self.publish()
        if value:  # held: what is measured next is this state's crystal
            await self.settle(ticket)
        return 1 if value else 0

    @stop.putter
    async def stop(self, instance, value):
        if value:
            self.cell.stop()
            await self.settle(await self.publish())
        return 0

    @voltage.startup
    async def voltage(self, instance, async_lib):
        """Advance the cell every :data:`TICK_S`, post its state, keep the crystal on it, save it."""
        self._sleep = async_lib.library.sleep
        await self.capacity.write(self.cell.settings.nominal_capacity_mah)
        await self.material_name.write(self.cell.settings.material)
        if self.cell.state.protocol and not self.protocol.value:
            await self.protocol.write(Protocol.coerce(self.cell.state.protocol).to_json())
        last = time.monotonic()
        while True:
            now = time.monotonic()
            self.cell.advance((now - last) * float(self.sim.time_scale.value))
            last = now
            await self.publish()
            await async_lib.library.sleep(TICK_S)

    async def publish(self) -> int | None:
        """Post the cell's state; hand it to the follower (its ticket returned, None without one); save it now
        and then."""
        cell, s = self.cell, self.cell.state
        step = cell.current_step()
        for prop, value in ((self.voltage, s.voltage), (self.current, s.current), (self.charge, cell.charge),
                            (self.lithium, s.lithium), (self.cycle, s.cycle), (self.step, s.step),
                            (self.step_kind, step.kind if step else ""), (self.status, s.status),
                            (self.elapsed, s.time_s), (self.sim.front, s.front),
                            (self.sim.shell_lithium, s.x_shell), (self.sim.core_lithium, s.x_core)):
            await post_if_changed(prop, value)
        copy = CellState.from_dict(s.to_dict())
        ticket = None
        if self.follower is not None:
            ticket = self.follower.submit(copy)
            for prop, value in zip((self.sim.drift_x, self.sim.drift_y, self.sim.drift_z),
                                   self.follower.beamline.drift_um):
                await post_if_changed(prop, float(value))
        self._autosave(copy)
        return ticket

    async def settle(self, ticket: int | None, timeout_s: float = FOLLOW_TIMEOUT_S) -> bool:
        """Wait (without holding up the server) until the crystal is the state of ``ticket``; False after
        ``timeout_s`` (the put completes anyway)."""
        if self.follower is None or ticket is None:
            return True
        sleep = self._sleep or asyncio.sleep
        deadline = time.monotonic() + timeout_s
        while not self.follower.shows(ticket):
            if time.monotonic() > deadline:
                return False
            await sleep(0.01)
        return True

    def _autosave(self, state: CellState, *, force: bool = False) -> None:
        now = time.time()
        if self.state_file is None or (not force and now - self._saved_at < AUTOSAVE_S):
            return
        write_autosave(self.state_file, state, self.cell.settings, float(self.sim.time_scale.value), saved=now)
        self._saved_at = now

    def _restore(self) -> None:
        """Go on from the autosave: the protocol went on running while the IOC was down."""
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            payload = json.loads(self.state_file.read_text())
            state = CellState.from_dict(payload["state"])
        except (OSError, ValueError, KeyError, TypeError):
            return  # an unreadable autosave: a fresh cell, as an IOC without autosave
        if payload.get("settings") != _settings_key(self.cell.settings):
            return  # another cell's: not this one's history
        self.cell = Cell(self.cell.settings, state)
        down = max(time.time() - float(payload.get("saved", time.time())), 0.0)
        self.cell.advance(down * float(payload.get("time_scale", 1.0)))
