"""Every reader checks the files it reads from: virtual-dataset sources, external links, truncation.

h5py reads a virtual dataset whose source file is absent as zeros, without an error; the
readers (BLISS SXDM map, BLISS rocking scan, XSOCS, catalog runs) must refuse such input and
name the file. Small files in each layout are written here.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from braggscope.analysis.readers import read_bliss, read_bliss_rocking, read_catalog_run, read_stack, read_xsocs
from braggscope.analysis.sxdm import reduce_map
from braggscope.core.errors import InputError, SourceMissingError, UserError
from braggscope.core.setup import ScanSetup
from braggscope.core.stacks import MapStack

ENERGY_KEV, DISTANCE_M, PIXEL_M, CCH, DELTA = 8.0, 0.5, 55e-6, (8.0, 8.0), 20.0


def map_frames(n_eta=4, ny=3, nx=4, shape=(16, 16), seed=0, dtype=np.uint32):
    """Poisson frames with a Bragg-like spot that moves with eta (raw counts)."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    out = np.empty((n_eta, ny, nx) + shape)
    for i in range(n_eta):
        spot = 400.0 * np.exp(-((rr - 6 - i) ** 2 + (cc - 8) ** 2) / 4.0)
        out[i] = rng.poisson(2.0 + spot, size=(ny, nx) + shape)
    return out.astype(dtype)


