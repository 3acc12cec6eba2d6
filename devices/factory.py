"""Build every beamline device from the configuration's PV prefixes.

``make_devices(cfg)`` uses only ``[pv]`` and ``[detector]`` keys, so pointing
braggscope at a real beamline is a matter of editing PV prefixes in a TOML
file; ``connect(devices, timeout)`` waits for all of them and names the PVs
that did not connect.
"""

from __future__ import annotations

import os
import time

from ophyd import Signal

from braggscope.core.errors import NotConnectedError
from braggscope.devices.ca_client import ensure_repeater
from braggscope.devices.fluorescence import FluorescenceDetector
from braggscope.devices.machine import Machine
from braggscope.devices.maxipix import Maxipix
from braggscope.devices.monitor import MONITOR_NAME, IncidentMonitor
from braggscope.devices.motors import Diffractometer, EnergyMotor, PiezoStage
from braggscope.devices.potentiostat import POTENTIOSTAT_NAME, Potentiostat

__all__ = ["confine_ca_to_loopback", "connect", "make_devices", "unconnected_pvs"]


def make_devices(cfg, *, connect_timeout: float | None = None) -> dict:
    """Create the beamline's ophyd devices (not yet connected unless asked).

    Parameters
    ----------
    cfg : braggscope.core.config.Config
        Uses ``pv.piezo``, ``pv.diffractometer``, ``pv.energy``,
        ``pv.detector``, ``pv.fluorescence`` (empty or absent: no
        fluorescence detector), ``pv.machine``, ``pv.monitor`` and ``pv.potentiostat`` (empty: none),
        ``pv.fly``, ``detector.name``, ``detector.write_path``,
        ``detector.read_path``, and the detector geometry ``detector.distance_m``,
        ``detector.pixel_m``, ``detector.cch``, ``detector.shape`` (configuration
        signals of the Maxipix, recorded in every event descriptor).
    connect_timeout : float, optional
        If given, call :func:`connect` with this timeout (seconds).

    Returns
    -------
    dict
        ``piezo`` (:class:`PiezoStage`), ``diffractometer``
        (:class:`Diffractometer`), ``energy`` (:class:`EnergyMotor`),
        ``detector`` (:class:`Maxipix`, ophyd name ``detector.name``),
        ``xrf`` (:class:`FluorescenceDetector`, field ``xrf_counts``; only
        when ``pv.fluorescence`` is set), ``machine`` (:class:`Machine`: ring current,
        refill countdown, shutter; when ``pv.machine`` is set), ``mon1``
        (:class:`IncidentMonitor`, field ``mon1``; when ``pv.monitor`` is set), ``potentiostat``
        (:class:`Potentiostat`, an operando cell; when ``pv.potentiostat`` is set), ``fly``
        (the fly-scan hardware; when ``pv.fly`` is set), and the single motors ``pix``, ``piy``,
        ``piz``, ``eta``, ``phi``, ``nu``, ``delta`` (the same objects as inside the stages).
    """
    ensure_repeater()  # before the first channel: libca would look for a caRepeater executable and complain
    for key in ("pv.piezo", "pv.diffractometer", "pv.energy", "pv.detector"):
        value = cfg[key]
        if not isinstance(value, str) or not value:
            raise ValueError(f"config {key} must be a non-empty PV prefix string, got {value!r}")
    confine_ca_to_loopback(cfg)
    write_path = cfg.expand_path("detector.write_path")
    read_path = cfg.expand_path("detector.read_path")
    piezo = PiezoStage(cfg["pv.piezo"], name="piezo")
    diffractometer = Diffractometer(cfg["pv.diffractometer"], name="diffractometer")
    energy = EnergyMotor(cfg["pv.energy"], name="energy")
    detector = Maxipix(cfg["pv.detector"], name=cfg.get("detector.name", "mpx1x4"),
                       write_path=str(write_path), read_path=str(read_path),
                       distance_m=cfg["detector.distance_m"], pixel_m=cfg["detector.pixel_m"],
                       cch=cfg["detector.cch"], frame_shape=cfg["detector.shape"])
    devices = {"piezo": piezo, "diffractometer": diffractometer, "energy": energy,
               "detector": detector}
    optional = {"fluorescence": ("xrf", FluorescenceDetector), "machine": ("machine", Machine),
                "monitor": (MONITOR_NAME, IncidentMonitor), "potentiostat": (POTENTIOSTAT_NAME, Potentiostat)}
    for key, (name, cls) in optional.items():
        prefix = cfg.get(f"pv.{key}", "")
        if prefix:
            if not isinstance(prefix, str):
                raise ValueError(f"config pv.{key} must be a PV prefix string (or empty), got {prefix!r}")
            devices[name] = cls(prefix, name=name)
    fly_prefix = cfg.get("pv.fly", "")
    if fly_prefix:  # fly-scan hardware (docs/fly.md); the flyer: braggscope.devices.fly.make_flyer
        from braggscope.devices.fly_hardware import FlyHardware

        devices["fly"] = FlyHardware(fly_prefix, name="fly")
    for name in ("pix", "piy", "piz"):
        devices[name] = getattr(piezo, name)
    for name in ("eta", "phi", "nu", "delta"):
        devices[name] = getattr(diffractometer, name)
    if connect_timeout is not None:
        connect(devices, timeout=connect_timeout)
    return devices


