"""What the eccentricity calibration reads from its coarse maps.

Where the crystal is in each map (:func:`crystal_position`, or by chained
registration of the maps), whether the crystal is mosaic
(:func:`mosaic_fraction`), whether the signal depends on the Bragg condition
(:func:`signal_kind`) and whether the maps' totals change with eta
(:func:`map_total_variation`). Pure numpy on the maps; the plan that takes them
is :func:`braggscope.plans.calibrate.calibrate_eccentricity`.
"""

from __future__ import annotations

import numpy as np

from braggscope.core.errors import ArgumentError, BadDataError

from .sxdm import sxdm_points

__all__ = ["crystal_position", "locate_crystal", "map_total_variation", "mosaic_fraction", "signal_kind"]


def locate_crystal(maps, x_range, y_range, etas, start_model, *, threshold, need, locate):
    """Angles (indices) where the crystal is seen and its positions (um) there."""
    n_eta = len(etas)
    _, y_pts, x_pts = sxdm_points(x_range, y_range, etas, eccentricity=start_model, snake=False)
    x_pts, y_pts = x_pts.reshape(maps.shape), y_pts.reshape(maps.shape)
    found, xs, ys, first_error = [], [], [], None
    for i in range(n_eta):
        try:
            x, y = crystal_position(maps[i], x_pts[i], y_pts[i], threshold=threshold)
        except BadDataError as exc:  # no signal at this angle (rocking-curve tail)
            first_error = first_error or exc
            continue
        found.append(i)
        xs.append(x)
        ys.append(y)
    if len(found) < need:
        raise BadDataError(f"crystal located at {len(found)} of {n_eta} angles (need {need}): {first_error}")
    found, xs, ys = np.asarray(found), np.asarray(xs), np.asarray(ys)
    if locate == "register":
        offsets = np.stack([x_pts[found, 0, 0] - x_range[0], y_pts[found, 0, 0] - y_range[0]], axis=1)
        xs, ys = _registered_positions(maps[found], x_range, y_range, xs, ys, offsets)
    return found, xs, ys


def crystal_position(intensity, x_um, y_um, *, threshold=0.2, significance=5.0) -> tuple[float, float]:
    """Centre of mass (um) of one map's background-subtracted intensity.

    The background is the map's median (the crystal covers a minority of a
    coarse map); values below ``threshold`` x the maximum are ignored. The
    peak must exceed ``significance`` x the background noise (the larger of
    the map's robust spread and Poisson noise on the median).

    The crystal should diffract as a whole at the angle (a compact crystal
    near its Bragg angle): in a mosaic or strained crystal different regions
    light up at different eta, which moves the centre of mass as well.

    Raises
    ------
    BadDataError
        When the map holds no signal above background (crystal not found).
    """
    intensity = np.asarray(intensity, dtype=float)
    background = np.median(intensity)
    w = intensity - background
    peak = w.max()
    # noise of the background: robust spread of the map, at least Poisson on the median
    noise = max(1.4826 * np.median(np.abs(w)), np.sqrt(max(background, 1.0)))
    if not peak > significance * noise:
        raise BadDataError(f"no intensity above background (peak {peak:.3g} < {significance} x noise {noise:.3g}): "
                           "the crystal is not inside the coarse map")
    w = np.where(w >= threshold * peak, w, 0.0)
    return float((w * x_um).sum() / w.sum()), float((w * y_um).sum() / w.sum())


