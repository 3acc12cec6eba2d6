"""Exports others load: PyNX CDI input (.cxi) from a rocking scan, XSOCS master files from an SXDM map."""

import subprocess
import sys
from dataclasses import replace

import h5py
import numpy as np
import pytest

from braggscope.analysis.bcdi.preprocess import prepare
from braggscope.analysis.export import pynx_input_from_scan, write_pynx_input, write_xsocs
from braggscope.analysis.nexus import read_configuration
from braggscope.core.setup import ScanSetup
from braggscope.core.stacks import MapStack
from tests.test_bcdi_helpers import far_field, paper_meta, synthetic_crystal


@pytest.fixture(scope="module")
def rocking():
    rho, _, _ = synthetic_crystal(n=48, radius=8.0)
    frames = far_field(rho, seed=5).astype(np.uint32)
    return frames, paper_meta(*frames.shape)


def test_pynx_input_has_the_layout_pynx_reads_and_a_default_plot(tmp_path, rocking):
    from nexusformat.nexus import nxload
    from silx.io import open as silx_open
    from silx.io.nxdata import get_default

    frames, meta = rocking
    path = pynx_input_from_scan(tmp_path / "data.cxi", frames, meta, shape=(None, 32, 32))
    ref = prepare(frames, meta, shape=(None, 32, 32), background=None)
    with h5py.File(path) as f:
        det = f["entry_1/instrument_1/detector_1"]
        np.testing.assert_array_equal(det["data"][()], ref.intensity)  # what PyNX's CXI loader reads
        np.testing.assert_array_equal(f["entry_1/data_1/data"][()], ref.intensity)  # the CXI data_1 link
        np.testing.assert_array_equal(det["mask"][()] != 0, ref.mask)  # PyNX: non-zero = masked
        assert det["distance"][()] == pytest.approx(1.4) and det["distance"].attrs["units"] == "m"
        assert det["x_pixel_size"][()] == pytest.approx(55e-6)
        # CXI stores the photon energy in J: 13 keV = 13e3 * e
        assert f["entry_1/instrument_1/source_1/energy"][()] == pytest.approx(13e3 * 1.602176634e-19)
        cfg = f["entry_1/data_1/process_1/configuration"]
        np.testing.assert_allclose(cfg["eta"][()], ref.eta)
        # one writer for every process_1/configuration (analysis.nexus): the rule of braggscope's own CXI files
        back = read_configuration(cfg)
        assert back["cch"] == pytest.approx(list(ref.meta["cch"])) and back["delta"] == pytest.approx(ref.meta["delta"])
        assert f["entry_1/data_1/data_space"][()] == b"diffraction"
    with silx_open(str(path)) as h5:
        nx = get_default(h5)
        assert nx is not None and nx.is_valid and nx.signal.shape == ref.intensity.shape
    assert nxload(str(path)).plottable_data.nxpath == "/entry_1/data_1"
    with pytest.raises(ValueError, match="distance_m"):
        write_pynx_input(tmp_path / "x.cxi", ref.intensity, energy_kev=13, distance_m=0, pixel_m=55e-6)
    with pytest.raises(ValueError, match="mask shape"):
        write_pynx_input(tmp_path / "x.cxi", ref.intensity, energy_kev=13, distance_m=1, pixel_m=55e-6,
                         mask=np.zeros((2, 2, 2), bool))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.cxi"]


@pytest.fixture(scope="module")
def sxdm():
    pytest.importorskip("xrayutilities")
    from tests.test_sxdm_model import forward_stack

    t = forward_stack(ny=4, nx=5, n_eta=7, drift_px=0.0, seed=11)
    setup = ScanSetup(t.energy_kev, t.distance_m, t.pixel_m, t.cch, t.frames.shape[-2:], t.delta, t.nu)
    return t, MapStack(t.frames, t.eta, setup, x=t.x_um, y=t.y_um)


