"""``braggscope demo operando``, small: the same code path as ``--quick`` with two checkpoints of 6 x 6 maps.

The command runs in a subprocess (it starts its own simulator and points Channel Access at it, which
must not touch this process's CA settings); the catalog is embedded (no server).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

pytest.importorskip("caproto")

pytestmark = pytest.mark.slow


def test_demo_operando_small(tmp_path):
    from braggscope.core.config import load_config, save_config
    from tests.test_demo_quick import small_demo_config

    cfg = small_demo_config(tmp_path)
    config = save_config(cfg, tmp_path / "braggscope.toml")
    _stale_autosave(load_config(config))  # an earlier campaign left the cell half charged
    out = tmp_path / "demo"
    env = {**os.environ, "BRAGGSCOPE_CATALOG_SERVER": "off", "EPICS_CA_AUTO_ADDR_LIST": "NO"}
    run = subprocess.run([sys.executable, "-m", "braggscope.app.cli", "--config", str(config), "demo", "operando",
                          "--quick", "--checkpoints", "2", "--nx", "6", "--ny", "6", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoints"] == 2 and len(summary["uids"]) == 2
    # the dry run's estimate: two checkpoints of 6 x 6 x 3 flown points, tracking and measuring apart
    estimate = summary["estimate"]
    assert estimate["checkpoints"] == 2 and estimate["measure_points"] == 6 * 6 * 3
    assert 0 < estimate["track_s"] and 0 < estimate["measure_s"] and estimate["duration_s"] > estimate["protocol_s"]
    # a pristine particle (the stale autosave was at x = 0.57), charged between the checkpoints: less
    # lithium, higher voltage, a longer c axis
    assert summary["lithium"][0] > 0.95 and "a fresh cell" in run.stdout
    assert summary["lithium"][1] < summary["lithium"][0] and summary["voltage"][1] > summary["voltage"][0]
    assert summary["d_mean"][1] > summary["d_mean"][0]
    with h5py.File(out / "series.h5") as f:
        assert f["entry/series/d_spacing"].shape[0] == 2
        np.testing.assert_allclose(f["entry/series_checkpoint/lithium"][()], summary["lithium"])
    for name in ("live_operando.png", "voltage_curve.png", "lattice_trends.png", "montage_d_spacing.png",
                 "movie.gif"):
        assert (out / name).stat().st_size > 1000, name
    assert "checkpoint 1:" in run.stdout and "live d =" in run.stdout


def _stale_autosave(cfg):
    """The cell's autosave, where the demo's simulator looks for it (``cfg``: a copy of the demo's
    configuration), as a 1 C charge left it 40 minutes in: x ~ 0.57. Without a reset the simulator's
    cell goes on from there."""
    from braggscope.app.demo.operando import operando_config
    from braggscope.core.electrochem import charge_to
    from braggscope.simulators.cell import Cell
    from braggscope.simulators.ioc_cell import cell_settings, write_autosave

    operando_config(cfg, quick=True)
    settings, extra = cell_settings(cfg)
    cell = Cell(settings)
    cell.start({"steps": [charge_to(4.3, 1.0).to_dict()]})
    cell.advance(2400.0)
    assert cell.state.lithium < 0.6
    write_autosave(extra["state_file"], cell.state, settings, 1.0)