def confine_ca_to_loopback(cfg) -> None:
    """With a simulated beamline (``beamline.simulated``), make Channel Access search only on loopback.

    Whatever the environment says: ``EPICS_CA_AUTO_ADDR_LIST=NO`` and
    ``EPICS_CA_ADDR_LIST`` keeps only its 127.0.0.1/localhost entries (or
    becomes ``127.0.0.1[:simulator.ca_server_port]``), so a client started
    without the address list ``braggscope sim start`` prints never broadcasts
    beyond this computer. Takes effect if no CA client has started yet in this
    process (pyepics reads the environment once).
    """
    if not cfg.get("beamline.simulated", False):
        return
    entries = os.environ.get("EPICS_CA_ADDR_LIST", "").split()
    loopback = [e for e in entries if e.split(":")[0] in ("127.0.0.1", "localhost")]
    if not loopback:
        port = int(cfg.get("simulator.ca_server_port", 0) or 0)
        loopback = [f"127.0.0.1:{port}" if port else "127.0.0.1"]
    os.environ["EPICS_CA_ADDR_LIST"] = " ".join(loopback)
    os.environ["EPICS_CA_AUTO_ADDR_LIST"] = "NO"


def unconnected_pvs(device) -> list[str]:
    """PV names of a device's signals that are not connected."""
    missing = []
    signals = device.walk_signals() if hasattr(device, "walk_signals") else []
    for item in signals:
        signal = item.item
        if not signal.connected:
            for attr in ("pvname", "setpoint_pvname"):
                pv = getattr(signal, attr, None)
                if pv and pv not in missing:
                    missing.append(pv)
    return missing


def _configuration_signals(device):
    """The device's configuration signals, created if lazy: ``wait_for_connection`` leaves lazy components
    (areaDetector's ``cam.acquire_time`` ...) unconnected, and ``read_configuration`` right after a
    connection (``ScanSetup.from_devices``) then failed with "not connected"."""
    for attr in getattr(device, "configuration_attrs", ()):
        component = getattr(device, attr)  # ophyd resolves the dotted names ("cam.acquire_time")
        if isinstance(component, Signal):
            yield component


def connect(devices, *, timeout: float = 10.0) -> None:
    """Wait until every device is connected, or raise naming the missing PVs.

    Parameters
    ----------
    devices : dict or iterable
        Devices from :func:`make_devices` (duplicates are fine).
    timeout : float
        Seconds, shared by all devices.

    Raises
    ------
    NotConnectedError
        A ``TimeoutError`` (and a ``UserError``: one line from the command
        line) listing up to 10 unconnected PV names and the CA address list in use.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 s, got {timeout!r}")
    items = list(devices.values()) if isinstance(devices, dict) else list(devices)
    unique = list({id(d): d for d in items}.values())
    deadline = time.monotonic() + timeout
    failed = []
    for device in unique:
        try:
            device.wait_for_connection(timeout=max(deadline - time.monotonic(), 0.1))
            for signal in _configuration_signals(device):
                signal.wait_for_connection(timeout=max(deadline - time.monotonic(), 0.1))
        except TimeoutError:
            failed.append(device)
    if failed:
        missing = [pv for device in failed for pv in unconnected_pvs(device)]
        shown = ", ".join(missing[:10]) + (f" ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise NotConnectedError(
            f"devices {[d.name for d in failed]} not connected after {timeout} s; "
            f"unconnected PVs: {shown or 'unknown'} "
            f"(EPICS_CA_ADDR_LIST={os.environ.get('EPICS_CA_ADDR_LIST', '')!r}; "
            "is the simulator running? `braggscope sim status`)")
