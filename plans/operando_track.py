"""Finding the particle and its Bragg peak again at an operando checkpoint.

The cell moves both between checkpoints: the lattice changes with the lithium (the peak moves in eta
and delta), the electrode swells and drifts (the particle moves in x, y and z). At each checkpoint,
from where they are expected (:class:`~.operando_campaign.Tracker`):

Every scan of a checkpoint's tracking is a stream of one run (``particle_x``, ``particle_y``, ``radial``,
``rocking``; ``diffraction_x``/``_y`` for a re-centring on the peak):

* :func:`find_particle`: a line scan along x, then along y through the centre found, counting the
  fluorescence (or the ROI counter at the peak); the particle's centre is the centroid of the profile
  above half its height;
* :func:`find_peak`: a radial scan (eta and delta = 2 eta together: the peak moves there when d changes)
  then a rocking scan of eta at that delta, with the detector's ROI counter; each centre is the
  centroid above half height.

A profile whose maximum lies on its first or last point, or that shows nothing above the noise, is
scanned again around where it points, wider (at most :data:`MAX_WIDENINGS` times): the result says
whether the peak was inside the range scanned and the particle inside the planned map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from bluesky.utils import Msg, short_uid

from .stubs import read_point, step_point

__all__ = ["MAX_WIDENINGS", "Profile", "find_particle", "find_peak", "grid_search", "line_scan", "profile_centre",
           "set_roi", "set_exposure"]

#: Scans of a profile again, each wider, when its maximum sits on an end or nothing stands out.
MAX_WIDENINGS = 2


@dataclass(frozen=True)
class Profile:
    """The centre of a scanned profile and what it says.

    ``centre`` (the positions' unit), ``width`` (full width above half height), ``found`` (a maximum
    above the noise: 5 standard deviations of Poisson counts over the profile's lower quartile),
    ``at_edge`` (the maximum on the first or last point: the peak may lie beyond).
    """

    centre: float
    width: float
    found: bool
    at_edge: bool
    height: float = 0.0


def profile_centre(positions, counts) -> Profile:
    """The centroid of ``counts`` above half their height over a background (the lower quartile).

    >>> round(profile_centre([0, 1, 2, 3, 4], [1, 1, 9, 5, 1]).centre, 3)
    2.333
    """
    x = np.asarray(positions, dtype=float)
    c = np.asarray(counts, dtype=float)
    ok = np.isfinite(x) & np.isfinite(c)
    x, c = x[ok], c[ok]
    if x.size < 3:
        return Profile(float(np.mean(x)) if x.size else float("nan"), 0.0, False, False)
    background = float(np.percentile(c, 25))
    signal = c - background
    top = int(np.argmax(signal))
    height = float(signal[top])
    found = height > 5.0 * np.sqrt(max(background, 1.0))
    if not found:
        return Profile(float(np.mean(x)), 0.0, False, False, height)
    above = signal >= 0.5 * height
    weights = np.where(above, signal, 0.0)
    centre = float(np.sum(weights * x) / np.sum(weights))
    width = float(np.ptp(x[above])) + float(np.median(np.abs(np.diff(x))))
    return Profile(centre, width, True, top in (0, x.size - 1), height)


def line_scan(counters, motors_positions: dict, field: str, *, stream: str, every_motor: bool = False):
    """Step through ``motors_positions`` (motor -> positions, moved together), an event of ``stream`` each
    (inside the caller's run); returns ``(positions of the first motor, values of field)`` (empty lists in
    a dry run); with ``every_motor`` the positions are tuples, one value per motor in order."""
    motors = list(motors_positions)
    readings, pos_cache = [], {}

    def take_reading(devices):
        return read_point(devices, name=stream)

    for values in zip(*(motors_positions[m] for m in motors)):
        step = {motor: float(v) for motor, v in zip(motors, values)}
        readings.append((yield from step_point(list(counters), step, pos_cache, take_reading=take_reading)))
    names, values = [m.name for m in motors], []
    positions = []
    for reading in readings:
        if reading and field in reading and all(name in reading for name in names):
            where = tuple(float(reading[name]["value"]) for name in names)
            positions.append(where if every_motor else where[0])
            values.append(float(reading[field]["value"]))
    return positions, values


def _widened(half: float, num: int, profile: Profile | None, centre: float) -> tuple[float, float]:
    """Where and how wide to scan again: around the edge the maximum sat on, or twice as wide."""
    if profile is not None and profile.found and profile.at_edge:
        return profile.centre, half * 1.5
    return centre, half * 2.0


def scan_profile(detectors, motor_lines, field: str, centre: float, half: float, num: int, *, stream: str,
                 widen_unfound: bool = True):
    """Scan around ``centre`` (+-``half``, ``num`` points), again wider while the profile is off its range
    (its maximum on an end; or nothing found, unless ``widen_unfound`` is False: the caller searches
    otherwise).

    ``motor_lines(centre, half, num)`` gives the ``{motor: positions}`` of one scan. Returns the
    :class:`Profile` and the number of scans.
    """
    profile = None
    for attempt in range(MAX_WIDENINGS + 1):
        positions, values = yield from line_scan(detectors, motor_lines(centre, half, num), field, stream=stream)
        if not positions:  # a dry run: nothing was read
            return Profile(centre, 0.0, True, False), attempt + 1
        profile = profile_centre(positions, values)
        if (profile.found and not profile.at_edge) or (not profile.found and not widen_unfound):
            return profile, attempt + 1
        centre, half = _widened(half, num, profile, centre)
    return profile, MAX_WIDENINGS + 1


def find_particle(detectors, x_motor, y_motor, field: str, guess: tuple, half: float, num: int, *,
                  prefix: str = "particle"):
    """The particle's centre (x, y, um, at the angles the motors are at) by two line scans; returns a dict
    ``x``, ``y``, ``width_x``, ``width_y``, ``found``, ``scans``.

    Two crossed lines miss a particle smaller than its drift since the last checkpoint (the x line runs
    beside it): when they find nothing, a coarse grid (stream ``<prefix>_grid``, :func:`grid_search`) over
    twice the lines' reach finds the brightest spot, and the lines are scanned again through it.
    """

    def along(motor, fixed_motor, fixed):
        return lambda c, h, n: {motor: np.linspace(c - h, c + h, n), fixed_motor: np.full(n, fixed)}

    def cross(x0, y0):
        x_profile, nx = yield from scan_profile(detectors, along(x_motor, y_motor, y0), field, x0, half, num,
                                                stream=f"{prefix}_x", widen_unfound=False)
        x = x_profile.centre if x_profile.found else x0
        y_profile, ny = yield from scan_profile(detectors, along(y_motor, x_motor, x), field, y0, half, num,
                                                stream=f"{prefix}_y", widen_unfound=False)
        y = y_profile.centre if y_profile.found else y0
        return x, y, x_profile, y_profile, nx + ny

    x, y, x_profile, y_profile, scans = yield from cross(*guess)
    if not (x_profile.found and y_profile.found):
        spot = yield from grid_search(detectors, x_motor, y_motor, field, guess, 2.0 * half, stream=f"{prefix}_grid")
        scans += 1
        if spot is not None:
            x, y, x_profile, y_profile, more = yield from cross(*spot)
            scans += more
    return {"x": float(x), "y": float(y), "width_x": x_profile.width, "width_y": y_profile.width,
            "found": bool(x_profile.found and y_profile.found), "scans": scans}


def grid_search(detectors, x_motor, y_motor, field: str, centre: tuple, half: float, *, stream: str,
                num: int = 9):
    """A coarse ``num`` x ``num`` grid over +-``half`` (um) around ``centre`` (a serpentine of points);
    returns the (x, y) of the brightest point when it stands out of the noise (5 sigma of Poisson counts
    over the grid's median), else None (and in a dry run)."""
    xs = np.linspace(centre[0] - half, centre[0] + half, num)
    ys = np.linspace(centre[1] - half, centre[1] + half, num)
    px = np.concatenate([xs if k % 2 == 0 else xs[::-1] for k in range(num)])
    py = np.repeat(ys, num)
    positions, values = yield from line_scan(detectors, {y_motor: py, x_motor: px}, field, stream=stream,
                                             every_motor=True)
    if not values:
        return None
    counts = np.asarray(values, float)
    background = float(np.median(counts))
    top = int(np.argmax(counts))
    if counts[top] - background <= 5.0 * np.sqrt(max(background, 1.0)):
        return None
    return float(positions[top][1]), float(positions[top][0])


def find_peak(detectors, eta_motor, delta_motor, field: str, guess: dict, campaign):
    """The Bragg peak's eta and delta (deg) by a radial then a rocking scan; returns a dict ``eta``,
    ``delta``, ``found``, ``in_range`` (each maximum inside its final range), ``scans``."""
    eta0, delta0 = guess["eta"], guess["delta"]

    def radial(c, h, n):
        etas = np.linspace(c - h, c + h, n)
        return {eta_motor: etas, delta_motor: delta0 + 2.0 * (etas - eta0)}

    radial_profile, n1 = yield from scan_profile(detectors, radial, field, eta0, campaign.radial_half_deg,
                                                 campaign.radial_points, stream="radial")
    eta1 = radial_profile.centre if radial_profile.found else eta0
    delta1 = delta0 + 2.0 * (eta1 - eta0)

    def rocking(c, h, n):
        return {eta_motor: np.linspace(c - h, c + h, n), delta_motor: np.full(n, delta1)}

    rocking_profile, n2 = yield from scan_profile(detectors, rocking, field, eta1, campaign.rocking_half_deg,
                                                  campaign.rocking_points, stream="rocking")
    eta2 = rocking_profile.centre if rocking_profile.found else eta1
    return {"eta": float(eta2), "delta": float(delta1),
            "found": bool(radial_profile.found and rocking_profile.found),
            "in_range": bool(not radial_profile.at_edge and not rocking_profile.at_edge), "scans": n1 + n2}


def set_roi(detector, roi):
    """Put the ROI counter's window (rows ``row0:row1``, columns ``col0:col1``) and enable it."""
    r0, r1, c0, c1 = (int(v) for v in roi)
    group = short_uid("roi")
    puts = [(detector.roi1.min_x, c0), (detector.roi1.min_y, r0), (detector.roi1.size_x, c1 - c0),
            (detector.roi1.size_y, r1 - r0), (detector.roi1.enable_x, 1), (detector.roi1.enable_y, 1),
            (detector.roistat1.use, 1)]
    for device in (detector.roi1, detector.roistat1):
        if hasattr(device, "enable"):
            puts.append((device.enable, "Enable"))
    for signal, value in puts:
        yield Msg("set", signal, value, group=group)
    yield Msg("wait", None, group=group)


def set_exposure(detectors, exposure_s: float):
    """The same exposure (s) for every counting detector among ``detectors`` (cam or counter)."""
    group = short_uid("exposure")
    for det in detectors:
        cam = getattr(det, "cam", None)
        if cam is not None and hasattr(cam, "acquire_time"):
            yield Msg("set", cam.acquire_time, exposure_s, group=group)
            if hasattr(cam, "acquire_period"):
                yield Msg("set", cam.acquire_period, exposure_s, group=group)
        elif hasattr(det, "acquire_time"):
            yield Msg("set", det.acquire_time, exposure_s, group=group)
    yield Msg("wait", None, group=group)
