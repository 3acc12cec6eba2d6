"""The operator's scans with the simulator killed mid-exposure, over Channel Access (``ca_operator_scans.py``).

The simulator is killed 0.1 s into the 5th exposure of each scan and started again on the same port:
the run must fail within seconds naming the lost PV and the point (before the guard it ended
``success`` with 10 events, six of them from the restarted IOC with ``unique_id`` 0, and the catalog
served none of its frames); the four events taken before are each paired with their own frame, in the
file and as the catalog serves it. ``mesh`` with the simulator killed and not restarted fails in
seconds (it hung for minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ioc, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _scenario(scan, mode, tmp_path, timeout=240):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_CA_") or k == "EPICS_CA_MAX_ARRAY_BYTES"}
    out = tmp_path / f"{scan}-{mode}"
    proc = subprocess.run([sys.executable, "-m", "tests.faults.ca_operator_scans", scan, mode, str(out)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def _failed_naming_the_loss(result):
    assert result["exit_status"] == "fail", result
    assert result["reason"].startswith("lost connection to BSSIM:") and "of device '" in result["reason"]
    assert "at point 4 (trigger of mpx1x4" in result["reason"]  # the 5th exposure, counted from 0
    assert "DeviceLostError" in result["error"]
    assert result["fail_s"] < 30.0  # seconds (about 2 s quiet), not the 300 s move time-out nor a hang


@pytest.mark.parametrize("scan", ["ascan", "dscan", "a2scan", "d2scan", "mesh"])
def test_operator_scan_with_the_simulator_restarted_mid_exposure(scan, tmp_path):
    result = _scenario(scan, "restart", tmp_path)
    _failed_naming_the_loss(result)
    assert result["events"] == 4 and result["frames_ok"]  # each event's unique id names its frame in the file
    assert result["frames_in_file"] in (4, 5)  # the killed exposure's frame may be there; no event names it
    assert result["served"] == 4, result.get("served_error")  # the catalog serves the 4 good frames
    assert result["served_where_events_say"] and result["served_sums_ok"]


def test_mesh_with_the_simulator_killed_fails_in_seconds(tmp_path):
    result = _scenario("mesh", "kill", tmp_path)
    _failed_naming_the_loss(result)
    assert result["events"] == 4 and result["frames_ok"]
    assert result["served"] == 4 and result["served_where_events_say"]
