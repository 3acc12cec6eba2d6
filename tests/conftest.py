"""Shared pytest set-up.

Channel Access is confined to loopback for every test (no broadcasts); IOC
fixtures live in ``tests/ioc_fixtures.py`` and are loaded as a plugin.
"""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# tests open their catalogs embedded (in-process) unless they test the local catalog server themselves
os.environ.setdefault("BRAGGSCOPE_CATALOG_SERVER", "off")
for _key, _value in {
    "EPICS_CA_AUTO_ADDR_LIST": "NO",
    "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
    "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
    "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
    "EPICS_CA_MAX_ARRAY_BYTES": str(64 * 1024 * 1024),
}.items():
    os.environ[_key] = _value

# libca (pyepics) reads the address list once per process: every simulator this process talks to
# must be on it from the start. The session simulator and a test module's own simulator (its own PV
# prefix) each get a port reserved here; a simulator started later on another port, with the list
# then rewritten, would be unreachable, and the client would keep talking to the first one.
from braggscope.core.processes import free_port  # noqa: E402


def _reserve_ca_ports() -> dict[str, int]:
    # kept in the environment with this process's pid: the same ports if this file is imported twice,
    # new ones in a pytest-xdist worker (which inherits the environment of the process that started it)
    pid, _, ports = os.environ.get("BRAGGSCOPE_TEST_CA_PORTS", "").partition(":")
    if pid != str(os.getpid()):
        session = free_port()
        while (module := free_port()) == session:
            pass
        ports = f"{session},{module}"
        os.environ["BRAGGSCOPE_TEST_CA_PORTS"] = f"{os.getpid()}:{ports}"
    return dict(zip(("session", "module"), map(int, ports.split(","))))


CA_PORTS = _reserve_ca_ports()
os.environ["EPICS_CA_ADDR_LIST"] = " ".join(f"127.0.0.1:{port}" for port in CA_PORTS.values())

pytest_plugins = ["tests.ioc_fixtures"]