def mosaic_fraction(maps, etas, *, threshold=0.2) -> float:
    """Share of the rocking-curve variance that comes from the map position.

    For each map pixel the rocking curve (background-subtracted intensity
    against eta) has a centroid and a width; by the law of total variance the
    variance of the whole crystal's rocking curve is the mean per-pixel
    variance plus the variance of the per-pixel centroids. This returns the
    second part's share, in [0, 1]: ~0 when the whole crystal diffracts
    together (a compact crystal: the located position is where the crystal
    is), near 1 when different regions diffract at different eta (a mosaic
    or bent crystal: the located position is where the diffracting region is,
    which moves across the crystal with eta).

    Parameters
    ----------
    maps : array_like, shape (n_eta, ny, nx)
        Integrated intensity per map pixel at each angle.
    etas : array_like, shape (n_eta,)
        Angles (deg).
    threshold : float
        Pixels whose eta-summed intensity is below ``threshold`` x the
        maximum are left out.

    Returns
    -------
    float
        NaN when fewer than 2 angles hold signal.
    """
    maps = np.asarray(maps, dtype=float)
    eta = np.asarray(etas, dtype=float)
    if maps.ndim != 3 or eta.shape != maps.shape[:1]:
        raise ArgumentError(f"maps must be (n_eta, ny, nx) with n_eta = len(etas), got {maps.shape} and {eta.shape}")
    w = np.clip(maps - np.median(maps, axis=(1, 2), keepdims=True), 0.0, None)
    if not w.max() > 0:
        return float("nan")
    w = np.where(w >= 0.05 * w.max(), w, 0.0)  # drop the background's noise
    total = w.sum(axis=0)
    keep = total >= threshold * total.max()
    w, total = w[:, keep], total[keep]
    if np.count_nonzero(w.sum(axis=1)) < 2:
        return float("nan")
    centre = (w * eta[:, None]).sum(axis=0) / total
    within = float((w * (eta[:, None] - centre) ** 2).sum())
    curve = w.sum(axis=1)
    mean = (curve * eta).sum() / curve.sum()
    overall = float((curve * (eta - mean) ** 2).sum())
    return float(np.clip(1.0 - within / overall, 0.0, 1.0)) if overall > 0 else 0.0


def signal_kind(detectors, field: str) -> str:
    """``"fluorescence"`` if the detector reading ``field`` is Bragg-independent, else ``"diffraction"``.

    A detector declares a signal that does not depend on the Bragg condition
    with the class attribute ``bragg_independent = True``
    (:class:`braggscope.devices.fluorescence.FluorescenceDetector`, the
    in-process :class:`braggscope.simulators.inprocess.CountingDetector`); its
    fields start with its name (``xrf_counts``).
    """
    for det in detectors:
        name = getattr(det, "name", "")
        if name and (field == name or field.startswith(name + "_")):
            return "fluorescence" if getattr(det, "bragg_independent", False) else "diffraction"
    return "diffraction"


def map_total_variation(maps) -> float:
    """Relative spread (std / mean) of the maps' background-subtracted totals.

    A Bragg-independent signal (fluorescence) of a particle inside every map
    gives the same total at every angle up to Poisson noise and the point
    sampling of its edges (< 0.1); a diffraction signal follows the rocking
    curve (order 1). The
    background is each map's median, as in :func:`crystal_position`.

    Parameters
    ----------
    maps : array_like, shape (n, ny, nx)

    Returns
    -------
    float
        NaN when the totals' mean is not positive.
    """
    maps = np.asarray(maps, dtype=float)
    if maps.ndim != 3 or maps.shape[0] < 1:
        raise ArgumentError(f"maps must be (n, ny, nx) with n >= 1, got shape {maps.shape}")
    totals = np.clip(maps - np.median(maps, axis=(1, 2), keepdims=True), 0.0, None).sum(axis=(1, 2))
    mean = totals.mean()
    return float(totals.std() / mean) if mean > 0 else float("nan")


def _registered_positions(maps, x_range, y_range, x_com, y_com, offsets):
    """Piezo positions (um) of the crystal by chained registration of the maps.

    ``x_com, y_com``: centres of mass (piezo frame) of each map, the strongest
    of which anchors the chain; ``offsets`` (n, 2): the (x, y) correction by
    which each map's raster was shifted.
    """
    # heavy (the SXDM package and its numba kernels): imported when a calibration registers
    from braggscope.analysis.sxdm.drift import register_drift

    step_x = (x_range[1] - x_range[0]) / (x_range[2] - 1)
    step_y = (y_range[1] - y_range[0]) / (y_range[2] - 1)
    shifts = register_drift(maps, upsample=20, reference="consecutive", normalization=None, min_signal=0.0)
    a = int(np.argmax((maps - np.median(maps, axis=(1, 2), keepdims=True)).max(axis=(1, 2))))
    # shifts are relative to map a; a map's content sits at -shift (pixels) from map a's
    x = x_com[a] - offsets[a, 0] - shifts[:, 1] * step_x + offsets[:, 0]
    y = y_com[a] - offsets[a, 1] - shifts[:, 0] * step_y + offsets[:, 1]
    return x, y
