"""The potentiostat of an operando electrochemical cell: its state read, its protocol run.

A declaration of the PVs the simulated cell serves (:mod:`braggscope.simulators.ioc_cell`); on a real
beamline point ``pv.potentiostat`` at an IOC (or an alias layer over the instrument's own) with the
same names, or leave it empty for no cell. Its state is read in every run's baseline and, in operando
maps, with every point (a step map) or as monitored streams (a fly map).
"""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO

from braggscope.core.electrochem import STATE_FIELDS, Protocol

__all__ = ["Potentiostat", "POTENTIOSTAT_NAME", "STATE_SIGNALS"]

#: The device's ophyd name: its fields are ``potentiostat_voltage``, ``potentiostat_lithium``, ...
POTENTIOSTAT_NAME = "potentiostat"
#: Component of each field of :data:`braggscope.core.electrochem.STATE_FIELDS`.
STATE_SIGNALS = {"time_s": "time_s", "voltage": "voltage", "current": "current", "charge": "charge",
                 "lithium": "lithium", "cycle": "cycle", "step": "step"}


class Potentiostat(Device):
    """Voltage (V, hinted), current (mA), charge passed (mAh), lithium content, cycle, step and protocol time.

    ``load(protocol)`` writes a :class:`~braggscope.core.electrochem.Protocol` (or a list of steps);
    ``start()``, ``pause()``, ``resume()`` and ``stop()`` run it. Each returns the put's status.
    ``state()`` is the cell's state now under the names of :data:`STATE_FIELDS`.
    """

    voltage = Cpt(EpicsSignalRO, "Voltage_RBV", kind="hinted", auto_monitor=True)
    current = Cpt(EpicsSignalRO, "Current_RBV", kind="normal", auto_monitor=True)
    charge = Cpt(EpicsSignalRO, "Charge_RBV", kind="normal", auto_monitor=True)
    lithium = Cpt(EpicsSignalRO, "LiContent_RBV", kind="normal", auto_monitor=True)
    cycle = Cpt(EpicsSignalRO, "Cycle_RBV", kind="normal", auto_monitor=True)
    step = Cpt(EpicsSignalRO, "Step_RBV", kind="normal", auto_monitor=True)
    time_s = Cpt(EpicsSignalRO, "Time_RBV", kind="normal", auto_monitor=True)
    step_kind = Cpt(EpicsSignalRO, "StepKind_RBV", string=True, kind="normal", auto_monitor=True)
    status = Cpt(EpicsSignalRO, "Status_RBV", string=True, kind="normal", auto_monitor=True)
    protocol = Cpt(EpicsSignal, "Protocol", string=True, kind="config", put_complete=True)
    capacity = Cpt(EpicsSignalRO, "Capacity_RBV", kind="config")
    material = Cpt(EpicsSignalRO, "Material_RBV", string=True, kind="config")
    start_command = Cpt(EpicsSignal, "Start", kind="omitted", put_complete=True)
    pause_command = Cpt(EpicsSignal, "Pause", kind="omitted", put_complete=True)
    stop_command = Cpt(EpicsSignal, "Stop", kind="omitted", put_complete=True)

    def __init__(self, prefix="", *, name=POTENTIOSTAT_NAME, **kwargs):
        super().__init__(prefix, name=name, **kwargs)

    def __repr__(self):
        return f"{type(self).__name__}(prefix={self.prefix!r}, name={self.name!r})"

    def load(self, protocol):
        """Write ``protocol`` (a Protocol, a list of steps, or their JSON); refused before any put when bad."""
        return self.protocol.set(Protocol.coerce(protocol).to_json())

    def start(self):
        """Run the loaded protocol from its first step."""
        return self.start_command.set(1)

    def pause(self):
        """Open the circuit; the protocol's clock stops."""
        return self.pause_command.set(1)

    def resume(self):
        return self.pause_command.set(0)

    def stop(self):
        """End the protocol."""
        return self.stop_command.set(1)

    def state(self) -> dict:
        """The state now: :data:`STATE_FIELDS` and ``status``, ``step_kind``."""
        out = {field: getattr(self, STATE_SIGNALS[field]).get() for field in STATE_FIELDS}
        out.update(status=self.status.get(), step_kind=self.step_kind.get())
        return out
