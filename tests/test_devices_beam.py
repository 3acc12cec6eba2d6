"""The machine and monitor devices, built offline: their fields are the names the runs and the analysis use."""

from __future__ import annotations

from braggscope.core.config import load_config
from braggscope.devices.factory import make_devices
from braggscope.devices.machine import Machine
from braggscope.devices.monitor import IncidentMonitor
from braggscope.plans.metadata import main_detector


def test_make_devices_builds_the_machine_and_the_monitor_from_their_prefixes():
    cfg = load_config()
    devices = make_devices(cfg)
    machine, monitor = devices["machine"], devices["mon1"]
    assert isinstance(machine, Machine) and machine.prefix == cfg["pv.machine"]
    assert isinstance(monitor, IncidentMonitor) and monitor.prefix == cfg["pv.monitor"]
    assert monitor.counts.name == "mon1" and monitor.hints == {"fields": ["mon1"]}  # as BLISS's measurement/mon1
    assert "detectors" in monitor._ophyd_labels_  # ct() and the operator's scans count it
    assert [s.name for s in (machine.current, machine.refill_countdown, machine.shutter)] == \
        ["machine_current", "machine_refill_countdown", "machine_shutter"]
    # the monitor is never taken for the diffraction detector
    assert main_detector([monitor, devices["detector"]]) == devices["detector"].name
    for key in ("machine", "monitor"):
        cfg.set(f"pv.{key}", "")
    devices = make_devices(cfg)
    assert "machine" not in devices and "mon1" not in devices
