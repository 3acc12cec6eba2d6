"""Motor devices: piezo stage, diffractometer circles, monochromator energy.

Plain ``ophyd.EpicsMotor`` components (EPICS motor records), so the same
classes drive the simulator (``braggscope sim start``) and a real beamline;
only the PV prefixes in the configuration change.
"""

from __future__ import annotations

from ophyd import Component, Device, EpicsMotor, EpicsSignalRO, Kind

__all__ = ["Diffractometer", "EnergyMotor", "Motor", "MotorCpt", "PiezoStage"]


class LimitSwitch(EpicsSignalRO):
    """A motor record's limit switch (``.HLS``, ``.LLS``), always read from its monitor.

    ``EpicsMotor`` asks the IOC for the switch of the direction of travel (``get(use_monitor=False)``,
    one Channel Access round trip) when ``.DMOV`` returns to 1, before it finishes the move's
    status: a round trip on the critical path of every step of a scan. The motor record posts
    ``.HLS`` and ``.LLS`` before ``.DMOV`` in the same record processing (motorRecord's
    ``monitor()``), and a client receives the monitors of a circuit in the order they were posted,
    so the monitored value at that moment is the switch at the end of the move.
    """

    def get(self, *, use_monitor=None, **kwargs):
        return super().get(use_monitor=True, **kwargs)


class Motor(EpicsMotor):
    """An EPICS motor record (``ophyd.EpicsMotor``) whose ``repr`` is its class, prefix and name.

    bluesky's RunEngine takes the ``repr`` of the device of every message (for its tracing spans),
    and ophyd's lists every read and configuration attribute, computed anew each time, at every
    point of a scan (docs/benchmarks.md, step scans). Its limit switches are read from their
    monitors (:class:`LimitSwitch`).
    """

    high_limit_switch = Component(LimitSwitch, ".HLS", kind="omitted", auto_monitor=True)
    low_limit_switch = Component(LimitSwitch, ".LLS", kind="omitted", auto_monitor=True)

    def __repr__(self):
        return f"{type(self).__name__}(prefix={self.prefix!r}, name={self.name!r})"


class MotorCpt(Component):
    """A motor component named by its attribute alone (``pix``, not ``piezo_pix``).

    Documents then carry the motor names the rest of braggscope expects
    (``pix``, ``piy``, ``eta`` ...), whatever the parent device is called.
    """

    def __init__(self, suffix, *, kind="normal", **kwargs):
        kwargs.setdefault("labels", {"motors"})  # bluesky's %wa and braggscope's wa() list it
        super().__init__(Motor, suffix, kind=kind, **kwargs)

    def create_component(self, instance):
        motor = super().create_component(instance)
        motor.name = self.attr
        for child in motor.component_names:
            getattr(motor, child).name = f"{self.attr}_{child}"
        motor.user_readback.name = self.attr
        if (motor.kind & Kind.hinted) != Kind.hinted:  # only hinted motors show in BestEffortCallback
            motor.user_readback.kind = Kind.normal
        return motor


class PiezoStage(Device):
    """Sample piezo scanner: ``pix``, ``piy``, ``piz`` in micrometres.

    Parameters
    ----------
    prefix : str
        PV prefix; the motor records are ``prefix + "pix"`` etc.
    name : str
        ophyd name of the stage (e.g. ``"piezo"``); the motors keep their
        bare names ``pix``, ``piy``, ``piz`` in documents.
    """

    pix = MotorCpt("pix", kind="hinted")
    piy = MotorCpt("piy", kind="hinted")
    piz = MotorCpt("piz", kind="normal")


class Diffractometer(Device):
    """Diffractometer circles (degrees): sample ``eta``, ``phi``; detector ``nu``, ``delta``."""

    eta = MotorCpt("eta", kind="hinted")
    phi = MotorCpt("phi", kind="normal")
    nu = MotorCpt("nu", kind="normal")
    delta = MotorCpt("delta", kind="normal")


class EnergyMotor(Motor):
    """Monochromator energy (keV), an EPICS motor record."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("labels", {"motors"})
        super().__init__(*args, **kwargs)