def _source(folder, name, data, key="entry_0000/measurement/data"):
    """A detector file holding ``data`` at ``key``; returns its path."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as d:
        d.create_dataset(key, data=data)
    return path


def _link(group, name, data, master, source_name, link):
    """``group[name]`` = ``data`` inline, as a virtual dataset or as an external link to a new file."""
    if link == "inline":
        group.create_dataset(name, data=data)
        return None
    src = _source(Path(master).parent, source_name, data)
    rel = os.path.relpath(src, Path(master).parent)
    if link == "vds":
        layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
        layout[:] = h5py.VirtualSource(rel, "entry_0000/measurement/data", shape=data.shape)
        group.create_virtual_dataset(name, layout, fillvalue=0)
    else:
        group[name] = h5py.ExternalLink(rel, "entry_0000/measurement/data")
    return src


def write_bliss_map(path, frames, *, link="vds"):
    """ID01 BLISS SXDM layout (one scan per eta); returns the detector files written."""
    n_eta, ny, nx = frames.shape[:3]
    yy, xx = np.mgrid[:ny, :nx] * 0.5
    sources = []
    with h5py.File(path, "w") as f:
        for i in range(n_eta):
            scan = f.create_group(f"{i + 1}.1")
            inst = scan.create_group("instrument")
            det = inst.create_group("mpx1x4")
            sources.append(_link(det, "image", frames[i].reshape(ny * nx, *frames.shape[-2:]), path,
                                 f"scan{i + 1:04d}/mpx1x4_0000.h5", link))
            det["beam_center_x"], det["beam_center_y"] = CCH[1], CCH[0]
            det["distance"], det["x_pixel_size"], det["y_pixel_size"] = DISTANCE_M, PIXEL_M, PIXEL_M
            inst["pix/value"], inst["piy/value"] = xx.ravel(), yy.ravel()
            pos = inst.create_group("positioners")
            pos["eta"], pos["delta"], pos["nu"], pos["phi"], pos["nrj"] = 10.0 + 0.05 * i, DELTA, 0.0, 0.0, ENERGY_KEV
            scan["technique/dim0"], scan["technique/dim1"] = nx, ny
    return sources


def write_xsocs_master(path, frames, *, link="external"):
    """XSOCS master: one entry per eta, as an external link to its own file, or frames as a VDS."""
    n_eta, ny, nx = frames.shape[:3]
    yy, xx = np.mgrid[:ny, :nx] * 0.5
    cpd = DISTANCE_M * np.tan(np.radians(1.0)) / PIXEL_M
    sources = []
    with h5py.File(path, "w") as master:
        for i in range(n_eta):
            name = f"sample_{i:03d}"
            target = Path(path).parent / f"{name}.h5"
            f = h5py.File(target, "w") if link == "external" else master
            e = f.create_group(name)
            data = frames[i].reshape(ny * nx, *frames.shape[-2:])
            if link == "external":
                e["measurement/image/data"] = data
                sources.append(target)
            else:
                sources.append(_link(e.require_group("measurement/image"), "data", data, path,
                                     f"det/{name}_data.h5", link))
            e["measurement/adcY"], e["measurement/adcX"] = xx.ravel(), yy.ravel()
            p = e.create_group("instrument/positioners")
            p["eta"], p["del"], p["nu"], p["phi"] = 10.0 + 0.05 * i, DELTA, 0.0, 0.0
            d = e.create_group("instrument/detector")
            d["beam_energy"] = ENERGY_KEV * 1000.0
            d["center_chan_dim0"], d["center_chan_dim1"] = CCH
            d["chan_per_deg_dim0"] = d["chan_per_deg_dim1"] = cpd
            if link == "external":
                f.close()
                master[name] = h5py.ExternalLink(target.name, name)
    return sources


def write_bliss_rocking(path, frames, *, link="vds"):
    """ID01 BLISS rocking scan (one scan, eta per frame); returns the detector file written."""
    with h5py.File(path, "w") as f:
        inst = f.create_group("1.1/instrument")
        det = inst.create_group("mpx1x4")
        src = _link(det, "image", frames, path, "scan0001/mpx1x4_0000.h5", link)
        det["beam_center_x"], det["beam_center_y"] = CCH[1], CCH[0]
        det["distance"], det["x_pixel_size"], det["y_pixel_size"] = DISTANCE_M, PIXEL_M, PIXEL_M
        inst["eta/value"] = 10.0 + 0.01 * np.arange(len(frames))
        pos = inst.create_group("positioners")
        pos["delta"], pos["nu"], pos["phi"], pos["nrj"] = DELTA, 0.0, 0.0, ENERGY_KEV
    return src


READERS = {
    "bliss": (write_bliss_map, read_bliss, lambda: map_frames()),
    "xsocs": (write_xsocs_master, read_xsocs, lambda: map_frames()),
    "rocking": (write_bliss_rocking, read_bliss_rocking, lambda: map_frames()[:, 0, 0]),
}


def _write(tmp_path, reader, link):
    write, read, frames = READERS[reader]
    path = tmp_path / "master.h5"
    sources = write(path, frames(), link=link)
    src = sources if isinstance(sources, Path) or sources is None else sources[-1]
    return path, read, None if src is None else Path(src)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("link", ["vds", "external"])
def test_reader_names_a_missing_source(tmp_path, reader, link):
    path, read, src = _write(tmp_path, reader, link)
    read(path)  # complete: reads
    src.unlink()
    with pytest.raises(SourceMissingError, match=src.name) as err:
        read(path)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)


def test_h5py_alone_reads_a_missing_vds_source_as_zeros(tmp_path):
    """The hazard the checks exist for (if h5py ever raises here, the check is still right)."""
    path, read, src = _write(tmp_path, "rocking", "vds")
    src.unlink()
    with h5py.File(path, "r") as f:
        assert not f["1.1/instrument/mpx1x4/image"][()].any()


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("link", ["vds", "external"])
def test_reader_names_a_truncated_source(tmp_path, reader, link):
    path, read, src = _write(tmp_path, reader, link)
    raw = src.read_bytes()
    src.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=f"{src.name}.*truncated") as err:
        read(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("reader", ["bliss", "rocking"])
def test_vds_source_with_fewer_frames_than_mapped(tmp_path, reader):
    path, read, src = _write(tmp_path, reader, "vds")
    with h5py.File(src, "a") as d:
        data = d["entry_0000/measurement/data"][()]
        del d["entry_0000/measurement/data"]
        d["entry_0000/measurement/data"] = data[:-2]  # the acquisition stopped two frames early
    with pytest.raises(InputError, match=f"{src.name}.*holds {len(data) - 2} frames.*maps {len(data)}"):
        read(path)


def test_vds_source_without_its_dataset(tmp_path):
    path, read, src = _write(tmp_path, "bliss", "vds")
    with h5py.File(src, "a") as d:
        del d["entry_0000/measurement/data"]
    with pytest.raises(InputError, match=f"{src.name}: no dataset entry_0000/measurement/data"):
        read_stack(path)


def test_not_hdf5_and_truncated_master(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not a detector file\n")
    with pytest.raises(InputError, match="notes.h5: not an HDF5 file"):
        read_stack(text)
    path, _, _ = _write(tmp_path, "bliss", "inline")
    raw = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(raw[: len(raw) // 3])
    for read in (read_stack, read_bliss_rocking):
        with pytest.raises(InputError, match="cut.h5: truncated"):
            read(cut)


def test_complete_files_read_the_same_through_every_link(tmp_path):
    ref = map_frames()
    for link in ("inline", "vds", "external"):
        d = tmp_path / link
        d.mkdir()
        write_bliss_map(d / "m.h5", ref, link=link)
        stack = read_bliss(d / "m.h5")
        np.testing.assert_array_equal(np.asarray(stack.frames), ref)
        assert stack.setup.cch == CCH and stack.setup.detector_shape == ref.shape[-2:]


# -- catalog runs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def catalog_run(tmp_path_factory):
    """A 2 x 3 x 2 sxdm_map in an embedded catalog, frames in an in-process detector's HDF5 file."""
    pytest.importorskip("tiled")
    from bluesky import RunEngine

    from braggscope import storage
    from braggscope.core.config import load_config, save_config
    from braggscope.core.setup import ScanSetup
    from braggscope.plans import sxdm_map
    from braggscope.simulators.inprocess import HDF5ImageDetector, LimitedSynAxis

    root = tmp_path_factory.mktemp("catalog_sources")
    cfg = load_config()
    cfg.set("storage.data_dir", str(root / "data"))
    cfg.set("detector.read_path", str(root / "detector"))
    client = storage.open_catalog(cfg)
    stack = map_frames(n_eta=2, ny=2, nx=3)
    pix, piy, eta = (LimitedSynAxis(name=n, limits=(-5, 120)) for n in ("pix", "piy", "eta"))

    def render():
        return stack[int(round((eta.position - 10.0) / 0.05)), int(round(piy.position / 0.5)),
                     int(round(pix.position / 0.5))]

    det = HDF5ImageDetector(render=render, write_dir=root / "detector", shape=(16, 16))
    setup = ScanSetup(ENERGY_KEV, DISTANCE_M, PIXEL_M, CCH, (16, 16), DELTA, detector=det.name)
    RE = RunEngine(call_returns_result=True)
    storage.subscribe_writer(RE, client)
    uid = RE(sxdm_map([det], pix, (0.0, 1.0, 3), piy, (0.0, 0.5, 2), eta, [10.0, 10.05], setup=setup)
             ).run_start_uids[0]
    save_config(cfg, root / "beamline.toml")
    return client, uid, root


