"""Typed stacks (``core.stacks``) and the reduction options (``analysis.sxdm.options``) refuse what does not fit."""

from __future__ import annotations

import numpy as np
import pytest

from braggscope.analysis.sxdm.options import MapOptions
from braggscope.core.errors import InputError
from braggscope.core.setup import ScanSetup
from braggscope.core.stacks import MapStack, RockingStack

SETUP = ScanSetup(8.33, 0.5, 55e-6, (4, 5), (8, 10), 18.0, phi=[0.0, 0.1, 0.2])


def test_map_stack_shape_angles_and_axes():
    frames = np.zeros((3, 2, 4, 8, 10), np.uint16)
    stack = MapStack(frames, [9.0, 9.1, 9.2], SETUP, x=[0, 1, 2, 3], y=(0.5, 1.5), source="file m.h5")
    assert stack.shape == (3, 2, 4) and stack.n_eta == 3 and stack.eta.dtype == float
    delta, nu, phi = stack.angles()
    assert delta.tolist() == [18.0] * 3 and phi.tolist() == [0.0, 0.1, 0.2]
    with pytest.raises(InputError, match="file m.h5: 2 rocking angles for 3"):
        MapStack(frames, [9.0, 9.1], SETUP, source="file m.h5")
    with pytest.raises(InputError, match="3 x positions for 4 map pixels"):
        MapStack(frames, [9.0, 9.1, 9.2], SETUP, x=[0, 1, 2])
    with pytest.raises(InputError, match=r"\(n_eta, ny, nx, rows, cols\)"):
        MapStack(frames[0], [9.0, 9.1], SETUP)


def test_a_missing_setup_is_named_where_it_is_needed():
    stack = MapStack(np.zeros((1, 1, 1, 8, 10)), [9.0], None, source="run 3f2a",
                     metadata={"energy_kev": 8.33, "pixel_m": 55e-6, "cch": [4, 5], "delta": 18.0})
    with pytest.raises(InputError, match="run 3f2a: .*distance_m"):
        stack.require_setup()
    flat = MapStack(np.zeros((1, 1, 1, 8, 10)), [9.0], None, metadata={
        "energy_kev": 8.33, "distance_m": 0.5, "pixel_m": 55e-6, "cch": [4, 5], "delta": 18.0,
        "detector_shape": [8, 10]})
    assert flat.require_setup().distance_m == 0.5  # older runs' flat keys


def test_rocking_stack():
    stack = RockingStack(np.zeros((5, 8, 10)), np.linspace(20, 20.2, 5),
                         ScanSetup(8.33, 0.5, 55e-6, (4, 5), (8, 10), 18.0), d_spacing=2.04, size_m=800e-9)
    assert stack.n_eta == 5 and stack.d_spacing == 2.04
    with pytest.raises(InputError, match=r"\(n_eta, rows, cols\)"):
        RockingStack(np.zeros((5, 1, 8, 10)), np.arange(5.0), None)


@pytest.mark.parametrize("options, message", [
    ({"threshold": 1.0}, "threshold must be in"), ({"threshold": float("nan")}, "threshold must be finite"),
    ({"background": "flat"}, "background must be"), ({"background": -1}, "background must be >= 0"),
    ({"background": float("inf")}, "background must be finite"), ({"median": 0}, "median must be"),
    ({"median": 1.5}, "median must be"), ({"fit": "lorentz"}, "fit must be"), ({"noise_sigma": -1}, "noise_sigma"),
    ({"roi": ((1, 0), None, None)}, "roi must be three increasing"), ({"detector_roi": (5, 2, 0, 4)}, "detector_roi"),
])
def test_map_options_name_the_wrong_one(options, message):
    with pytest.raises(ValueError, match=message):
        MapOptions(**options)


def test_map_options_window_and_attrs():
    opts = MapOptions(background=2, median=1, detector_roi=(1, 5, 2, 8))
    assert opts.background == 2.0 and opts.window(8, 10) == (1, 5, 2, 8)
    assert MapOptions().window(8, 10) == (0, 8, 0, 10)
    with pytest.raises(ValueError, match="outside the 4x10 detector"):
        opts.window(4, 10)
    assert MapOptions().attrs()["roi"] == "none" and opts.attrs()["background"] == "2.0"
