"""Timing of one fly-scan line: stage run-up, position-compare pulses, captured positions.

Pure physics and timing, no EPICS: the simulated fly IOC (:mod:`.ioc_fly`) plays
these numbers in real time, and the tests check them alone. The line's settings
(velocity, exposure, where the pulses start) are :mod:`braggscope.core.fly_line`'s,
shared with the fly scanner that writes them.

Model
-----
The fast axis sweeps a line at constant velocity ``v`` between two ramps of
duration ``accel_time_s`` (constant acceleration, so each ramp covers
``v * accel_time_s / 2``). The position-compare unit (PCOMP) emits pulse ``k``
when the encoder (quantised to ``encoder_resolution_um``) crosses
``start + k * step`` in the line's direction; each pulse starts one detector
exposure of ``exposure_s``. The capture unit (PCAP) records, for each pulse,
its time and the mean encoder position during the exposure (PandA's
"Mean" capture of the gate).

Placing the pulses at ``x_k - direction * v * exposure_s / 2`` centres each
exposure on the commanded point ``x_k``, so the captured positions match the
commanded grid to the encoder resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from braggscope.core.fly_line import line_parameters

__all__ = ["LineTiming", "line_timing", "quantise", "stage_position", "sweep"]


def quantise(position_um, resolution_um: float):
    """Encoder reading of a position: the nearest multiple of ``resolution_um`` (um)."""
    if resolution_um <= 0:
        return np.asarray(position_um, dtype=float)
    return np.round(np.asarray(position_um, dtype=float) / resolution_um) * resolution_um


@dataclass(frozen=True)
class LineTiming:
    """Everything that happens on one fly line (times from the start of motion, s; positions um).

    Attributes
    ----------
    direction : int
        +1 or -1.
    velocity : float
        Constant-velocity speed, um/s (positive).
    runup_start, runup_end : float
        Where the stage starts (before the ramp) and stops (after the ramp).
    pulse_positions : ndarray (num,)
        Encoder positions at which the pulses fire.
    pulse_times : ndarray (num,)
        Pulse times.
    captured : ndarray (num,)
        Mean encoder position during each exposure (PCAP), um.
    centres : ndarray (num,)
        True mean stage position during each exposure (where a frame is rendered), um.
    duration : float
        Motion time of the whole line, ramps included, s.
    """

    direction: int
    velocity: float
    runup_start: float
    runup_end: float
    pulse_positions: np.ndarray
    pulse_times: np.ndarray
    captured: np.ndarray
    centres: np.ndarray
    duration: float


def line_timing(x0_um: float, x1_um: float, num: int, dwell_s: float, exposure_s: float, *,
                accel_time_s: float, encoder_resolution_um: float) -> LineTiming:
    """Pulse times and positions of one line from ``x0_um`` to ``x1_um`` (either direction).

    Parameters
    ----------
    x0_um, x1_um : float
        First and last commanded point (exposure centres), um.
    num : int
        Points (pulses) on the line, >= 2.
    dwell_s : float
        Pulse period, s.
    exposure_s : float
        Detector exposure per pulse (``dwell_s`` minus the read-out dead time), s.
    accel_time_s : float
        Duration of each velocity ramp, s (>= 0).
    encoder_resolution_um : float
        Encoder step, um (0: continuous).
    """
    params = line_parameters(x0_um, x1_um, num, dwell_s, exposure_s)
    return sweep(accel_time_s=accel_time_s, encoder_resolution_um=encoder_resolution_um, **params)


def sweep(*, stage_start: float, stage_stop: float, velocity: float, accel_time_s: float, pcomp_start: float,
          step: float, pulses: int, width: float, encoder_resolution_um: float) -> LineTiming:
    """What the hardware does for given settings (the simulated IOC plays this).

    The stage ramps up for ``accel_time_s`` to reach ``stage_start`` at ``velocity``,
    cruises to ``stage_stop`` and ramps down; pulse ``k`` fires when the encoder first
    reaches ``pcomp_start + k * step`` (direction of ``step``); PCAP captures the mean
    encoder position over each gate of ``width`` s. Pulses whose target lies outside
    the cruise are not emitted (the returned arrays are shorter).
    """
    direction = 1 if stage_stop >= stage_start else -1
    targets = pcomp_start + step * np.arange(int(pulses))
    res = encoder_resolution_um
    ticks = np.ceil(direction * targets / res - 1e-9) * res * direction if res > 0 else targets
    inside = direction * (ticks - stage_start) >= -1e-9
    inside &= direction * (ticks - stage_stop) <= 1e-9
    ticks = ticks[inside]
    ramp = velocity * accel_time_s / 2.0
    times = accel_time_s + direction * (ticks - stage_start) / velocity
    centres = ticks + direction * velocity * width / 2.0
    cruise = abs(stage_stop - stage_start) / velocity
    return LineTiming(direction=direction, velocity=float(velocity), runup_start=float(stage_start - direction * ramp),
                      runup_end=float(stage_stop + direction * ramp), pulse_positions=ticks, pulse_times=times,
                      captured=quantise(centres, res), centres=centres,
                      duration=float(2 * accel_time_s + cruise))


def stage_position(timing: LineTiming, t: float, accel_time_s: float) -> float:
    """Stage position (um) at time ``t`` (s) from the start of the line's motion."""
    d, v = timing.direction, timing.velocity
    if t <= 0:
        return timing.runup_start
    if t < accel_time_s:  # uniform acceleration from rest
        return timing.runup_start + d * 0.5 * v / accel_time_s * t * t
    cruise_end = timing.duration - accel_time_s
    start_cruise = timing.runup_start + d * v * accel_time_s / 2.0
    if t <= cruise_end:
        return start_cruise + d * v * (t - accel_time_s)
    if t >= timing.duration:
        return timing.runup_end
    tau = t - cruise_end
    at_cruise_end = start_cruise + d * v * (cruise_end - accel_time_s)
    return at_cruise_end + d * (v * tau - 0.5 * v / accel_time_s * tau * tau)
