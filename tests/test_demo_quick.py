"""``braggscope demo`` (quick, in-process) and the operator session namespace."""

import json

import numpy as np
import pytest

from braggscope.core.config import load_config


def small_demo_config(tmp_path, detector_shape=(128, 128)):
    """The default configuration writing under ``tmp_path``, with a small detector for fast demos."""
    cfg = load_config()
    cfg.set("storage.data_dir", str(tmp_path / "data"))
    cfg.set("detector.write_path", str(tmp_path / "data" / "detector"))
    cfg.set("detector.read_path", str(tmp_path / "data" / "detector"))
    if detector_shape is not None:
        cfg.set("detector.shape", list(detector_shape))
        cfg.set("detector.cch", [detector_shape[0] / 2, detector_shape[1] / 2])
    return cfg


@pytest.fixture()
def cfg(tmp_path):
    return small_demo_config(tmp_path)


@pytest.mark.slow
def test_demo_sxdm_quick_inprocess(cfg, tmp_path):
    from braggscope import storage
    from braggscope.app.demo.run import run_demo

    out = tmp_path / "demo"
    summary = run_demo(cfg, "sxdm", quick=True, inprocess=True, out=out, nx=8, ny=6, neta=5)
    assert summary["points"] == 8 * 6 * 5
    saved = json.loads((out / "summary.json").read_text())
    assert saved["uid"] == summary["uid"] and (out / "eccentricity_fit.png").exists()
    # the drift is calibrated from fluorescence maps (the mosaic crystal's diffraction cannot)
    assert summary["calibration_accepted"], summary["calibration_verdict"]
    assert summary["calibration"]["extra"]["signal"] == "fluorescence"
    client = storage.open_catalog(cfg)
    stack = storage.sxdm_stack(storage.load_run(client, summary["uid"]))
    assert stack.frames.shape == (5, 6, 8, 128, 128) and stack.metadata["sample"] == "nmc622"
    assert stack.eccentricity["x"] == summary["calibration"]["x"]  # the main map followed it
    if "maps" in summary:  # the SXDM reduction is present: its figures were written
        assert summary["figures"] and all((out / p).exists() or p for p in summary["figures"])
        assert np.isfinite(np.asarray(summary["maps"]["intensity"])).any()
        # the same NeXus maps as `braggscope reduce sxdm`, plotted by nexusformat as it opens them
        from nexusformat.nexus import nxload

        assert summary["maps_file"] == str(out / "sxdm_maps.h5")
        plot = nxload(summary["maps_file"]).plottable_data
        assert plot.nxpath == "/entry/maps" and plot.nxsignal.nxname == "strain"


def test_demo_rejects_bad_arguments(cfg, tmp_path):
    from braggscope.app.demo.run import run_demo

    with pytest.raises(ValueError, match="kind must be"):
        run_demo(cfg, "xrf", out=tmp_path)
    with pytest.raises(ValueError, match="nx must be >= 2"):
        run_demo(cfg, "sxdm", nx=1, out=tmp_path)
    with pytest.raises(ValueError, match="--runs is for demo bcdi"):
        run_demo(cfg, "sxdm", runs=2, out=tmp_path)


def test_session_namespace_inprocess(cfg):
    from braggscope.app.session.namespace import make_session

    ns = make_session(cfg, inprocess=True, headless=True)
    try:
        for name in ("RE", "bec", "catalog", "pix", "piy", "eta", "detector", "sxdm_map", "bcdi_rocking",
                     "calibrate_eccentricity", "dry_run", "load_run", "sxdm_stack", "eccentricity"):
            assert name in ns, name
        assert "Ctrl-C" in ns["__banner__"]
        RE = ns["RE"]
        uid = RE(ns["sxdm_map"]([ns["detector"]], ns["pix"], (49, 51, 3), ns["piy"], (49, 51, 2), ns["eta"],
                                [9.0, 9.05], sample="session-test")).run_start_uids[0]
        run = ns["load_run"](ns["catalog"], uid)
        assert ns["sxdm_stack"](run).shape == (2, 2, 3)
        with pytest.raises(ValueError, match="outside its limits"):
            RE(ns["sxdm_map"]([ns["detector"]], ns["pix"], (99, 101, 3), ns["piy"], (49, 51, 2), ns["eta"], [9.0]))
        assert ns["pix"].position == pytest.approx(49.0)  # the snake ends row 1 at x = 49; no motion since
    finally:
        ns["__cleanup__"]()


def test_cli_has_shell_and_demo():
    from braggscope.app.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["demo", "sxdm", "--quick", "--inprocess"])
    assert args.kind == "sxdm" and args.quick and args.inprocess
    args = parser.parse_args(["shell", "--inprocess"])
    assert args.inprocess


@pytest.mark.slow
def test_demo_bcdi_inprocess_recovers_simulated_strain(tmp_path):
    """The full-size BCDI demo (in-process devices, the default 512x512 detector, 61 angles) recovers
    the simulated LMNO particle's strain field: correlation >= 0.8 with the simulator's truth (its four
    random starts: two gave 0.75)."""
    from braggscope.app.demo.run import run_demo

    cfg = small_demo_config(tmp_path, detector_shape=None)
    summary = run_demo(cfg, "bcdi", inprocess=True, out=tmp_path / "demo")
    assert summary["reconstruction"]["n_runs"] == 4
    assert summary["strain_correlation_with_truth"] >= 0.8
    # the drift it follows, calibrated from fluorescence over +-3 deg, is the simulator's true one:
    # d/d(eta) of x0 + a (eta - eta0) + b (eta - eta0)^2 from [simulator.eccentricity], at the Bragg angle
    true = cfg["simulator.eccentricity"]
    cal = summary["calibration"]
    eta = cal["eta0"]
    for axis in ("x", "y"):
        a, b = true[axis]
        slope = a + 2 * b * (eta - true["eta0"])
        assert cal[axis][0] == pytest.approx(slope, abs=0.03), axis  # um/deg; 0.03 um/deg = 14 nm over the scan
    assert summary["reconstruction"]["d_spacing_A"] == pytest.approx(8.17 / 4, rel=5e-4)