def test_catalog_run_names_its_missing_detector_file(catalog_run, tmp_path):
    client, uid, root = catalog_run
    stack = read_catalog_run(client, uid, kind="sxdm")
    assert stack.frames.shape == (2, 2, 3, 16, 16) and stack.source == f"run {uid}"
    files = sorted((root / "detector").rglob("*.h5"))
    assert files
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    moved = [Path(os.replace(f, hidden / f.name) or hidden / f.name) for f in files]
    try:
        with pytest.raises(SourceMissingError, match=files[0].name):
            read_catalog_run(client, uid, kind="sxdm")
        with pytest.raises(InputError, match="no such run"):
            read_catalog_run(client, "9999", kind="sxdm")
    finally:
        for src, dst in zip(moved, files):
            os.replace(src, dst)


def test_reduce_map_refuses_bad_frames():
    setup = ScanSetup(ENERGY_KEV, DISTANCE_M, PIXEL_M, CCH, (16, 16), DELTA)

    def stack(frames):
        return MapStack(frames, [10.0, 10.05, 10.1, 10.15], setup, source="stack")

    frames = map_frames().astype(np.float32)
    from braggscope.core.errors import BadDataError

    with pytest.raises(BadDataError, match="every frame is zero"):
        reduce_map(stack(np.zeros_like(frames)), progress=False)
    bad = frames.copy()
    bad[2, 1, 3, 5, 7] = np.nan
    with pytest.raises(BadDataError, match=r"NaN or infinite.*\(2, 1, 3, 5, 7\)"):
        reduce_map(stack(bad), progress=False)
    with pytest.raises(BadDataError, match="complex"):
        reduce_map(stack(frames.astype(np.complex64)), progress=False)
    with pytest.raises(BadDataError, match="negative"):
        reduce_map(stack(frames - 5.0), progress=False)
