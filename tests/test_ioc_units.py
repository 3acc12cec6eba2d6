"""Pure pieces of the simulator IOCs, without a server: stats, specs, ports, renderer loading."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from scipy import ndimage

from braggscope.simulators.ioc_detector import frame_stats, load_renderer
from braggscope.simulators.ioc_motors import MOTOR_SPECS, BeamlineState, motor_groups
from braggscope.simulators.ioc_run import free_port


def test_frame_stats_against_scipy():
    rng = np.random.default_rng(1)
    frame = rng.poisson(3.0, size=(64, 80)).astype(np.uint32)
    frame[10, 70] = 500
    stats = frame_stats(frame)
    cy, cx = ndimage.center_of_mass(frame.astype(float))
    assert stats["total"] == pytest.approx(float(frame.sum(dtype=np.int64)))
    assert stats["centroid_x"] == pytest.approx(cx) and stats["centroid_y"] == pytest.approx(cy)
    assert stats["max"] == 500
    empty = frame_stats(np.zeros((4, 4), np.uint32))
    assert empty["total"] == 0 and np.isnan(empty["centroid_x"])


def test_motor_specs_cover_the_beamline():
    names = [s.name for s in MOTOR_SPECS]
    assert names == ["pix", "piy", "piz", "eta", "phi", "nu", "delta", "energy"]
    units = {s.name: s.egu for s in MOTOR_SPECS}
    assert units["pix"] == "um" and units["eta"] == "deg" and units["energy"] == "keV"


def test_motor_groups_overrides_and_errors():
    state = BeamlineState()
    groups = motor_groups("T:", state, limits={"pix": (10, 20)}, velocities={"eta": 1.5},
                          initial={"pix": 50.0})
    assert groups["pix"].prefix == "T:pix"
    assert groups["pix"].spec.limits == (10.0, 20.0)
    assert groups["pix"].spec.initial == 20.0          # clamped into the limits
    assert state.positions["pix"] == 20.0
    assert groups["eta"].spec.velocity == 1.5
    assert "T:pix.RBV" in groups["pix"].pvdb and "T:pix.DMOV" in groups["pix"].pvdb
    with pytest.raises(ValueError, match=r"limits\['pix'\]"):
        motor_groups("T:", BeamlineState(), limits={"pix": (5, 5)})
    with pytest.raises(ValueError, match="tick_s"):
        motor_groups("T:", BeamlineState(), tick_s=0)


def test_free_port_is_free_for_tcp_and_udp():
    port = free_port()
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))


def test_load_renderer_needs_module_and_function():
    with pytest.raises(ValueError, match="module:function"):
        load_renderer("no_colon_here")
    assert load_renderer("numpy:zeros") is np.zeros
