"""Finding the particle and its Bragg peak again at an operando checkpoint.

The cell moves both between checkpoints: the lattice changes with the lithium (the peak moves in eta
and delta), the electrode swells and drifts (the particle moves in x, y and z). At each checkpoint,
from where they are expected (:class:`~.operando_campaign.Tracker`):

* :func:`find_particle`: a line scan along x, then along y through the centre found, counting the
  fluorescence (or the ROI counter at the peak); the particle's centre is the midpoint of the profile's
  half-height crossings (stream ``particle``: the lines' points in the order taken; ``diffraction``
  for a re-centring on the peak); a coarse grid (``particle_grid``) only when both lines miss it;
* :func:`follow_peak`: a rocking scan of eta at the delta expected (stream ``rocking``, the detector's
  ROI counter; the centre is the centroid above half height) whose frames say where the peak sits on
  the detector, i.e. the delta that brings it to the ROI window's centre; only when the rocking scan
  finds nothing, the whole search :func:`find_peak`: a radial scan (eta and delta = 2 eta together:
  the peak moves there when d changes, stream ``radial``) then a rocking scan at that delta.

A profile whose maximum lies on its first or last point (for a particle: that is above half height
there), or that shows nothing above the noise, is scanned again around where it points, wider (at
most :data:`MAX_WIDENINGS` times): the result says whether the peak was inside the range scanned and
the particle inside the planned map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from bluesky.utils import Msg, short_uid

from braggscope.devices.fly_files import readable_path

from .stubs import read_point, step_point

__all__ = ["MAX_WIDENINGS", "Profile", "delta_for_row", "find_particle", "find_peak", "follow_peak", "grid_search",
           "line_scan", "peak_row", "profile_centre", "set_roi", "set_exposure"]

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


def profile_centre(positions, counts, *, method: str = "centroid") -> Profile:
    """The centre of ``counts`` above half their height over a background (the lower quartile).

    ``method="centroid"``: the centroid of the points above half height (a rocking curve: its
    sub-domains weigh in); ``"edges"``: the midpoint of the two half-height crossings, each interpolated
    between the points that straddle it (a particle's fluorescence: a plateau whose centroid, on a coarse
    line, moves with where the points fall on it). With ``"edges"`` the profile is ``at_edge`` when its
    first or last point is above half height (the particle may extend beyond).

    >>> round(profile_centre([0, 1, 2, 3, 4], [1, 1, 9, 5, 1]).centre, 3)
    2.333
    >>> round(profile_centre([0, 1, 2, 3, 4, 5, 6], [0, 0, 10, 10, 10, 0, 0], method="edges").centre, 3)
    3.0
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
    if method == "edges":
        return _edges_profile(x, signal, above, height)
    weights = np.where(above, signal, 0.0)
    centre = float(np.sum(weights * x) / np.sum(weights))
    width = float(np.ptp(x[above])) + float(np.median(np.abs(np.diff(x))))
    return Profile(centre, width, True, top in (0, x.size - 1), height)


def _edges_profile(x, signal, above, height) -> Profile:
    """:func:`profile_centre` by the half-height crossings (``above``: the points at or above half)."""
    half = 0.5 * height
    inside = np.flatnonzero(above)
    first, last = int(inside[0]), int(inside[-1])

    def crossing(i_out, i_in):
        s_out, s_in = signal[i_out], signal[i_in]
        f = (half - s_out) / (s_in - s_out) if s_in != s_out else 0.5
        return float(x[i_out] + f * (x[i_in] - x[i_out]))

    step = float(np.median(np.abs(np.diff(x))))
    left = crossing(first - 1, first) if first > 0 else float(x[first]) - 0.5 * step
    right = crossing(last + 1, last) if last < x.size - 1 else float(x[last]) + 0.5 * step
    at_edge = first == 0 or last == x.size - 1
    return Profile(0.5 * (left + right), abs(right - left), True, at_edge, height)


