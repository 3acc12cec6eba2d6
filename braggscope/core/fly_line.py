"""Geometry of one fly-scan line: its velocity and exposure, and the stage and trigger-unit settings.

Pure arithmetic shared by the fly scanner (``braggscope.devices.fly``), which writes these settings,
and the simulated hardware (``braggscope.simulators.fly_timing``), which plays them. The fast axis
crosses the line at constant velocity; the position-compare unit fires pulse ``k`` at
``start + k * step``; placing the pulses half an exposure before each commanded point centres each
exposure on it (docs/fly.md, "Hardware model").
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_line", "line_parameters", "pulse_start"]


def pulse_start(x0_um: float, x1_um: float, num: int, dwell_s: float, exposure_s: float) -> float:
    """PCOMP start (um) that centres exposure 0 of ``exposure_s`` on ``x0_um``.

    The step is ``(x1 - x0) / (num - 1)`` (signed) and the velocity ``|step| / dwell_s``.
    """
    step = (x1_um - x0_um) / (num - 1) if num > 1 else 0.0
    velocity = step / dwell_s  # signed, um/s
    return x0_um - velocity * exposure_s / 2.0


def check_line(x0_um: float, x1_um: float, num: int, dwell_s: float, *, readout_s: float,
               velocity_max_um_s: float, encoder_resolution_um: float = 0.0) -> tuple[float, float]:
    """Velocity (um/s) and exposure (s) of a line, or ``ValueError`` naming what to change.

    The exposure is the dwell less the read-out dead time and less two encoder ticks' time (pulses
    fire on encoder ticks, so their period jitters by one tick: without the margin a pulse would
    arrive during read-out and its frame be dropped). Refuses: fewer than 2 points, a dwell not
    longer than the detector's read-out dead time, a velocity above the stage's limit, non-finite
    numbers.
    """
    values = {"x0": x0_um, "x1": x1_um, "dwell_s": dwell_s, "readout_s": readout_s,
              "velocity_max_um_s": velocity_max_um_s}
    for name, value in values.items():
        if not np.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if int(num) != num or num < 2:
        raise ValueError(f"a fly line needs num >= 2 points, got {num!r}")
    if x0_um == x1_um:
        raise ValueError(f"a fly line needs start != stop, got {x0_um} .. {x1_um}")
    if not dwell_s > readout_s:
        raise ValueError(f"dwell_s = {dwell_s:g} s must exceed the detector read-out dead time "
                         f"{readout_s:g} s: lengthen dwell_s")
    velocity = abs(x1_um - x0_um) / (num - 1) / dwell_s
    if velocity > velocity_max_um_s:
        raise ValueError(f"the line needs {velocity:.4g} um/s, above the fly stage's limit "
                         f"{velocity_max_um_s:g} um/s: lengthen dwell_s or use more points per um "
                         f"(dwell_s >= {abs(x1_um - x0_um) / (num - 1) / velocity_max_um_s:.3g} s)")
    exposure = dwell_s - readout_s - 2.0 * encoder_resolution_um / velocity
    if not exposure > 0:
        raise ValueError(f"dwell_s = {dwell_s:g} s leaves no exposure after the read-out ({readout_s:g} s) and "
                         f"the encoder jitter: lengthen dwell_s")
    return velocity, exposure


def line_parameters(x0_um: float, x1_um: float, num: int, dwell_s: float, exposure_s: float) -> dict:
    """Stage and trigger-unit settings of a line: ``stage_start``, ``stage_stop`` (um, the constant-velocity
    part), ``velocity`` (um/s), ``pcomp_start``, ``step`` (um, signed), ``pulses``, ``width`` (s, the gate).

    The stage cruises from the first pulse position to one period past the last one.
    """
    step = (x1_um - x0_um) / (num - 1)
    velocity = abs(step) / dwell_s
    start = pulse_start(x0_um, x1_um, num, dwell_s, exposure_s)
    return {"stage_start": start, "stage_stop": start + step * num, "velocity": velocity,
            "pcomp_start": start, "step": step, "pulses": int(num), "width": exposure_s}
