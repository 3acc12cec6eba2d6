"""Fly-line geometry and timing (pure): pulse times and positions against hand-computed kinematics."""

from __future__ import annotations

import numpy as np
import pytest

from braggscope.core.fly_line import check_line, line_parameters
from braggscope.simulators.fly_timing import line_timing, quantise, stage_position, sweep


def test_forward_line_by_hand():
    # 10 points 0..9 um, 5 ms dwell -> 1 um / 5 ms = 200 um/s; exposure 4 ms centred on each point
    t = line_timing(0.0, 9.0, 10, 0.005, 0.004, accel_time_s=0.01, encoder_resolution_um=0.0)
    assert t.direction == 1 and t.velocity == pytest.approx(200.0)
    # pulse k at x_k - v * exposure / 2 = k - 0.4 um, reached at ramp end + k * dwell
    np.testing.assert_allclose(t.pulse_positions, np.arange(10) - 0.4)
    np.testing.assert_allclose(t.pulse_times, 0.01 + 0.005 * np.arange(10))
    np.testing.assert_allclose(t.captured, np.arange(10.0))
    # run-up: v * ta / 2 = 1 um before the first pulse; ramp down after one period past the last
    assert t.runup_start == pytest.approx(-1.4)
    assert t.runup_end == pytest.approx(-0.4 + 10 * 1.0 + 1.0)
    assert t.duration == pytest.approx(0.01 + 10 * 0.005 + 0.01)


def test_reverse_line_and_kinematics():
    t = line_timing(9.0, 0.0, 10, 0.005, 0.004, accel_time_s=0.01, encoder_resolution_um=0.0)
    assert t.direction == -1
    np.testing.assert_allclose(t.captured, np.arange(9.0, -1.0, -1.0), atol=1e-12)
    # the position curve: at rest at the start, on the pulse positions at the pulse times, at rest at the end
    assert stage_position(t, 0.0, 0.01) == pytest.approx(t.runup_start)
    for time_s, x in zip(t.pulse_times, t.pulse_positions):
        assert stage_position(t, time_s, 0.01) == pytest.approx(x)
    assert stage_position(t, t.duration, 0.01) == pytest.approx(t.runup_end)
    # half-way through the ramp: a quarter of the ramp distance (uniform acceleration)
    assert stage_position(t, 0.005, 0.01) == pytest.approx(t.runup_start - 0.25 * 1.0)


def test_encoder_quantisation_keeps_captures_on_the_grid():
    res = 0.003
    x = np.linspace(10.0, 10.7, 8)
    t = line_timing(10.0, 10.7, 8, 0.004, 0.0036, accel_time_s=0.002, encoder_resolution_um=res)
    # pulses fire on encoder ticks, at or just past their targets
    assert np.allclose(t.pulse_positions / res, np.round(t.pulse_positions / res))
    targets = 10.0 - t.velocity * 0.0036 / 2 + 0.1 * np.arange(8)
    assert np.all(t.pulse_positions >= targets - 1e-9) and np.all(t.pulse_positions < targets + res + 1e-9)
    assert np.max(np.abs(t.captured - x)) <= res + 1e-9
    # the pulse period jitters by less than one tick's time
    assert np.max(np.abs(np.diff(t.pulse_times) - 0.004)) < res / t.velocity + 1e-12


def test_pulses_outside_the_sweep_are_not_emitted():
    p = line_parameters(0.0, 1.0, 11, 0.01, 0.009)
    full = sweep(accel_time_s=0.0, encoder_resolution_um=0.0, **p)
    assert full.pulse_times.size == 11
    short = sweep(accel_time_s=0.0, encoder_resolution_um=0.0, **dict(p, stage_stop=0.5))
    assert short.pulse_times.size == 6


def test_quantise():
    np.testing.assert_allclose(quantise([0.0014, -0.0016], 0.001), [0.001, -0.002])
    np.testing.assert_allclose(quantise([0.123], 0.0), [0.123])


def test_check_line_refusals():
    v, exposure = check_line(0, 10, 101, 0.005, readout_s=3e-4, velocity_max_um_s=500)
    assert v == pytest.approx(20.0) and exposure == pytest.approx(0.0047)
    _, exposure = check_line(0, 10, 101, 0.005, readout_s=3e-4, velocity_max_um_s=500, encoder_resolution_um=0.001)
    assert exposure == pytest.approx(0.0047 - 2 * 0.001 / 20.0)
    with pytest.raises(ValueError, match="read-out"):
        check_line(0, 10, 101, 0.0002, readout_s=3e-4, velocity_max_um_s=500)
    with pytest.raises(ValueError, match="um/s"):
        check_line(0, 100, 3, 0.001, readout_s=3e-4, velocity_max_um_s=500)
    with pytest.raises(ValueError, match="num >= 2"):
        check_line(0, 10, 1, 0.005, readout_s=3e-4, velocity_max_um_s=500)
    with pytest.raises(ValueError, match="finite"):
        check_line(0, float("nan"), 10, 0.005, readout_s=3e-4, velocity_max_um_s=500)
    with pytest.raises(ValueError, match="start != stop"):
        check_line(5, 5, 10, 0.005, readout_s=3e-4, velocity_max_um_s=500)
