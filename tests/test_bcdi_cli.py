"""``braggscope reduce bcdi`` round trip on a small BLISS file of the synthetic crystal."""

import json

import numpy as np
import pytest

from braggscope.analysis.bcdi.files import load_result, read_vti
from braggscope.app.cli.main import main
from braggscope.core.geometry import wavelength
from tests.test_bcdi_helpers import PAPER, far_field, paper_meta, synthetic_crystal, write_bliss


@pytest.fixture(scope="module")
def bliss_file(tmp_path_factory):
    rho, shape, _ = synthetic_crystal()
    intensity = far_field(rho, seed=7)
    path = tmp_path_factory.mktemp("bcdi") / "rocking.h5"
    return write_bliss(path, intensity, paper_meta(*intensity.shape))


def v_shape(out):
    return read_vti(out / "bcdi.vti")["strain"].shape


@pytest.mark.slow
def test_cli_round_trip(tmp_path, bliss_file, capsys):
    out = tmp_path / "out"
    rc = main(["reduce", "bcdi", str(bliss_file), "--out", str(out), "--runs", "2", "--seed", "1",
               "--recipe", "HIO:100,RAAR:200,ER:100", "--shape", "none,64,64", "--quiet"])
    assert rc == 0
    for name in ("bcdi.cxi", "bcdi.npz", "bcdi.vti", "bcdi_summary.json", "bcdi_isosurface.png", "bcdi_slices.png",
                 "bcdi_diffraction.png", "bcdi_resolution.png"):
        assert (out / name).stat().st_size > 0, name
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # atomic writes leave no temporary file
    s = json.loads((out / "bcdi_summary.json").read_text())
    # PRTF resolution along z, y, x: about the voxel or coarser, finer than the particle (~500 nm)
    assert s["prtf"]["threshold"] == "1/e" and s["fsc"] is None  # 2 runs keep 1: no pair for an FSC
    assert all(0.5 * s["voxel_nm"] <= r < 400 for r in s["prtf"]["resolution_zyx_nm"])
    res = load_result(out / "bcdi.cxi")
    assert res["strain"].shape == v_shape(out) and res["x"].attrs["units"] == "nm"
    assert s["recipe"] == "HIO:100,RAAR:200,ER:100" and s["n_runs"] == 2
    assert s["mode_fraction"] > 0.9
    # voxel = the finest closed-form spacing: 2 pi / (|G| * rocking range) here (64 steps of 0.0073 deg)
    rock_nm = PAPER["d_spacing"] / (64 * np.radians(PAPER["step_deg"])) / 10
    det_nm = wavelength(13.0) * 1e-10 * 1.4 / (64 * 55e-6) * 1e9
    assert s["voxel_nm"] == pytest.approx(min(rock_nm, det_nm), rel=1e-6)
    assert s["q_bragg"] == pytest.approx([0, 0, 2 * np.pi / PAPER["d_spacing"]], abs=1e-9)
    # particle ~20 voxels of the detector grid: volume consistent with the synthetic crystal's
    v = read_vti(out / "bcdi.vti")
    assert set(v) >= {"amplitude", "support", "phase", "displacement", "strain", "microstrain", "q_bragg"}
    assert np.isfinite(v["strain"]).sum() > 1000
    assert np.nanmax(np.abs(v["microstrain"])) < 5000
    assert "mode fraction" in capsys.readouterr().out
    # the default: the starts on a local cluster (one worker per core); the error history in the summary
    assert s["timing_s"]["workers"] >= 1 and s["timing_s"]["worker_seconds"] > 0
    its = s["error_history"]["iteration"]
    assert its[:2] == [0, 10] and len(s["error_history"]["error"]) == len(its)
    assert s["schedule"] in ("recipe", "tight") and s["mode_weights"][0] == pytest.approx(s["mode_fraction"])


@pytest.mark.parametrize("args, match", [
    (["--recipe", "HIO300"], "HIO:300"),
    (["--runs", "0"], "--runs"),
    (["--shape", "64,64"], "--shape"),
    (["--binning", "a,1"], "--binning"),
    (["--runs", "2", "--keep", "3"], "--keep"),
    (["--workers", "0"], "--workers"),
    (["--scheduler", "somewhere:8786"], "dask scheduler"),
    (["--live", "/no/such/dir/live.png"], "--live"),
    (["--reference", "1"], "--reference"),
    (["--monitor", "mon1"], "--monitor mon1: "),  # the file records no counter
])
def test_cli_bad_arguments_fail_before_writing(tmp_path, bliss_file, capsys, args, match):
    out = tmp_path / "never"
    rc = main(["reduce", "bcdi", str(bliss_file), "--out", str(out), *args])
    assert rc == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_cli_missing_file(tmp_path, capsys):
    rc = main(["reduce", "bcdi", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.h5: no such file" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_series_of_two_entries_and_live_view(tmp_path, capsys):
    rho, _, _ = synthetic_crystal(n=48, radius=8)
    path = tmp_path / "two.h5"
    write_bliss(path, far_field(rho, seed=7), paper_meta(48, 48, 48), scan="1.1")
    import h5py

    with h5py.File(path, "a") as f:  # a second scan entry of the same particle, other noise
        f.copy("1.1", "2.1")
        f["2.1/instrument/mpx1x4/image"][...] = far_field(rho, seed=8).astype(np.uint32)
    out, live = tmp_path / "series", tmp_path / "live.png"
    rc = main(["reduce", "bcdi", str(path), "--scan", "1.1,2.1", "--out", str(out), "--runs", "1", "--scheduler",
               "none", "--recipe", "HIO:60,ER:40", "--shape", "none,48,48", "--no-figures", "--quiet",
               "--live", str(live)])
    assert rc == 0
    from braggscope.analysis.nexus import read_nxdata

    with h5py.File(out / "series.nxs") as f:
        ds = read_nxdata(f["entry/series"])
    assert ds.strain.dims == ("scan", "z", "y", "x") and [v.decode() for v in ds.scan.values] == ["two_1.1", "two_2.1"]
    assert (out / "two_1.1" / "bcdi.cxi").exists() and (out / "two_2.1" / "bcdi_summary.json").exists()
    assert "series of 2 scans" in capsys.readouterr().out
    assert (tmp_path / "live_two_1.1.png").stat().st_size > 1000 and (tmp_path / "live_two_2.1.png").exists()
