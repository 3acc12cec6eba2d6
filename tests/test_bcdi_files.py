"""BCDI files open in the field's tools: CXI as PyNX lays it out (cdiutils' reader, silx, nexusformat), compressed
VTK (VTK's reader)."""

import os

import h5py
import numpy as np
import pytest

from braggscope.analysis.bcdi.files import load_result, read_vti, vti_fields, write_cxi, write_npz, write_vti
from braggscope.analysis.bcdi.result import to_dataset
from braggscope.analysis.bcdi.strain import strain_analysis

VOXEL = 6.0  # nm


def particle(n=40, radius=12, seed=0):
    """Ball with a known displacement field u_z = a z^2 (nm) inside a box of n^3; G along z."""
    rng = np.random.default_rng(seed)
    z, y, x = (np.indices((n, n, n)) - n // 2) * VOXEL
    ball = z ** 2 + y ** 2 + x ** 2 <= (radius * VOXEL) ** 2
    g = 2 * np.pi / 2.0425  # |G| of LMNO 004, 1/Angstrom
    u_nm = 1e-5 * z ** 2 / VOXEL
    obj = np.where(ball, 1.0 + 0.02 * rng.standard_normal(ball.shape), 0.0) * np.exp(1j * g * 10 * u_nm)
    return obj.astype(np.complex64), g


@pytest.fixture(scope="module")
def result():
    obj, g = particle()
    s = strain_analysis(obj, q_bragg_norm=g, voxel_nm=VOXEL, g_unit=(1, 0, 0))
    return to_dataset(s, q_bragg=(0, 0, g)), obj


def test_result_dataset_has_coordinates_units_and_the_strain_closed_form(result):
    ds, obj = result
    assert ds["z"].attrs["units"] == "nm" and float(ds["x"][1] - ds["x"][0]) == pytest.approx(VOXEL)
    assert set(ds.data_vars) >= {"amplitude", "phase", "displacement", "strain", "support", "d_spacing"}
    assert ds["displacement"].attrs["units"] == "nm" and ds["phase"].attrs["units"] == "rad"
    # u_z = 1e-5 z^2 / voxel  ->  strain du/dz = 2e-5 z / voxel (z in nm)
    z = ds["z"].values[:, None, None] * np.ones(ds["strain"].shape)
    inside = np.isfinite(ds["strain"].values) & (np.abs(ds["x"].values)[None, None, :] < 30)
    np.testing.assert_allclose(ds["strain"].values[inside], 2e-5 * z[inside] / VOXEL, atol=2e-6)
    assert ds.attrs["voxel_size_nm"] == [VOXEL] * 3


def test_cxi_follows_cxi_and_nexus_and_opens_in_silx_and_nexusformat(tmp_path, result):
    silx_io = pytest.importorskip("silx.io")
    from nexusformat.nexus import nxload
    from silx.io.nxdata import NXdata, get_default

    ds, obj = result
    det = np.fft.ifftshift(obj)  # any complex array stands for the detector-frame object
    inten = np.abs(np.fft.fftshift(np.fft.fftn(obj))) ** 2
    path = write_cxi(tmp_path / "r.cxi", ds, obj=obj, params={"recipe": "HIO:10,ER:5", "eta": [1.0, 2.0],
                                                              "best_run": {"llk": 0.96, "error": 0.005}},
                     obj_detector=det, support_detector=np.abs(det) > 0.5, modes=[det, det], mode_fraction=0.99,
                     basis_nm=np.eye(3) * VOXEL, intensity=inten, mask=np.zeros(inten.shape, bool),
                     calculated=inten, instrument={"energy_kev": 13.0, "distance_m": 1.4, "pixel_m": 55e-6})
    with h5py.File(path) as f:
        assert f["cxi_version"][()] == 150 and f.attrs["default"] == "entry_1"
        e = f["entry_1"]
        assert e.attrs["NX_class"] == "NXentry" and e.attrs["default"] == "data_1"
        assert e["program_name"][()] == b"braggscope" and "version" in e["program_name"].attrs
        img = e["image_1"]
        assert img.attrs["NX_class"] == "NXdata" and img.attrs["signal"] == "data"
        assert img["data_type"][()] == b"electron density" and img["data_space"][()] == b"real"
        np.testing.assert_array_equal(img["data"][()], obj)  # image_1 = the orthogonal object
        assert list(img.attrs["axes"]) == ["z", "y", "x"] and img["x"].attrs["units"] == "nm"
        assert img["voxel_size"].attrs["units"] == "nm" and list(img["voxel_size"][()]) == [VOXEL] * 3
        assert "configuration" in img["process_1"] and img["process_1"].attrs["NX_class"] == "NXprocess"
        # PyNX's layout: the object in data_1 (a link to image_1/data), likelihood and algorithm in process_1
        assert e["data_1"].get("data", getlink=True).path == "/entry_1/image_1/data"
        np.testing.assert_array_equal(e["data_1/data"][()], obj)
        assert img["process_1/results/llk_poisson"][()] == 0.96 and np.isnan(img["process_1/results/free_llk_poisson"])
        assert img["process_1/algorithm"][()] == b"ER**5 * HIO**10"
        assert e["image_2/data_space"][()] == b"real" and e["image_2/modes"].shape == (2,) + obj.shape
        # the measured intensity: data_2, and where CXI keeps a detector's data
        assert e["data_2/data_space"][()] == b"diffraction" and e["data_2"].attrs["NX_class"] == "NXdata"
        np.testing.assert_array_equal(e["instrument_1/detector_1/data"][()], inten.astype(np.float32))
        assert e["data_3/data_type"][()] == b"intensity"
        assert e["instrument_1/detector_1/distance"][()] == 1.4
        assert e["instrument_1/source_1/energy"].attrs["units"] == "J"
    with silx_io.open(str(path)) as h5:
        nx = get_default(h5)
        assert nx is not None and nx.is_valid and nx.signal.name == "/entry_1/data_1/data"
        assert np.array_equal(nx.signal[()], obj)  # the link resolved: the object
        assert [a.name for a in nx.axes] == ["/entry_1/data_1/z", "/entry_1/data_1/y", "/entry_1/data_1/x"]
        for group in ("result_1", "image_1", "data_2", "data_3", "image_2"):
            assert NXdata(h5[f"entry_1/{group}"]).is_valid, group
        res = NXdata(h5["entry_1/result_1"])
        assert res.signal.name.endswith("/amplitude")
        assert "strain" in [s.name.split("/")[-1] for s in res.auxiliary_signals]
    root = nxload(str(path))
    plot = root.plottable_data
    assert plot is not None and plot.nxpath == "/entry_1/data_1" and plot.nxsignal.shape == obj.shape
    np.testing.assert_array_equal(plot.nxsignal.nxvalue, obj)
    assert [a.nxname for a in plot.nxaxes] == ["z", "y", "x"]
    back = load_result(path)
    for name in ("amplitude", "strain", "phase", "support"):
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    assert back["support"].dtype == bool and back["x"].attrs["units"] == "nm"
    assert back.attrs["voxel_size_nm"] == [VOXEL] * 3 and back.attrs["q_bragg"] == pytest.approx(ds.attrs["q_bragg"])


def test_cdiutils_reads_the_object_support_and_likelihood_where_pynx_puts_them(tmp_path, result):
    """cdiutils' analysis of PyNX phasing results (its ranking by llk_poisson and free_llk_poisson, and the
    amplitude metrics it computes from image_1/support and |data_1/data|) runs on braggscope's files. (Its mode
    decomposition needs PyNX itself, which is not installable from PyPI.)"""
    phaser = pytest.importorskip("cdiutils.process.phaser")
    import silx.io.h5py_utils  # noqa: F401 - cdiutils 0.2 uses it without importing it
    ds, obj = result
    for run, llk in ((1, 0.9), (2, 1.3)):
        write_cxi(tmp_path / f"scan_Run{run:04d}.cxi", ds, obj=obj * (1 + 0.01 * run), params={
            "recipe": "HIO:10", "best_run": {"llk": llk, "error": 0.01}})
    analyser = phaser.PhasingResultAnalyser(result_dir_path=str(tmp_path) + "/")
    with np.errstate(all="ignore"):
        analyser.analyse_phasing_results(sorting_criterion="llk", plot=False)
    assert list(analyser.sorted_phasing_results) == ["scan_Run0001.cxi", "scan_Run0002.cxi"]  # llk ranks them
    assert set(analyser.metrics["sharpness"]) == {"scan_Run0001.cxi", "scan_Run0002.cxi"}
    support, amplitude = (np.asarray(ds["support"].values), np.abs(obj))
    expected = phaser.PhasingResultAnalyser.amplitude_based_metrics(amplitude * 1.01, support)
    with h5py.File(tmp_path / "scan_Run0001.cxi") as f:  # what cdiutils read is the object and its support
        got = phaser.PhasingResultAnalyser.amplitude_based_metrics(np.abs(f["entry_1/data_1/data"][()]),
                                                                   f["entry_1/image_1/support"][()])
    assert got == pytest.approx(expected, rel=1e-5)


PARAMS = {"recipe": "HIO:10", "n_runs": 4, "beta": 0.9, "gpu": False, "eta": [1.0, 2.0], "crop": [[0, 32], [4, 36]],
          "axes": ["z", "y", "x"], "setup": {"energy_kev": 13.0, "detector": {"name": "mpx1x4", "pixel_m": 55e-6}},
          "metrics": [{"llk": 0.1, "coherence_px": None}], "mixed": [1, None], "empty": None}


def test_configuration_follows_one_rule_that_silx_and_h5py_read(tmp_path, result):
    """process_1/configuration: numbers and strings as datasets, dicts as NXcollection groups, the rest JSON."""
    from silx.io import open as silx_open

    from braggscope.analysis.nexus import read_configuration

    ds, obj = result
    path = write_cxi(tmp_path / "r.cxi", ds, obj=obj, params=PARAMS)
    with h5py.File(path) as f:
        cfg = f["entry_1/image_1/process_1/configuration"]
        assert cfg.attrs["NX_class"] == "NXcollection"
        assert cfg["n_runs"].dtype.kind == "i" and cfg["beta"][()] == 0.9 and cfg["gpu"][()] == np.False_
        assert cfg["recipe"][()].decode() == "HIO:10"
        assert h5py.check_string_dtype(cfg["recipe"].dtype).encoding == "utf-8"
        assert cfg["eta"].dtype.kind == "f" and cfg["crop"].shape == (2, 2)
        assert [a.decode() for a in cfg["axes"][()]] == ["z", "y", "x"]
        assert cfg["setup"].attrs["NX_class"] == "NXcollection" and cfg["setup/detector/pixel_m"][()] == 55e-6
        assert cfg["metrics"].attrs["format"] == "json" and "empty" not in cfg  # None: left out
        assert read_configuration(cfg) == {k: v for k, v in PARAMS.items() if k != "empty"}
    with silx_open(str(path)) as h5:
        cfg = h5["entry_1/image_1/process_1/configuration"]
        assert cfg["setup/energy_kev"][()] == 13.0 and list(cfg["eta"][()]) == [1.0, 2.0]


def test_vti_reads_with_vtk_and_is_compressed(tmp_path, result):
    ds, _ = result
    fields = vti_fields(ds)
    path = write_vti(tmp_path / "o.vti", fields, voxel_nm=VOXEL, q_bragg=(0, 0, 3.07))
    head = path.read_bytes()[:600]
    assert b'compressor="vtkZLibDataCompressor"' in head
    back = read_vti(path)  # vtkXMLImageDataReader
    for name, a in fields.items():
        np.testing.assert_array_equal(back[name], a, err_msg=name)
    assert back["_spacing"] == (VOXEL,) * 3 and back["q_bragg"] == pytest.approx([0, 0, 3.07])
    assert back["_origin"] == pytest.approx((-20 * VOXEL,) * 3)  # 0 nm at the array centre, like the Dataset
    with pytest.raises(ValueError, match="one shape"):
        write_vti(tmp_path / "a.vti", {"a": np.zeros((2, 2, 2)), "b": np.zeros((3, 2, 2))}, voxel_nm=1,
                  q_bragg=(0, 0, 1))
    with pytest.raises(ValueError, match="voxel_nm"):
        write_vti(tmp_path / "a.vti", fields, voxel_nm=0, q_bragg=(0, 0, 1))


def test_vti_is_5x_smaller_than_raw_on_a_demo_size_particle(tmp_path):
    """Demo box (~140^3, the particle ~30 % of each side); the raw writer stored every array uncompressed."""
    n, r = 140, 21
    obj, g = particle(n=n, radius=r, seed=1)
    s = strain_analysis(obj, q_bragg_norm=g, voxel_nm=VOXEL, g_unit=(1, 0, 0))
    fields = vti_fields(to_dataset(s))
    path = write_vti(tmp_path / "demo.vti", fields, voxel_nm=VOXEL, q_bragg=(0, 0, g))
    raw = sum(a.nbytes + 8 for a in fields.values())  # raw appended binary: data + one UInt64 header each
    assert raw / path.stat().st_size >= 5, (raw, path.stat().st_size)


def test_writers_are_atomic(tmp_path, result, monkeypatch):
    ds, obj = result
    import braggscope.analysis.bcdi.files as files

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(files, "_image_orthogonal", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_cxi(tmp_path / "r.cxi", ds, obj=obj)
    assert os.listdir(tmp_path) == []
    old = os.umask(0o027)
    try:
        write_npz(tmp_path / "r.npz", {"strain": ds["strain"].values}, voxel_nm=VOXEL)
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "r.npz").st_mode & 0o777) == 0o640  # the user's umask, not mkstemp's 0600
    assert sorted(os.listdir(tmp_path)) == ["r.npz"]
