"""The devices an application works with: in-process simulated, the caproto simulator's, or the beamline's PVs.

:func:`connect_devices` picks by the configuration; with a simulated beamline it starts the caproto
simulator when none runs (:func:`connect_simulator`) and says which one it started, so that
:func:`disconnect` stops only that one.
"""

from __future__ import annotations

from braggscope.app.beamline.simulator import (
    SimulatorHandle,
    apply_client_env,
    check_sample,
    read_state,
    start_simulator,
    state_file_for,
    stop_simulator,
)
from braggscope.devices.ca_client import release_devices
from braggscope.devices.factory import make_devices

__all__ = ["connect_devices", "connect_simulator", "disconnect", "inprocess_devices"]


def connect_devices(cfg, *, inprocess: bool = False) -> tuple[dict, SimulatorHandle | None]:
    """The beamline's devices, by name, and the simulator started here (None if none was).

    ``inprocess``: in-process simulated devices (no EPICS); else ``[beamline] simulated`` picks the
    caproto simulator (:func:`connect_simulator`) or the PVs of ``[pv]``. ``devices["detector"]``
    is the area detector in every case.
    """
    if inprocess:
        devices = inprocess_devices(cfg)
        return {**devices, "detector": devices["mpx1x4"]}, None  # the name the EPICS devices give it
    if cfg.get("beamline.simulated", False):
        return connect_simulator(cfg)
    return make_devices(cfg, connect_timeout=30.0), None


def inprocess_devices(cfg, sim=None) -> dict:
    """In-process devices around the simulator's physics (``sim``, default the configuration's sample)."""
    # slow to import (the simulator's physics): only for in-process devices
    from braggscope.simulators.beamline import SimulatedBeamline
    from braggscope.simulators.inprocess import make_inprocess_devices

    sim = SimulatedBeamline.from_config(cfg) if sim is None else sim
    return make_inprocess_devices(sim, cfg.expand_path("detector.read_path"), limits=cfg["limits"])


def connect_simulator(cfg, *, sample: str | None = None,
                      purpose: str | None = None) -> tuple[dict, SimulatorHandle | None]:
    """Start the caproto simulator unless one runs, point CA at it, connect the devices.

    A running simulator must serve ``sample`` when one is asked for (the demos), else
    :class:`~braggscope.app.beamline.simulator.SampleMismatchError` (one line, naming ``purpose``) is
    raised before any connection. Without such a request (the shell) the configuration takes the
    sample the simulator serves (``simulator.sample``), and says so when it differs.

    Returns
    -------
    tuple
        ``(devices, started)``: the devices by name, and the simulator started here (None when one ran).
    """
    handle, started = read_state(state_file_for(cfg)), None
    if handle is None:
        print(f"starting the simulator (braggscope sim start) with sample {cfg['simulator.sample']} ...",
              flush=True)
        handle = started = start_simulator(cfg, set_env=True)
    else:
        if sample is not None:
            check_sample(handle, sample, needed_by=purpose or "this")
        elif handle.sample and handle.sample != cfg.get("simulator.sample"):
            print(f"the running simulator serves sample {handle.sample} (pid {handle.pid}); using it", flush=True)
            cfg.set("simulator.sample", handle.sample)
        apply_client_env(handle.port)
    try:
        return make_devices(cfg, connect_timeout=30.0), started
    except BaseException:
        if started is not None:  # nothing started here is left running
            stop_simulator(started)
        raise


def disconnect(devices: dict, started: SimulatorHandle | None) -> None:
    """Stop the simulator started here, if any, once its devices' channels are released.

    (Released first: no "Virtual circuit disconnect" report from Channel Access.)
    """
    if started is not None:
        release_devices(devices)
        stop_simulator(started)
