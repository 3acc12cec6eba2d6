"""``reconnect()`` of the session: new devices on a new Channel Access context, after an IOC was restarted.

Channel Access reads its address list once per client context, so a simulator restarted on a new
port is found only by a new context: the old devices are destroyed, the context replaced
(:func:`braggscope.core.compat.reset_channel_access`, ophyd's dispatcher restarted on it) and the
devices built again.
"""

from __future__ import annotations

from braggscope.app.beamline.simulator import apply_client_env, checked_state, state_file_for
from braggscope.core import compat
from braggscope.devices.ca_client import release_devices
from braggscope.devices.factory import make_devices

__all__ = ["reconnect_devices", "reconnect_namespace"]


def reconnect_devices(cfg, *, timeout: float = 30.0, old=None) -> dict:
    """Re-point Channel Access at the beamline the configuration names now, and rebuild the devices.

    For a simulated beamline the simulator's state file is read again, so a
    simulator restarted on a new port is found without restarting Python.

    Parameters
    ----------
    cfg : braggscope.core.config.Config
    timeout : float
        Seconds to wait for every device to connect.
    old : dict, optional
        The devices to destroy first (their channels belong to the old context).

    Returns
    -------
    dict
        New devices, as from ``make_devices``.
    """
    if cfg.get("beamline.simulated", False):
        handle, why = checked_state(state_file_for(cfg))
        if handle is None:
            raise RuntimeError(f"no simulator to reconnect to ({why}); start one: braggscope sim start")
        apply_client_env(handle.port)
    release_devices(old or {})
    compat.reset_channel_access()
    return make_devices(cfg, connect_timeout=timeout)


def reconnect_namespace(ns: dict, timeout: float = 30.0) -> dict:
    """New devices in place of the old ones in the session's namespace ``ns``; returns them."""
    old = ns["devices"]
    new = reconnect_devices(ns["cfg"], timeout=timeout, old=old)
    for name in old:
        ns.pop(name, None)
    ns["devices"] = new
    ns.update(new)
    print(f"reconnected: {', '.join(sorted(new))}")
    return new