def test_xsocs_export_reads_back_in_xsocs_and_braggscope(tmp_path, sxdm):
    xsocs_h5 = pytest.importorskip("xsocs.io.XsocsH5")
    from braggscope.analysis.readers import read_xsocs

    t, stack = sxdm
    master = write_xsocs(tmp_path / "xs", stack)
    h5 = xsocs_h5.XsocsH5(str(master))
    entries = h5.entries()
    assert len(entries) == 7
    for i in (0, 3):
        e = entries[i]
        pos = h5.scan_positions(e)
        np.testing.assert_allclose(np.unique(pos.pos_0), t.x_um)  # fast axis pix
        np.testing.assert_allclose(np.unique(pos.pos_1), t.y_um)
        assert h5.positioner(e, "eta") == pytest.approx(t.eta[i])
        assert h5.positioner(e, "del") == pytest.approx(t.delta)
        assert h5.beam_energy(e) == pytest.approx(t.energy_kev * 1000)
        np.testing.assert_allclose(h5.direct_beam(e), t.cch)
        # chan_per_deg: pixels per degree of detector arc at the distance, D tan(1 deg) / pixel
        np.testing.assert_allclose(h5.chan_per_deg(e), [t.distance_m * np.tan(np.radians(1)) / t.pixel_m] * 2)
        with h5.image_dset_ctx(e) as dset:
            np.testing.assert_array_equal(dset[7], t.frames[i].reshape(-1, *t.frames.shape[3:])[7])
    back = read_xsocs(master)
    np.testing.assert_array_equal(np.asarray(back.frames), t.frames)
    assert back.setup.distance_m == pytest.approx(t.distance_m, rel=1e-9)
    assert back.setup.pixel_m == pytest.approx(t.pixel_m)
    with pytest.raises(ValueError, match="map axes x and y"):
        write_xsocs(tmp_path / "bad", replace(stack, x=None))
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


# XSOCS converts with a multiprocessing pool; forked from this test process (run engines, catalog writers and CA
# threads of earlier tests) the child can hang on a lock copied mid-use, so XSOCS runs in a fresh interpreter.
_XSOCS_Q = """
import sys
import numpy as np
from xsocs.process.fit.peak_fit import FitTypes, PeakFitter
from xsocs.process.qspace.QSpaceConverter import QSpaceConverter

master, qspace, out = sys.argv[1:]
conv = QSpaceConverter(master, qspace_dims=[24, 24, 24], output_f=qspace)
conv.n_proc = 1
conv.convert(overwrite=True)
if conv.status != conv.DONE:
    sys.exit(f"XSOCS conversion: {conv.status_msg}")
fit = PeakFitter(qspace, fit_type=FitTypes.CENTROID, n_proc=1).peak_fit()
np.save(out, np.linalg.norm(np.stack([fit.get_results(a, "COM") for a in range(3)], axis=-1), axis=-1))
"""


def test_xsocs_converts_the_export_to_q_space_like_braggscope(tmp_path, sxdm):
    """XSOCS's own Q-space conversion and centroid fit on the exported map agree with braggscope's |Q| map."""
    pytest.importorskip("xsocs")
    from braggscope.analysis.sxdm.reduce import reduce_stack
    from braggscope.core.geometry import Geometry

    t, stack = sxdm
    master = write_xsocs(tmp_path / "xs", stack)
    with h5py.File(master) as f:
        assert f[f"{next(iter(f))}/measurement/image/data"].dtype == np.int32  # uint32 counts: XSOCS refuses them
    out = tmp_path / "q_xsocs.npy"
    done = subprocess.run([sys.executable, "-c", _XSOCS_Q, str(master), str(tmp_path / "qspace.h5"), str(out)],
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    q_xsocs = np.load(out)
    g = Geometry(t.energy_kev, t.distance_m, t.pixel_m, t.cch)
    maps = reduce_stack(t.frames, t.eta, g, t.delta, t.nu, x=t.x_um, y=t.y_um, progress=False)
    m = maps.mask.values.ravel()
    assert m.sum() >= 5
    np.testing.assert_allclose(q_xsocs[m], maps.q_norm.values.ravel()[m], rtol=2e-3)