def line_scan(counters, motors_positions: dict, field: str, *, stream: str, every_motor: bool = False,
              keep: list | None = None):
    """Step through ``motors_positions`` (motor -> positions, moved together), an event of ``stream`` each
    (inside the caller's run); returns ``(positions of the first motor, values of field)`` (empty lists in
    a dry run); with ``every_motor`` the positions are tuples, one value per motor in order. ``keep``: a
    list that receives the points' whole readings (with the positions and values returned)."""
    motors = list(motors_positions)
    readings, pos_cache = [], {}

    def take_reading(devices):
        return read_point(devices, name=stream)

    for values in zip(*(motors_positions[m] for m in motors)):
        # the motors read in one order whichever moves (the x and y lines share a stream: its fields' order)
        step = dict(sorted(((motor, float(v)) for motor, v in zip(motors, values)), key=lambda mv: mv[0].name))
        readings.append((yield from step_point(list(counters), step, pos_cache, take_reading=take_reading)))
    names, values = [m.name for m in motors], []
    positions = []
    for reading in readings:
        if reading and field in reading and all(name in reading for name in names):
            where = tuple(float(reading[name]["value"]) for name in names)
            positions.append(where if every_motor else where[0])
            values.append(float(reading[field]["value"]))
            if keep is not None:
                keep.append(reading)
    return positions, values


def _widened(half: float, num: int, profile: Profile | None, centre: float) -> tuple[float, float]:
    """Where and how wide to scan again: around the edge the maximum sat on, or twice as wide."""
    if profile is not None and profile.found and profile.at_edge:
        return profile.centre, half * 1.5
    return centre, half * 2.0


def scan_profile(detectors, motor_lines, field: str, centre: float, half: float, num: int, *, stream: str,
                 widen_unfound: bool = True, method: str = "centroid", keep: list | None = None):
    """Scan around ``centre`` (+-``half``, ``num`` points), again wider while the profile is off its range
    (its maximum on an end; or nothing found, unless ``widen_unfound`` is False: the caller searches
    otherwise).

    ``motor_lines(centre, half, num)`` gives the ``{motor: positions}`` of one scan; ``method`` is
    :func:`profile_centre`'s; ``keep`` receives the readings of the last scan. Returns the
    :class:`Profile` and the number of scans.
    """
    profile = None
    for attempt in range(MAX_WIDENINGS + 1):
        if keep is not None:
            keep.clear()
        positions, values = yield from line_scan(detectors, motor_lines(centre, half, num), field, stream=stream,
                                                 keep=keep)
        if not positions:  # a dry run: nothing was read
            return Profile(centre, 0.0, True, False), attempt + 1
        profile = profile_centre(positions, values, method=method)
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
                                                stream=prefix, widen_unfound=False, method="edges")
        x = x_profile.centre if x_profile.found else x0
        y_profile, ny = yield from scan_profile(detectors, along(y_motor, x_motor, x), field, y0, half, num,
                                                stream=prefix, widen_unfound=False, method="edges")
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


def follow_peak(detector, eta_motor, delta_motor, field: str, guess: dict, campaign):
    """The Bragg peak's eta and delta (deg) where it is expected: a rocking scan at the predicted delta, the
    peak's place on the detector read from that scan's frames; the whole search (:func:`find_peak`)
    only when the rocking scan finds nothing.

    The area detector measures the scattering angle itself: the centroid of the frames across the
    rocking peak gives the row the peak sits on, and delta moves by the angle between that row and the
    ROI window's centre row (:func:`delta_for_row`); when that is more than a quarter of the window's
    height the rocking scan is taken again at the new delta (the window had cut the peak). Without a
    window (``campaign.roi`` None) delta follows the rocking centre radially (2 x its move). Returns
    :func:`find_peak`'s dict with ``search``: ``"rocking"`` or ``"radial"`` (the whole search).
    """
    eta0, delta = guess["eta"], guess["delta"]
    scans = 0
    for _ in range(2):
        kept: list = []

        def rocking(c, h, n, delta=delta):
            return {eta_motor: np.linspace(c - h, c + h, n), delta_motor: np.full(n, delta)}

        profile, n = yield from scan_profile([detector], rocking, field, eta0, campaign.rocking_half_deg,
                                             campaign.rocking_points, stream="rocking", widen_unfound=False,
                                             keep=kept)
        scans += n
        if not profile.found:
            peak = yield from find_peak([detector], eta_motor, delta_motor, field, guess, campaign)
            return dict(peak, scans=peak["scans"] + scans, search="radial")
        eta0 = profile.centre
        if not kept:  # a dry run
            break
        if campaign.roi is None:
            new_delta = guess["delta"] + 2.0 * (profile.centre - guess["eta"])
        else:
            new_delta = yield from _delta_from_frames(detector, kept, field, delta, campaign.roi)
        moved, delta = abs(new_delta - delta), new_delta
        if moved <= _roi_height_deg(detector, campaign.roi) / 4:
            break
    return {"eta": float(eta0), "delta": float(delta), "found": True, "in_range": bool(not profile.at_edge),
            "scans": scans, "search": "rocking"}


