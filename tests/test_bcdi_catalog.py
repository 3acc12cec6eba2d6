"""``bcdi_rocking`` plan -> embedded Tiled catalog -> ``storage.rocking_stack`` -> reconstruction.

Frames are the test suite's independent synthetic crystal (tests/test_bcdi_helpers.py),
served by an in-process HDF5 detector as the eta motor rocks; checks the stack
pair input and ``braggscope reduce bcdi <run id>``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tiled")

from bluesky import RunEngine  # noqa: E402

from braggscope import storage  # noqa: E402
from braggscope.analysis.bcdi.preprocess import prepare  # noqa: E402
from braggscope.core.config import load_config, save_config  # noqa: E402
from braggscope.core.setup import ScanSetup  # noqa: E402
from braggscope.plans import bcdi_rocking  # noqa: E402
from braggscope.simulators.inprocess import HDF5ImageDetector, LimitedSynAxis  # noqa: E402
from tests.test_bcdi_helpers import PAPER, far_field, paper_meta, synthetic_crystal  # noqa: E402


@pytest.fixture(scope="module")
def catalog_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bcdi_catalog")
    cfg = load_config()
    cfg.set("storage.data_dir", str(root / "data"))
    cfg.set("detector.read_path", str(root / "detector"))
    client = storage.open_catalog(cfg)
    rho, _, _ = synthetic_crystal()
    intensity = far_field(rho, seed=11).astype(np.uint32)
    meta = paper_meta(*intensity.shape)
    eta = LimitedSynAxis(name="eta", limits=(-5, 120))

    def render():
        return intensity[int(np.argmin(np.abs(meta["eta"] - eta.position)))]

    det = HDF5ImageDetector(render=render, write_dir=root / "detector", shape=intensity.shape[1:])
    RE = RunEngine(call_returns_result=True)
    storage.subscribe_writer(RE, client)
    n = intensity.shape[0]
    setup = ScanSetup(energy_kev=PAPER["energy_kev"], distance_m=PAPER["distance_m"], pixel_m=PAPER["pixel_m"],
                      cch=meta["cch"], detector_shape=intensity.shape[1:], delta=meta["delta"])
    uid = RE(bcdi_rocking([det], eta, float(np.mean(meta["eta"])), size_m=800e-9, d_spacing=PAPER["d_spacing"],
                          setup=setup, step_deg=PAPER["step_deg"], eta_range=(n - 1) * PAPER["step_deg"],
                          sample="bcdi-test-crystal")).run_start_uids[0]
    cfg_path = root / "beamline.toml"
    save_config(cfg, cfg_path)
    return client, uid, intensity, meta, cfg_path


@pytest.mark.slow
def test_rocking_stack_is_accepted(catalog_run):
    client, uid, intensity, meta, _ = catalog_run
    run = storage.load_run(client, uid)
    d_pair = prepare(storage.rocking_stack(run), shape=(None, 64, 64), background=None)
    d_run = prepare(run, shape=(None, 64, 64), background=None)  # storage imported lazily
    d_ref = prepare(intensity, meta, shape=(None, 64, 64), background=None)
    np.testing.assert_array_equal(d_pair.intensity, d_ref.intensity)
    np.testing.assert_array_equal(d_run.intensity, d_ref.intensity)
    assert d_pair.eta == pytest.approx(d_ref.eta, abs=1e-9)
    assert d_pair.oversampling_geometry[1] == pytest.approx(3.03, abs=0.01)  # size_m from the start doc


@pytest.mark.slow
@pytest.mark.parametrize("key", ["uid-prefix", "scan-id"])
def test_cli_with_a_run_id(catalog_run, tmp_path, capsys, key):
    from braggscope.app.cli.main import main

    client, uid, _, _, cfg_path = catalog_run
    source = uid[:8] if key == "uid-prefix" else str(storage.load_run(client, uid).metadata["start"]["scan_id"])
    out = tmp_path / "recon"
    rc = main(["--config", str(cfg_path), "reduce", "bcdi", source, "--out", str(out), "--runs", "1",
               "--recipe", "HIO:100,RAAR:150,ER:50", "--shape", "none,64,64", "--no-figures", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((out / "bcdi_summary.json").read_text())
    assert s["d_spacing_A"] == pytest.approx(PAPER["d_spacing"], rel=1e-6)
    assert (out / "bcdi.vti").stat().st_size > 0
