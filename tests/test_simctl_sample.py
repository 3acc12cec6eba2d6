"""An honest simulator: it serves the sample asked for, says which, and a demo needing another refuses."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from braggscope.app.beamline.simulator import SampleMismatchError, SimulatorHandle, check_sample
from braggscope.core.errors import UserError


def test_check_sample_names_both_samples_and_the_fix():
    handle = SimulatorHandle(pid=4242, port=5064, state_file=Path("x.json"), info={"sample": "lmno_bcdi"})
    check_sample(handle, "lmno_bcdi")  # the same sample: accepted
    with pytest.raises(SampleMismatchError) as err:
        check_sample(handle, "nmc622", needed_by="braggscope demo sxdm")
    message = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in message
    assert "'lmno_bcdi'" in message and "'nmc622'" in message and "braggscope demo sxdm" in message
    assert "braggscope sim start --sample nmc622" in message
    old = SimulatorHandle(pid=4242, port=5064, state_file=Path("x.json"), info={})  # says nothing: refused too
    with pytest.raises(SampleMismatchError, match="does not say which sample"):
        check_sample(old, "nmc622")


def _cli(config, *args, timeout=240):
    env = {**os.environ, "BRAGGSCOPE_CATALOG_SERVER": "off"}
    return subprocess.run([sys.executable, "-m", "braggscope.app.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_sim_start_sample_then_a_demo_needing_another_refuses(tmp_path):
    config = tmp_path / "braggscope.toml"
    config.write_text(textwrap.dedent(f"""
        [storage]
        data_dir = "{tmp_path / 'data'}"
        [detector]
        read_path = "{tmp_path / 'det'}"
    """))
    bad = _cli(config, "sim", "start", "--sample", "diamond")
    assert bad.returncode == 2 and "--sample must be one of nmc622, lno_cluster, lmno_bcdi" in bad.stderr
    started = _cli(config, "sim", "start", "--sample", "lmno_bcdi")
    try:
        assert started.returncode == 0, started.stderr
        assert "sample   lmno_bcdi" in started.stdout
        status = _cli(config, "sim", "status")
        assert status.returncode == 0 and "sample   lmno_bcdi" in status.stdout
        demo = _cli(config, "demo", "sxdm", "--quick", "--no-reduce", "--out", str(tmp_path / "demo"))
        assert demo.returncode == 2, demo.stdout + demo.stderr
        line = demo.stderr.strip().splitlines()[-1]
        assert "serves sample 'lmno_bcdi'" in line and "needs 'nmc622'" in line and "braggscope demo sxdm" in line
        assert "Traceback" not in demo.stderr
        assert not list((tmp_path / "data").glob("catalog/*.db"))  # refused before any run was recorded
        again = _cli(config, "sim", "status")  # the simulator serving LMNO was left alone
        assert "sample   lmno_bcdi" in again.stdout
    finally:
        stopped = _cli(config, "sim", "stop")
    assert "simulator stopped" in stopped.stdout
