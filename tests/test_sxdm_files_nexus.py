"""SXDM maps file: NeXus that silx and nexusformat plot as they open (root default, standard axes)."""

import h5py
import numpy as np
import pytest

pytest.importorskip("xrayutilities")

from braggscope import __version__
from braggscope.analysis.sxdm.files import load_maps, save_maps
from braggscope.analysis.sxdm.reduce import reduce_stack
from braggscope.core.geometry import Geometry
from tests.test_sxdm_model import forward_stack


@pytest.fixture(scope="module")
def maps():
    t = forward_stack(ny=4, nx=5, n_eta=7, drift_px=0.0, seed=31)
    g = Geometry(t.energy_kev, t.distance_m, t.pixel_m, t.cch)
    m = reduce_stack(t.frames, t.eta, g, t.delta, t.nu, x=t.x_um, y=t.y_um, progress=False)
    # a variable over a dimension without coordinate (like the registered drift) travels too
    return m.assign(drift_shift=(("eta", "axis"), np.arange(14.0).reshape(7, 2), {"units": "um"}))


def test_maps_file_has_a_default_plot_in_silx_and_nexusformat(tmp_path, maps):
    from nexusformat.nexus import nxload
    from silx.io import open as silx_open
    from silx.io.nxdata import NXdata, get_default

    path = save_maps(maps, tmp_path / "maps.h5")
    with h5py.File(path) as f:
        assert f.attrs["default"] == "entry" and f["entry"].attrs["default"] == "maps"
        g = f["entry/maps"]
        assert list(g.attrs["axes"]) == ["y", "x"] and g.attrs["y_indices"] == 0 and g.attrs["x_indices"] == 1
        assert g["x"].attrs["units"] == "um" and g["strain"].attrs["units"] == "microstrain"
        names = []
        f.visititems(lambda n, o: names.append(n) if "dims" in o.attrs else None)
        assert names == []  # no non-standard 'dims' attribute anywhere
        assert f["entry/eta_intensity"].attrs["axes"].tolist() == ["eta", "y", "x"]
        assert f["entry/eta_intensity/x"].id == g["x"].id  # one copy of each axis (hard link)
    with silx_open(str(path)) as h5:
        nx = get_default(h5)
        assert nx is not None and nx.is_valid and nx.signal.name == "/entry/maps/strain"
        assert [a.name for a in nx.axes] == ["/entry/maps/y", "/entry/maps/x"]
        assert "/entry/maps/intensity" in [s.name for s in nx.auxiliary_signals]
        assert NXdata(h5["entry/eta_intensity"]).is_valid and NXdata(h5["entry/drift_shift"]).is_valid
    root = nxload(str(path))
    plot = root.plottable_data
    assert plot.nxpath == "/entry/maps" and plot.nxsignal.nxname == "strain"
    # NXentry's program_name is a field, with the version as the standard names it
    program = root["entry/program_name"]
    assert program.nxvalue == "braggscope" and program.attrs["version"] == __version__
    assert "T" in root["entry/end_time"].nxvalue
    assert [a.nxname for a in plot.nxaxes] == ["y", "x"]
    np.testing.assert_array_equal(plot.nxsignal.nxvalue, maps.strain.values)


def test_maps_round_trip(tmp_path, maps):
    back = load_maps(save_maps(maps, tmp_path / "m.h5"))
    assert set(back.data_vars) == set(maps.data_vars)
    for name in maps.data_vars:
        assert back[name].dims == maps[name].dims, name
        np.testing.assert_array_equal(back[name].values, maps[name].values)
        assert back[name].attrs == maps[name].attrs, name
    assert back.mask.dtype == bool and "axis" not in back.coords
    np.testing.assert_array_equal(back.eta.values, maps.eta.values)
    assert back.attrs["q_bar"] == pytest.approx(maps.attrs["q_bar"]) and back.attrs["threshold"] == 0.2
