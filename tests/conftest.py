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

pytest_plugins = ["tests.ioc_fixtures"]
