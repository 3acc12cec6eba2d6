"""IOC fixtures (caproto simulators on loopback), shared by device, plan and storage tests.

- ``tmp_data_dir`` (session): a temporary data directory (catalog, detector files).
- ``sim_config`` (session): the packaged config pointed at ``tmp_data_dir``.
- ``sim_ioc`` (session): the simulator server (motors + Maxipix) as a subprocess on the
  127.0.0.1 port reserved for it in ``tests/conftest.py`` (on the CA address list of this
  process before any CA connection), started once per session, killed at teardown.
- ``sim_devices`` (session): ``make_devices(sim_config)``, connected.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def tmp_data_dir(tmp_path_factory):
    """A data directory for the session (detector files under ``detector/``)."""
    path = tmp_path_factory.mktemp("braggscope-data")
    (path / "detector").mkdir()
    return path


@pytest.fixture(scope="session")
def sim_config(tmp_data_dir):
    """The packaged simulator configuration, storing everything in ``tmp_data_dir``."""
    from braggscope.app.beamline.simulator import scratch_config

    return scratch_config(tmp_data_dir)


@pytest.fixture(scope="session")
def sim_ioc(sim_config, tmp_data_dir):
    """The running simulator (a :class:`braggscope.app.beamline.simulator.SimulatorHandle`)."""
    from braggscope.app.beamline.simulator import start_simulator, stop_simulator
    from tests.conftest import CA_PORTS

    handle = start_simulator(sim_config, port=CA_PORTS["session"], state_file=tmp_data_dir / "simulator.json",
                             set_env=False, exit_with_parent=True)
    assert handle.addr_list in os.environ["EPICS_CA_ADDR_LIST"].split()
    try:
        yield handle
    finally:
        stop_simulator(handle)


@pytest.fixture(scope="session")
def sim_devices(sim_ioc, sim_config):
    """All devices from ``make_devices``, connected to ``sim_ioc``."""
    from braggscope.core import compat
    from braggscope.devices.factory import make_devices

    # a fresh CA context and PV cache (what the shell's reconnect() does): a test that made devices
    # earlier with no server up (their geometry signals, argument checks) left channels of the same
    # names searching with libca's backoff, minutes apart by now, and the new devices would reuse
    # them (sim_devices failed in one worker of the parallel suite: a different subset of PVs not
    # connected within 60 s each time)
    compat.reset_channel_access()
    return make_devices(sim_config, connect_timeout=60.0)  # ~1 s when idle; the parallel suite loads the host


def module_simulator_config(root, prefix: str, size: int):
    """A configuration for a module's own simulator: files under ``root``, ``size`` x ``size`` frames, a
    bright crystal, and the PV prefix ``prefix`` (the session simulator, prefix ``BSSIM:``, may be
    running in this process too; start it on ``CA_PORTS["module"]``)."""
    from braggscope.app.beamline.simulator import scratch_config

    cfg = scratch_config(root, frame_size=size, pv_prefix=prefix)
    cfg.set("simulator.peak_rate", 2.0e7)  # bright: the maps' Poisson noise well below their contrast
    return cfg
