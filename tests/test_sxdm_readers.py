"""BLISS and XSOCS readers on small files written here in those layouts."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

pytest.importorskip("xrayutilities")

from braggscope.analysis.readers import detect_format, read_bliss, read_stack, read_xsocs
from braggscope.analysis.sxdm import reduce_map
from braggscope.analysis.sxdm.reduce import reduce_stack
from braggscope.core.geometry import Geometry
from braggscope.core.setup import ScanSetup
from braggscope.core.stacks import MapStack
from tests.test_sxdm_model import forward_stack


@pytest.fixture(scope="module")
def truth():
    return forward_stack(ny=6, nx=8, n_eta=11, drift_px=0.0, seed=21)


def write_bliss(path, t, *, vds=True, snake=False, old_positions=False, mask=None):
    """ID01 BLISS layout: one scan per eta, frames a VDS into per-scan detector files."""
    n_eta, ny, nx, rows, cols = t.frames.shape
    xx, yy = np.meshgrid(t.x_um, t.y_um)
    order = np.arange(ny * nx).reshape(ny, nx)
    if snake:
        order[1::2] = order[1::2, ::-1]
    acq = np.argsort(order.ravel())  # acquisition index -> raster index
    with h5py.File(path, "w") as f:
        for i in range(n_eta):
            scan = f.create_group(f"{i + 1}.1")
            inst = scan.create_group("instrument")
            data = t.frames[i].reshape(ny * nx, rows, cols)[acq]
            if vds:
                det_dir = os.path.join(os.path.dirname(path), f"scan{i + 1:04d}")
                os.makedirs(det_dir, exist_ok=True)
                det_file = os.path.join(det_dir, "mpx1x4_0000.h5")
                with h5py.File(det_file, "w") as d:
                    d.create_dataset("entry_0000/measurement/data", data=data, compression="gzip")
                layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
                layout[:] = h5py.VirtualSource(os.path.relpath(det_file, os.path.dirname(path)),
                                               "entry_0000/measurement/data", shape=data.shape)
                inst.create_virtual_dataset("mpx1x4/image", layout, fillvalue=0)
            else:
                inst.create_dataset("mpx1x4/image", data=data)
            det = inst["mpx1x4"]
            det["beam_center_x"] = t.cch[1]
            det["beam_center_y"] = t.cch[0]
            det["distance"] = t.distance_m
            det["x_pixel_size"] = t.pixel_m
            det["y_pixel_size"] = t.pixel_m
            if mask is not None:
                det["pixel_mask"] = mask.astype(np.uint8)
            pos = "{}_position/value" if old_positions else "{}/value"
            inst[pos.format("pix")] = xx.ravel()[acq] + 0.001 * np.sin(np.arange(ny * nx))  # encoder noise
            inst[pos.format("piy")] = yy.ravel()[acq]
            p = inst.create_group("positioners")
            p["eta"] = t.eta[i]
            p["delta"] = t.delta
            p["nu"] = t.nu
            p["phi"] = 0.0
            p["nrj"] = t.energy_kev
            scan["technique/dim0"] = nx
            scan["technique/dim1"] = ny


def write_xsocs(path, t, *, external=True, pixel_in_file=False, with_scan=True):
    """XSOCS master file: one entry per eta (external links to per-angle files)."""
    n_eta, ny, nx, rows, cols = t.frames.shape
    xx, yy = np.meshgrid(t.x_um, t.y_um)
    cpd = t.distance_m * np.tan(np.radians(1.0)) / t.pixel_m
    with h5py.File(path, "w") as master:
        for i in range(n_eta):
            name = f"sample_{i:03d}"
            target = os.path.join(os.path.dirname(path), f"{name}.h5") if external else None
            f = h5py.File(target, "w") if external else master
            e = f.create_group(name)
            e["measurement/image/data"] = t.frames[i].reshape(ny * nx, rows, cols)
            e.attrs["NX_class"] = "NXentry"
            e["measurement/adcY"] = xx.ravel()  # XSOCS: pix -> adcY, piy -> adcX
            e["measurement/adcX"] = yy.ravel()
            if with_scan:
                sc = e.create_group("scan")
                sc["motor_0"], sc["motor_0_start"], sc["motor_0_end"] = "pix", t.x_um[0], t.x_um[-1]
                sc["motor_0_steps"] = nx
                sc["motor_1"], sc["motor_1_start"], sc["motor_1_end"] = "piy", t.y_um[0], t.y_um[-1]
                sc["motor_1_steps"] = ny
                sc["delay"] = 0.0
            p = e.create_group("instrument/positioners")
            p["eta"], p["del"], p["nu"], p["phi"] = t.eta[i], t.delta, t.nu, 0.0
            d = e.create_group("instrument/detector")
            d["beam_energy"] = t.energy_kev * 1000.0
            d["center_chan_dim0"], d["center_chan_dim1"] = t.cch
            d["chan_per_deg_dim0"] = d["chan_per_deg_dim1"] = cpd
            if pixel_in_file:
                d["pixelsize_dim0"] = t.pixel_m * 1e6
            if external:
                f.close()
                master[name] = h5py.ExternalLink(os.path.basename(target), name)


def test_all_input_paths_agree(tmp_path, truth):
    t = truth
    g = Geometry(t.energy_kev, t.distance_m, t.pixel_m, t.cch)
    ref = reduce_stack(t.frames, t.eta, g, t.delta, t.nu, progress=False)
    bliss = tmp_path / "bliss" / "sample_0001.h5"
    bliss.parent.mkdir()
    write_bliss(str(bliss), t, snake=True)
    xsocs = tmp_path / "xsocs" / "master.h5"
    xsocs.parent.mkdir()
    write_xsocs(str(xsocs), t)
    assert detect_format(bliss) == "bliss" and detect_format(xsocs) == "xsocs"
    setup = ScanSetup(t.energy_kev, t.distance_m, t.pixel_m, t.cch, t.frames.shape[-2:], t.delta, t.nu)
    in_memory = MapStack(t.frames, t.eta, setup, x=np.linspace(0, 2.8, 8), y=np.linspace(0, 2.0, 6))
    results = {"run": reduce_map(in_memory, progress=False)}
    for name, path in (("bliss", bliss), ("xsocs", xsocs)):
        stack = read_stack(path)
        assert stack.frames.shape == t.frames.shape and stack.source == str(path)
        np.testing.assert_array_equal(np.asarray(stack.frames[3, 2]), t.frames[3, 2])  # snake undone
        assert stack.setup.energy_kev == pytest.approx(t.energy_kev)
        assert stack.setup.distance_m == pytest.approx(t.distance_m, rel=1e-9)
        np.testing.assert_allclose(stack.eta, t.eta)
        np.testing.assert_allclose(stack.x, t.x_um, atol=0.01)
        results[name] = reduce_map(stack, progress=False)
    for name, maps in results.items():
        np.testing.assert_array_equal(maps.mask.values, ref.mask.values, err_msg=name)
        np.testing.assert_allclose(maps.strain.values, ref.strain.values, atol=1e-3, equal_nan=True,
                                   err_msg=name)
        np.testing.assert_allclose(maps.tilt_azimuth.values, ref.tilt_azimuth.values, atol=1e-4,
                                   equal_nan=True, err_msg=name)
    np.testing.assert_allclose(results["run"].x.values, np.linspace(0, 2.8, 8))


def test_bliss_old_positions_plain_dataset_and_pixel_mask(tmp_path, truth):
    mask = np.zeros(truth.frames.shape[-2:], bool)
    mask[:, 0] = True
    path = tmp_path / "old.h5"
    write_bliss(str(path), truth, vds=False, old_positions=True, mask=mask)
    stack = read_bliss(path)
    np.testing.assert_array_equal(stack.setup.pixel_mask, mask)
    np.testing.assert_array_equal(np.asarray(stack.frames[0, 5, 7]), truth.frames[0, 5, 7])
    xs = tmp_path / "x" / "m.h5"
    xs.parent.mkdir()
    write_xsocs(str(xs), truth, external=False, pixel_in_file=True, with_scan=False)
    setup = read_xsocs(xs).setup
    assert setup.pixel_m == pytest.approx(truth.pixel_m)
    assert setup.cch == pytest.approx(truth.cch)


def test_missing_vds_source_raises(tmp_path, truth):
    path = tmp_path / "s.h5"
    write_bliss(str(path), truth)
    os.remove(tmp_path / "scan0004" / "mpx1x4_0000.h5")
    # h5py itself would silently return zeros
    with h5py.File(path, "r") as f:
        assert f["4.1/instrument/mpx1x4/image"][0].sum() == 0
    with pytest.raises(FileNotFoundError, match="scan0004.*missing"):
        read_bliss(path)


def test_missing_external_entry_raises(tmp_path, truth):
    path = tmp_path / "master.h5"
    write_xsocs(str(path), truth)
    os.remove(tmp_path / "sample_002.h5")
    with pytest.raises(FileNotFoundError, match="sample_002"):
        read_xsocs(path)


def _bliss_with_image(path, truth, scan, change):
    """A BLISS file whose scan ``scan`` holds ``change(frames)`` instead of its frames."""
    write_bliss(str(path), truth, vds=False)
    with h5py.File(path, "a") as f:
        img = f[f"{scan}/instrument/mpx1x4/image"][()]
        del f[f"{scan}/instrument/mpx1x4/image"]
        f[f"{scan}/instrument/mpx1x4/image"] = change(img)
    return path


def test_inconsistent_files_raise_clear_errors(tmp_path, truth):
    # truncated file
    good = tmp_path / "good.h5"
    write_bliss(str(good), truth, vds=False)
    raw = good.read_bytes()
    bad = tmp_path / "trunc.h5"
    bad.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match="trunc.h5"):
        read_bliss(bad)
    # fewer frames than positions
    short = _bliss_with_image(tmp_path / "short.h5", truth, "2.1", lambda img: img[:-3])
    with pytest.raises(ValueError, match=r"short.h5.*2\.1.*45 frames"):
        read_bliss(short)
    # frames of another shape in one scan
    odd = _bliss_with_image(tmp_path / "odd.h5", truth, "3.1", lambda img: img[:, :32, :])
    with pytest.raises(ValueError, match="odd.h5.*frames are"):
        read_bliss(odd)
    # missing angle
    noeta = tmp_path / "noeta.h5"
    write_bliss(str(noeta), truth, vds=False)
    with h5py.File(noeta, "a") as f:
        del f["5.1/instrument/positioners/eta"]
    with pytest.raises(ValueError, match="noeta.h5.*5.1/instrument/positioners/eta"):
        read_bliss(noeta)
    with pytest.raises(FileNotFoundError, match="nothere.h5"):
        read_stack(tmp_path / "nothere.h5")
    with pytest.raises(ValueError, match="lacks.*distance_m"):
        reduce_map(MapStack(truth.frames, truth.eta, None, metadata={
            "energy_kev": 8.0, "pixel_m": 55e-6, "cch": [0, 0], "delta": 1.0, "detector_shape": [64, 64]}))


def test_xsocs_layout_is_what_xsocs_reads(tmp_path, truth):
    """Our XSOCS test files are read the same way by XSOCS itself (when installed)."""
    xsocs_h5 = pytest.importorskip("xsocs.io.XsocsH5")
    path = tmp_path / "master.h5"
    write_xsocs(str(path), truth)
    h5 = xsocs_h5.XsocsH5(str(path))
    entry = h5.entries()[2]
    pos = h5.scan_positions(entry)
    stack = read_xsocs(path)
    np.testing.assert_allclose(np.unique(pos.pos_0), stack.x)  # fast axis: pix
    np.testing.assert_allclose(np.unique(pos.pos_1), stack.y)
    assert h5.positioner(entry, "eta") == pytest.approx(stack.eta[2])
    assert h5.beam_energy(entry) == pytest.approx(stack.setup.energy_kev * 1000)
    np.testing.assert_allclose(h5.direct_beam(entry), stack.setup.cch)


def test_lazy_stack_indexing_matches_numpy(tmp_path, truth):
    path = tmp_path / "snake.h5"
    write_bliss(str(path), truth, vds=False, snake=True)
    frames = read_bliss(path).frames
    ref = truth.frames
    assert frames.shape == ref.shape and frames.dtype == ref.dtype
    for key in [(slice(None), slice(1, 4), slice(2, 7)), (3,), (-1, 2, slice(None), slice(5, 9)),
                (slice(2, 5), 1, 3, slice(None), 7), (Ellipsis, slice(0, 4), slice(10, 20))]:
        np.testing.assert_array_equal(frames[key], ref[key], err_msg=str(key))
    np.testing.assert_array_equal(np.asarray(frames), ref)
    with pytest.raises(IndexError):
        frames[::2]
