"""``.vti`` files written without the vtk package, read back by VTK's own reader (the dev extra's vtk)."""

import numpy as np
import pytest

from braggscope.analysis.vti import read_vti, write_vti


@pytest.fixture
def fields():
    rng = np.random.default_rng(3)
    shape = (30, 40, 50)  # 60,000 points: several 32 KiB compression blocks per array
    return {"amplitude": rng.random(shape).astype(np.float32), "support": rng.random(shape) > 0.5,
            "phase": rng.normal(size=shape), "count": rng.integers(0, 1000, shape, dtype=np.int32)}


def test_vtk_reads_what_is_written(tmp_path, fields):
    vtk_io = pytest.importorskip("vtkmodules.vtkIOXML")
    from vtkmodules.util.numpy_support import vtk_to_numpy

    path = write_vti(tmp_path / "x.vti", fields, voxel_nm=(3.0, 4.0, 5.0), q_bragg=(0.0, 0.1, 2.2))
    reader = vtk_io.vtkXMLImageDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    assert image.GetDimensions() == (50, 40, 30)  # x, y, z
    assert image.GetSpacing() == (5.0, 4.0, 3.0)
    assert image.GetOrigin() == (-125.0, -80.0, -45.0)  # 0 at index n // 2
    points = image.GetPointData()
    assert points.GetScalars().GetName() == "amplitude"
    for name, a in fields.items():
        read = vtk_to_numpy(points.GetArray(name)).reshape(a.shape)
        assert np.array_equal(read, a.astype(np.uint8) if a.dtype == bool else a), name
    field = image.GetFieldData()
    assert np.allclose(vtk_to_numpy(field.GetArray("voxel_size_nm")), [5.0, 4.0, 3.0])
    assert np.allclose(vtk_to_numpy(field.GetArray("q_bragg")), [0.0, 0.1, 2.2])


def test_round_trip_and_compression(tmp_path, fields):
    path = write_vti(tmp_path / "x.vti", {"zeros": np.zeros((30, 40, 50)), **fields}, voxel_nm=2.0, q_bragg=(0, 0, 1))
    back = read_vti(path)
    assert back["_spacing"] == (2.0, 2.0, 2.0)
    assert np.array_equal(back["phase"], fields["phase"]) and back["support"].dtype == np.uint8
    assert path.stat().st_size < 0.9 * sum(a.nbytes for a in fields.values())  # zeros and bools compress


@pytest.mark.parametrize("fields, match", [
    ({}, "must not be empty"),
    ({"a": np.zeros((2, 3))}, "3D arrays"),
    ({"a": np.zeros((2, 3, 4)), "b": np.zeros((2, 3, 5))}, "one shape"),
    ({"a b": np.zeros((2, 3, 4))}, "field name"),
])
def test_bad_fields_refused_before_writing(tmp_path, fields, match):
    with pytest.raises(ValueError, match=match):
        write_vti(tmp_path / "x.vti", fields, voxel_nm=1.0, q_bragg=(0, 0, 1))
    assert not list(tmp_path.iterdir())


def test_bad_voxel_refused(tmp_path):
    with pytest.raises(ValueError, match="voxel_nm"):
        write_vti(tmp_path / "x.vti", {"a": np.zeros((2, 3, 4))}, voxel_nm=float("nan"), q_bragg=(0, 0, 1))
