"""The fly-scan hardware's PVs: piezo fly stage, position-compare trigger unit, position capture.

Declarative ophyd blocks under ``pv.fly`` (``STAGE:``, ``PCOMP:``, ``PCAP:``); the flyer that drives them
line by line is :class:`braggscope.devices.fly.FlyScanner`. docs/fly.md lists the PVs.
"""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO

__all__ = ["FlyHardware"]


# A line's settings are written with put-completion: the record has taken the value when the put returns
# (no readback polled in a thread per setting, as ophyd's set does otherwise).
class _Stage(Device):
    start = Cpt(EpicsSignal, "Start", kind="omitted", put_complete=True)
    stop_at = Cpt(EpicsSignal, "Stop", kind="omitted", put_complete=True)
    velocity = Cpt(EpicsSignal, "Velocity", kind="config", put_complete=True)
    accel_time = Cpt(EpicsSignal, "AccelTime", kind="config")
    velo_max = Cpt(EpicsSignalRO, "VeloMax_RBV", kind="config")
    enc_res = Cpt(EpicsSignalRO, "EncRes_RBV", kind="config")
    busy = Cpt(EpicsSignalRO, "Busy_RBV", kind="omitted", auto_monitor=True)
    encoder = Cpt(EpicsSignalRO, "Position_RBV", kind="omitted")
    go = Cpt(EpicsSignal, "Go", kind="omitted", put_complete=True)


class _Pcomp(Device):
    start = Cpt(EpicsSignal, "Start", kind="omitted", put_complete=True)
    step = Cpt(EpicsSignal, "Step", kind="config", put_complete=True)
    width = Cpt(EpicsSignal, "Width", kind="config", put_complete=True)
    pulses = Cpt(EpicsSignal, "Pulses", kind="config", put_complete=True)
    arm = Cpt(EpicsSignal, "Arm", kind="omitted", put_complete=True)
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


class FlyHardware(Device):
    """The fly-scan hardware PVs (``STAGE:``, ``PCOMP:``, ``PCAP:`` under ``pv.fly``)."""

    lazy_wait_for_connection = False
    stage_ = Cpt(_Stage, "STAGE:", kind="config")
    pcomp = Cpt(_Pcomp, "PCOMP:", kind="config")
    pcap = Cpt(_Pcap, "PCAP:", kind="omitted")
