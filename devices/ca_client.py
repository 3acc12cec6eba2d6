"""Channel Access client hygiene: a repeater in this process, and channels released before a server stops.

Every CA client context registers with a *repeater* on UDP port
``EPICS_CA_REPEATER_PORT`` (5065) of its host, which fans server beacons out
to the clients. When none runs, libca tries to spawn the ``caRepeater``
executable, which pyepics does not ship on Linux: the client then prints
"The executable caRepeater couldn't be located" and, a few seconds later,
"CA client library is unable to contact CA repeater after 50 tries".

:func:`ensure_repeater` serves caproto's repeater (the same protocol) on a
daemon thread of this process when the port is free, before libca starts. It
binds the loopback interface only (clients register over loopback) and ends
with the process; when another repeater already owns the port, it does
nothing and libca registers with that one.

:func:`release_devices` clears the devices' channels. Call it before stopping
a simulator this process started: libca reports a server that goes away
under connected channels as a "Virtual circuit disconnect" block on stderr.
"""

from __future__ import annotations

import os
import socket
import threading

__all__ = ["ensure_repeater", "release_devices"]

_lock = threading.Lock()
_thread: threading.Thread | None = None


def ensure_repeater() -> bool:
    """Serve a CA repeater on a daemon thread unless one already answers on this host.

    Returns
    -------
    bool
        True if this process serves the repeater (now or since an earlier
        call), False if another process owns the port.
    """
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            return True
        port = int(os.environ.get("EPICS_CA_REPEATER_PORT", "5065") or 5065)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:  # another repeater (or a process on that port): libca uses it
            sock.close()
            return False
        _thread = threading.Thread(target=_serve, args=(sock, port), name="ca-repeater", daemon=True)
        _thread.start()
        return True


def _serve(sock, port):
    from caproto.sync.repeater import _run_repeater

    try:
        _run_repeater(sock, ("127.0.0.1", port))
    except Exception:  # noqa: BLE001 - a dead repeater only slows beacon fan-out; never crash the client
        sock.close()


def release_devices(devices) -> None:
    """Destroy ophyd devices (a dict or an iterable), clearing their CA channels; each object once."""
    items = devices.values() if hasattr(devices, "values") else devices
    seen = set()
    for device in items:
        if id(device) in seen or not hasattr(device, "destroy"):
            continue
        seen.add(id(device))
        try:
            device.destroy()
        except Exception:  # noqa: BLE001 - a device that cannot clear its channels must not block shutdown
            pass
