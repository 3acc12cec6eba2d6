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

from braggscope.core import compat

__all__ = ["ensure_repeater", "start_repeater", "release_devices"]

_lock = threading.Lock()
_thread: threading.Thread | None = None


def ensure_repeater() -> bool:
    """Serve a CA repeater on a daemon thread unless one already answers on this host.

    The port is ``EPICS_CA_REPEATER_PORT`` (default 5065), as libca uses.

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
        _thread = start_repeater(int(os.environ.get("EPICS_CA_REPEATER_PORT", "5065") or 5065))
        return _thread is not None


def start_repeater(port: int, host: str = "127.0.0.1") -> threading.Thread | None:
    """Bind ``host:port`` (UDP) and serve the repeater there on a daemon thread; None if the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.bind((host, int(port)))
    except OSError:  # another repeater (or a process on that port): libca uses it
        sock.close()
        return None
    thread = threading.Thread(target=_serve, args=(sock, port), name=f"ca-repeater-{port}", daemon=True)
    thread.start()
    return thread


def _serve(sock, port):
    """The repeater loop: confirm registrations, fan beacons out to the registered clients.

    libca registers with an EMPTY datagram (its old-style registration), which
    caproto's own repeater loop records without confirming, so libca keeps
    trying and complains after 50 tries; both forms are confirmed here.
    """
    import caproto
    from caproto.sync.repeater import check_ports_in_use

    clients: dict[int, str] = {}
    broadcaster = caproto.Broadcaster(our_role=caproto.SERVER)
    while True:
        try:
            msg, (host, src_port) = sock.recvfrom(compat.max_udp_datagram())
            commands = broadcaster.recv(msg, (host, src_port)) if msg else []
        except Exception:  # noqa: BLE001 - a bad datagram (or a reset) must not end the repeater
            continue
        if not msg or any(isinstance(c, caproto.RepeaterRegisterRequest) for c in commands):
            clients[src_port] = host
            for _, gone in check_ports_in_use([p for p in clients if p != src_port]):
                clients.pop(gone, None)
            _send(sock, bytes(caproto.RepeaterConfirmResponse(host)), host, src_port)
            continue
        for c in commands:  # a beacon without its server address gets the sender's
            if isinstance(c, caproto.Beacon) and c.header.parameter2 == 0:
                c.header.parameter2 = caproto.ipv4_to_int32(host)
        payload = b"".join(bytes(c) for c in commands)
        for other, other_host in list(clients.items()):
            if other != src_port and not _send(sock, payload, other_host, other):
                clients.pop(other, None)


def _send(sock, payload, host, port) -> bool:
    try:
        sock.sendto(payload, (host, port))
        return True
    except OSError:
        return False


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