def _geometry(detector) -> tuple[float, float, float]:
    """The detector's distance (m), pixel size (m, rows) and direct-beam row, from its configuration."""
    return (float(detector.distance_m.get()), float(np.atleast_1d(detector.pixel_m.get())[0]),
            float(np.atleast_1d(detector.cch.get())[0]))


def _roi_height_deg(detector, roi) -> float:
    """The ROI window's height as an angle (deg); infinite without a window."""
    if roi is None:
        return float("inf")
    distance, pixel, _ = _geometry(detector)
    return float(np.degrees(np.arctan((roi[1] - roi[0]) * pixel / distance)))


def _delta_from_frames(detector, readings, field, delta, roi):
    """The delta that puts the rocking scan's peak on the ROI window's centre row (see :func:`follow_peak`):
    the frames of the points above half the rocking peak, summed over the window's columns and three times
    its rows (a peak that moved out of the window is still seen)."""
    file_name = detector.hdf5.full_file_name
    if not file_name.connected:  # lazily connected (a fly scanner connects it; a step campaign may not)
        file_name.wait_for_connection(timeout=10.0)
    reading = yield Msg("read", file_name)
    if not reading:
        return float(delta)
    path = readable_path(detector, reading[file_name.name]["value"])
    counts = np.array([float(r[field]["value"]) for r in readings])
    indices = [int(r[f"{detector.name}_num_captured"]["value"]) - 1 for r in readings]  # the frames in the file
    signal = counts - np.percentile(counts, 25)
    chosen = [i for i, s in zip(indices, signal) if s >= 0.5 * signal.max()]
    r0, r1, c0, c1 = roi
    w0, w1 = max(r0 - (r1 - r0), 0), min(r1 + (r1 - r0), int(detector.frame_shape.get()[0]))
    from braggscope.analysis.live.frames import read_hdf5_rows  # the tracking's frames, from the open file

    first = min(chosen)
    frames = read_hdf5_rows(path, "/entry/data/data", first, max(chosen) + 1)  # one read: the peak's frames in a row
    row = peak_row(frames[[i - first for i in chosen], w0:w1, c0:c1].astype(float).sum(axis=0)) + w0
    distance, pixel, cch = _geometry(detector)
    if not (np.isfinite(row) and np.isfinite(cch)):
        return float(delta)
    return delta_for_row(delta, row, 0.5 * (r0 + r1), cch_row=cch, distance_m=distance, pixel_m=pixel)


def peak_row(image) -> float:
    """The row (fractional, in ``image``) of a diffraction peak: the centroid along rows of the pixels
    above half the peak's height over the image's median (NaN when nothing stands out)."""
    image = np.asarray(image, dtype=float)
    signal = image - float(np.median(image))
    top = float(signal.max(initial=0.0))
    if not top > 0:
        return float("nan")
    weights = np.where(signal >= 0.5 * top, signal, 0.0).sum(axis=1)
    return float(np.sum(weights * np.arange(image.shape[0])) / np.sum(weights))


def delta_for_row(delta: float, row: float, target_row: float, *, cch_row: float, distance_m: float,
                  pixel_m: float) -> float:
    """The detector angle (deg) that moves a peak seen on ``row`` with the detector at ``delta`` to
    ``target_row``: rows run down (-z) from the direct-beam pixel ``cch_row`` at ``distance_m``, so a
    pixel's elevation is ``delta - atan((row - cch_row) * pixel_m / distance_m)`` (nu = 0).

    >>> round(delta_for_row(18.0, 64.0, 64.0, cch_row=64.0, distance_m=0.5, pixel_m=55e-6), 6)
    18.0
    >>> round(delta_for_row(18.0, 54.0, 64.0, cch_row=64.0, distance_m=0.5, pixel_m=55e-6), 4)  # peak above
    18.063
    """
    angle = lambda r: np.degrees(np.arctan((r - cch_row) * pixel_m / distance_m))  # noqa: E731
    return float(delta - angle(row) + angle(target_row))


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
