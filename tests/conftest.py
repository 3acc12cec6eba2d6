"""Shared pytest set-up.

Channel Access is confined to loopback for every test (no broadcasts); IOC
fixtures live in ``tests/ioc_fixtures.py`` and are loaded as a plugin.
"""

import os
import socket

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
# The ports lie below the kernel's ephemeral range (32768-60999), so no server another test starts on
# "any free port" can take them before the simulator binds them, and each pytest-xdist worker of a run
# has its own pair: caproto servers share a UDP port silently (SO_REUSEPORT), and searches sent to a
# shared port reach one server or the other.
def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _reserve_ca_ports() -> dict[str, int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    run = os.getppid() if worker else os.getpid()  # the workers of one run share their parent
    slot = 20000 + (run % 300) * 40 + 2 * (index % 16)
    for _ in range(100):
        if _port_free(slot) and _port_free(slot + 1):
            return {"session": slot, "module": slot + 1}
        slot = 20000 + (slot - 20000 + 32) % 12000
    raise RuntimeError("no two free CA ports below 32768 for the test simulators")


if "BRAGGSCOPE_TEST_CA_PORTS" not in os.environ or \
        os.environ["BRAGGSCOPE_TEST_CA_PORTS"].partition(":")[0] != str(os.getpid()):
    _ports = _reserve_ca_ports()  # kept with this pid: the same pair if this file is imported twice
    os.environ["BRAGGSCOPE_TEST_CA_PORTS"] = f"{os.getpid()}:{_ports['session']},{_ports['module']}"
CA_PORTS = dict(zip(("session", "module"),
                    map(int, os.environ["BRAGGSCOPE_TEST_CA_PORTS"].partition(":")[2].split(","))))
os.environ["EPICS_CA_ADDR_LIST"] = " ".join(f"127.0.0.1:{port}" for port in CA_PORTS.values())

pytest_plugins = ["tests.ioc_fixtures"]


#: Test files by measured duration, longest first (the whole file in the suite on 2 cores, 7 December
#: 2026: test_operando_ca ~300 s, test_demo_quick ~210 s, ... ~20 s). With ``--dist loadfile`` a file
#: runs whole on one worker, in collection order: a long file collected last keeps the suite running on
#: one worker while the others are idle, so the long ones go first.
LONGEST_FIRST = ("test_operando_ca.py", "test_demo_quick.py", "test_queue_shell.py", "test_plans_ioc.py",
                 "test_walkthrough.py", "test_operator_scans.py", "test_extras.py", "test_queue.py",
                 "test_web_services.py", "test_fly_plan.py", "test_shared_catalog.py", "test_journal.py",
                 "test_web_hosts.py", "test_demo_operando.py", "test_web_browser.py", "test_serve.py",
                 "test_storage_faults.py", "test_storage_postgres.py", "test_operando_bcdi_ca.py",
                 "test_plans_sim.py", "test_cli_errors.py", "test_ioc_faults.py", "test_bus.py", "test_notebooks.py",
                 "test_bcdi_series.py", "test_live_window.py")


def pytest_configure(config):
    # pytest-xdist hands out the files by their number of tests, most first, unless told not to: that
    # put the long files of few tests (the demos, the walkthrough) last and undid LONGEST_FIRST
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
