"""BCDI exports: VTK ImageData (.vti), CXI/HDF5, npz, figures."""

import json
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest

from braggscope.analysis.bcdi.files import (plot_isosurface, plot_strain_slices, read_vti, write_cxi, write_npz,
                                         write_vti)


@pytest.fixture()
def fields():
    rng = np.random.default_rng(0)
    z, y, x = np.indices((10, 12, 14)) - np.array([5, 6, 7])[:, None, None, None]
    ball = z ** 2 + y ** 2 + x ** 2 <= 16
    strain = np.where(ball, 1e-4 * z, np.nan).astype(np.float32)
    return {"amplitude": ball.astype(np.float32) + 0.01 * rng.random(ball.shape).astype(np.float32),
            "support": ball, "strain": strain}


def test_vti_structure_and_round_trip(tmp_path, fields):
    path = write_vti(tmp_path / "obj.vti", fields, voxel_nm=(2.0, 3.0, 4.0), q_bragg=(0, 0, 3.07))
    raw = path.read_bytes()
    head = raw[: raw.index(b"<AppendedData")].decode() + "</VTKFile>"
    root = ET.fromstring(head)  # well-formed XML header
    img = root.find("ImageData")
    assert root.get("type") == "ImageData" and img.get("WholeExtent") == "0 13 0 11 0 9"
    assert img.get("Spacing") == "4.0 3.0 2.0"  # x, y, z
    names = [d.get("Name") for d in root.iter("DataArray")]
    assert names == ["voxel_size_nm", "q_bragg", "amplitude", "support", "strain"]
    back = read_vti(path)
    assert np.array_equal(back["amplitude"], fields["amplitude"])
    assert np.array_equal(back["support"], fields["support"].astype(np.uint8))
    assert np.array_equal(back["strain"], fields["strain"], equal_nan=True)
    assert back["q_bragg"] == pytest.approx([0, 0, 3.07]) and back["voxel_size_nm"] == pytest.approx([4, 3, 2])
    # x runs fastest in the file: the first 14 values are the first x row
    first = root.find(".//PointData/DataArray[@Name='amplitude']")
    off = raw.index(b"_", raw.index(b"<AppendedData")) + 1 + int(first.get("offset"))
    nbytes = int(np.frombuffer(raw[off:off + 8], "<u8")[0])
    assert nbytes == 10 * 12 * 14 * 4
    assert np.array_equal(np.frombuffer(raw[off + 8:off + 8 + 14 * 4], "<f4"), fields["amplitude"][0, 0, :])


def test_vti_errors(tmp_path, fields):
    with pytest.raises(ValueError, match="fields"):
        write_vti(tmp_path / "a.vti", {}, voxel_nm=1, q_bragg=(0, 0, 1))
    with pytest.raises(ValueError, match="one shape"):
        write_vti(tmp_path / "a.vti", {"a": np.zeros((2, 2, 2)), "b": np.zeros((3, 2, 2))}, voxel_nm=1,
                  q_bragg=(0, 0, 1))
    with pytest.raises(ValueError, match="voxel_nm"):
        write_vti(tmp_path / "a.vti", fields, voxel_nm=0, q_bragg=(0, 0, 1))


def test_cxi_and_npz(tmp_path, fields):
    obj = fields["amplitude"] * np.exp(1j * 0.1).astype(np.complex64)
    params = {"energy_kev": 13.0, "recipe": "HIO:10", "metrics": [{"llk": 1.0}], "cch": (1, 2), "size_m": None}
    write_cxi(tmp_path / "r.cxi", obj, fields["support"], params=params, fields={"strain": fields["strain"]},
              modes=[obj, obj], intensity=np.ones((10, 12, 14)), mask=np.zeros((10, 12, 14), bool))
    with h5py.File(tmp_path / "r.cxi") as f:
        assert f["cxi_version"][()] == 150
        assert np.allclose(f["entry_1/image_1/data"][()], obj)
        assert f["entry_1/image_1/mask"][()].sum() == fields["support"].sum()
        cfg = f["entry_1/image_1/process_1/configuration"]
        assert cfg["energy_kev"][()] == 13.0 and cfg["recipe"][()].decode() == "HIO:10"
        assert json.loads(cfg["metrics"][()]) == [{"llk": 1.0}]
        assert f["entry_1/image_1/modes"].shape == (2, 10, 12, 14)
        assert np.array_equal(f["entry_1/result_1/strain"][()], fields["strain"], equal_nan=True)
    write_npz(tmp_path / "r.npz", {"strain": fields["strain"]}, voxel_nm=2.0)
    z = np.load(tmp_path / "r.npz")
    assert json.loads(str(z["params"]))["voxel_nm"] == 2.0


def test_figures(tmp_path, fields):
    import matplotlib.pyplot as plt

    fig = plot_isosurface(fields["amplitude"], fields["strain"], voxel_nm=5.0, level=0.5)
    fig.savefig(tmp_path / "iso.png")
    plt.close(fig)
    fig = plot_strain_slices(fields["strain"], voxel_nm=5.0, n_slices=3)
    fig.savefig(tmp_path / "slices.png")
    plt.close(fig)
    assert (tmp_path / "iso.png").stat().st_size > 10_000
    assert (tmp_path / "slices.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="finite"):
        plot_strain_slices(np.full((4, 4, 4), np.nan))
