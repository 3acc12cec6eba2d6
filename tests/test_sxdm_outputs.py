"""SXDM outputs: NeXus-style HDF5 maps, figures, and the ``braggscope reduce sxdm`` command."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from matplotlib import colors

pytest.importorskip("xrayutilities")

from braggscope.analysis.sxdm.figures import mosaicity_rgb, save_figures
from braggscope.analysis.sxdm.files import load_maps, save_maps
from braggscope.analysis.sxdm.grid import grid_pixel_peak
from braggscope.analysis.sxdm.reduce import reduce_stack
from braggscope.core.geometry import Geometry
from tests.test_sxdm_model import forward_stack
from tests.test_sxdm_readers import write_bliss


@pytest.fixture(scope="module")
def case():
    t = forward_stack(ny=6, nx=8, n_eta=11, drift_px=0.0, seed=31)
    g = Geometry(t.energy_kev, t.distance_m, t.pixel_m, t.cch)
    maps = reduce_stack(t.frames, t.eta, g, t.delta, t.nu, x=t.x_um, y=t.y_um, progress=False)
    return t, g, maps


def test_save_load_roundtrip_and_atomic_replace(tmp_path, case, monkeypatch):
    _, _, maps = case
    path = tmp_path / "maps.h5"
    save_maps(maps, path)
    with h5py.File(path, "r") as f:
        assert f["entry"].attrs["NX_class"] == "NXentry"
        assert f["entry/maps"].attrs["signal"] == "strain"
        assert f["entry/maps/strain"].attrs["units"] == "microstrain"
        assert f["entry/maps/x"].attrs["units"] == "um"
    back = load_maps(path)
    for name in ("strain", "tilt_azimuth", "d_spacing", "qz"):
        np.testing.assert_array_equal(back[name].values, maps[name].values)
    np.testing.assert_array_equal(back.mask.values, maps.mask.values)
    assert back.attrs["threshold"] == 0.2 and back.attrs["median"] == 2
    # a failure while writing leaves the previous file intact and no temporary file
    before = path.read_bytes()
    import braggscope.analysis.sxdm.files as io

    real = h5py.Group.create_dataset

    def boom(self, name, *a, **k):
        if name == "tilt_azimuth":
            raise RuntimeError("disk full")
        return real(self, name, *a, **k)

    monkeypatch.setattr(h5py.Group, "create_dataset", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_maps(maps, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["maps.h5"]
    with pytest.raises(ValueError, match="maps"):
        save_maps({"not": "maps"}, tmp_path / "x.h5")


def test_mosaicity_colours_follow_convention(case):
    _, _, maps = case
    cap = 0.2
    rgba = mosaicity_rgb(maps, tilt_cap=cap)
    m = maps.mask.values
    hsv = colors.rgb_to_hsv(rgba[..., :3])
    alt, azi = maps.tilt_altitude.values, maps.tilt_azimuth.values
    np.testing.assert_allclose(hsv[..., 1][m], np.clip(alt[m] / cap, 0, 1), atol=1e-6)
    sat = m & (alt > 0.02)
    dh = (hsv[..., 0][sat] - ((azi[sat] + 180) / 360) + 0.5) % 1.0 - 0.5
    np.testing.assert_allclose(dh, 0, atol=1e-6)
    assert np.all(rgba[..., 3][~m] == 0) and np.all(hsv[..., 2][m] == 1)
    # fixed cap: the same tilt gives the same colour whatever the map's maximum
    assert not np.allclose(mosaicity_rgb(maps)[m], rgba[m])


def test_save_figures_writes_pngs(tmp_path, case):
    t, g, maps = case
    grid = grid_pixel_peak(t.frames, t.eta, g, t.delta, t.nu, pixel=(3, 4))
    paths = save_figures(maps, tmp_path / "fig", tilt_cap=0.15, peak_grid=grid)
    names = {os.path.basename(p) for p in paths}
    assert {"sxdm_maps.png", "sxdm_strain.png", "sxdm_abs_strain.png", "sxdm_mosaicity.png",
            "sxdm_tilt_azimuth.png", "sxdm_peak_slices.png"} <= names
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(p) > 5000


def test_cli_reduces_a_bliss_file(tmp_path, case, capsys):
    from braggscope.app.cli.main import main

    t, _, maps = case
    src = tmp_path / "data" / "sample.h5"
    src.parent.mkdir()
    write_bliss(str(src), t)
    out = tmp_path / "maps.h5"
    rc = main(["reduce", "sxdm", str(src), "--out", str(out), "--figures", str(tmp_path / "figs"),
               "--quiet"])
    assert rc == 0, capsys.readouterr()
    back = load_maps(out)
    np.testing.assert_allclose(back.strain.values, maps.strain.values, atol=1e-3, equal_nan=True)
    assert (tmp_path / "figs" / "sxdm_mosaicity.png").is_file()
    assert (tmp_path / "figs" / "sxdm_peak_slices.png").is_file()
    rc = main(["reduce", "sxdm", str(src), "--out", str(tmp_path / "d.h5"), "--drift", "register", "--quiet"])
    assert rc == 0
    assert "drift_shift" in load_maps(tmp_path / "d.h5")
    # bad arguments: clear message, exit status 2, nothing written
    for extra, word in ((["--background", "magic"], "--background"), (["--roi", "1:2"], "--roi"),
                        (["--threshold", "1.5"], "--threshold")):
        rc = main(["reduce", "sxdm", str(src), "--out", str(tmp_path / "bad.h5"), "--quiet"] + extra)
        assert rc == 2
        assert word in capsys.readouterr().err
    assert not (tmp_path / "bad.h5").exists()
    rc = main(["reduce", "sxdm", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "bad.h5")])
    assert rc == 2 and "missing.h5" in capsys.readouterr().err
