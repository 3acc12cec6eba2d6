"""Closed-loop eccentricity calibration: find the crystal at several eta, fit its drift.

The crystal is located in coarse maps of a scalar signal: the diffraction
detector's integrated intensity, or, for mosaic crystals, the particle's
X-ray fluorescence (``intensity_field="xrf_counts"``), which shows the whole
particle at any eta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from bluesky import preprocessors as bpp
from bluesky.utils import MsgGenerator

from braggscope.core.atomic import atomic_path
from braggscope.core.calibration import CalibrationResult, judge_calibration
from braggscope.core.config import save_config
from braggscope.core.eccentricity import EccentricityModel, fit_eccentricity
from braggscope.core.errors import ArgumentError

from ._common import available_fields, check_angles, check_fields, check_number, check_range, eccentricity_model
from .sxdm import sxdm_map, sxdm_points

__all__ = ["calibrate_eccentricity", "CalibrationResult", "crystal_position", "map_total_variation", "mosaic_fraction",
           "plot_calibration", "signal_kind", "store_eccentricity", "LOCATE_METHODS"]

#: How ``calibrate_eccentricity`` locates the crystal in each coarse map.
LOCATE_METHODS = ("com", "register")


def calibrate_eccentricity(
    detectors: Sequence,
    x_motor,
    x_range,
    y_motor,
    y_range,
    eta_motor,
    etas,
    *,
    intensity_field: str | None = None,
    initial=None,
    quadratic: bool = True,
    threshold: float = 0.2,
    locate: str = "com",
    map_pixel_um: float | None = None,
    map_etas: Sequence[float] | None = None,
    cfg=None,
    config_path=None,
    figure_path=None,
    md: dict | None = None,
    fly: bool = False,
    dwell_s: float | None = None,
) -> MsgGenerator[CalibrationResult]:
    """Measure and fit the eccentricity drift with coarse maps at several angles, and judge it.

    One ``sxdm_map`` run of coarse rasters (``plan_name`` ``sxdm_map``,
    ``purpose`` ``eccentricity_calibration``); at each eta where the crystal
    is seen it is located in the map of ``intensity_field`` (``locate``),
    ``fit_eccentricity`` fits the drift model, and
    :func:`~braggscope.core.calibration.judge_calibration` decides whether the
    fit can be used. Angles whose map holds no signal (rocking-curve tails)
    are skipped and listed in ``result.eta_not_found``.

    With a diffraction signal only the *diffracting* part of the crystal is
    seen. In a mosaic or bent crystal (NMC622) different regions diffract at
    different eta and that region sweeps across the crystal with eta; a
    rigid drift along the sweep adds to it and no diffraction map can tell
    the two apart. ``result.mosaic_fraction`` (:func:`mosaic_fraction`) flags
    such crystals: above 0.4 the fit is rejected. Locate mosaic crystals by
    their X-ray fluorescence instead (``intensity_field="xrf_counts"`` with
    :class:`braggscope.devices.fluorescence.FluorescenceDetector`): the map
    shows the whole particle at any eta, so the angles may span more than the
    rocking curve (a longer lever arm on the drift). The signal is then
    ``"fluorescence"`` (the detector declares ``bragg_independent = True``)
    and what must hold instead is that the maps' totals do not change with
    eta (``result.map_total_variation`` <= 0.2; 0.08 for NMC622 on 11 x 11
    maps).

    Parameters
    ----------
    detectors, x_motor, x_range, y_motor, y_range, eta_motor
        As for :func:`~braggscope.plans.sxdm_map`; the ranges (um) must
        contain the crystal at every angle (after ``initial``'s correction).
    etas : sequence of float
        At least 3 angles (2 with ``quadratic=False``), degrees.
    intensity_field : str, optional
        Scalar event field with the integrated signal per point, checked
        against the detectors' ``describe()`` before the run opens; by
        default the first field ending in ``total`` (``mpx1x4_total``,
        ``mpx1x4_stats_total``). ``"xrf_counts"``: the fluorescence detector.
    initial : EccentricityModel or dict, optional
        A previous model: the coarse maps follow it, and the fit is the total
        drift (refinement). Also the fallback kept where the fit is not trusted
        (else ``cfg``'s ``[eccentricity]``, else no drift).
    quadratic : bool
        Fit the quadratic term.
    threshold : float
        Fraction of the map maximum below which (background-subtracted)
        intensity is ignored in the centre of mass (0.2, the paper's 20 %).
    locate : {"com", "register"}
        ``"com"``: centre of mass of each map (:func:`crystal_position`).
        ``"register"``: sub-pixel phase cross-correlation (x20 upsampled) of
        each map on its neighbour, chained from the strongest map, whose
        centre of mass anchors the positions
        (:func:`braggscope.analysis.sxdm.drift.register_drift`).
    map_pixel_um : float, optional
        Pixel (um) of the maps the correction is for: the fit's rms residual
        and its drift uncertainty over ``map_etas`` must stay within half of
        it. Default: the coarse maps' larger step.
    map_etas : sequence of float, optional
        Angles (deg) the correction will be used at; default ``etas``.
    cfg : braggscope.core.config.Config, optional
        When the fit is accepted, ``result.use`` is stored in its
        ``[eccentricity]`` (in place) and written to ``config_path``; a
        rejected fit leaves it unchanged.
    config_path : path-like, optional
        Where to save the updated configuration (needs ``cfg``).
    figure_path : path-like, optional
        PNG of the measured positions and the fit (:func:`plot_calibration`).
    md : dict, optional
    fly : bool
        Take the maps as one fly scan (:func:`braggscope.plans.fly.sxdm_fly`): ``detectors``
        holds the fly scanner and the intensity is each frame's total (``intensity_field``
        is not used).
    dwell_s : float, optional
        Time per point of the fly scan, s (required with ``fly``).

    Returns
    -------
    CalibrationResult
        The plan's return value (``RE(plan).plan_result`` with
        ``call_returns_result=True``): ``print(result)`` reports the fit, the
        verdict (``result.accepted``, ``result.reason``, ``result.verdict()``)
        and the model to apply, ``result.use``.

    Yields
    ------
    Msg
        The messages of one ``sxdm_map`` run.

    Raises
    ------
    ArgumentError
        Before any message, for bad ranges, angles, NaN or infinite numbers,
        an unknown ``locate`` or an ``intensity_field`` no detector provides.

    See Also
    --------
    braggscope.plans.sxdm_map, braggscope.core.eccentricity.fit_eccentricity,
    braggscope.core.calibration.judge_calibration, mosaic_fraction
    """
    etas = check_angles("etas", etas)
    need = 3 if quadratic else 2
    if len(set(etas)) < need:
        raise ArgumentError(f"etas must hold at least {need} distinct angles, got {etas!r}")
    x_range, y_range = check_range("x_range", x_range), check_range("y_range", y_range)
    if x_range[2] < 3 or y_range[2] < 3:
        raise ArgumentError("x_range and y_range need num >= 3 to locate the crystal")
    if locate not in LOCATE_METHODS:
        raise ArgumentError(f"locate must be one of {LOCATE_METHODS}, got {locate!r}")
    if not 0 <= threshold < 1:
        raise ArgumentError(f"threshold must be in [0, 1), got {threshold!r}")
    map_pixel_um = check_number("map_pixel_um", map_pixel_um, positive=True, optional=True)
    map_etas = check_angles("map_etas", map_etas) if map_etas is not None else None
    if config_path is not None and cfg is None:
        raise ArgumentError("config_path needs cfg (the configuration to update)")
    if not detectors:
        raise ArgumentError("detectors must name at least one detector")
    start_model = eccentricity_model(initial, "initial")
    fallback = start_model if initial is not None else (
        eccentricity_model(cfg.get("eccentricity"), "cfg [eccentricity]") if cfg is not None else None)
    values: list[float] = []
    _md = {"purpose": "eccentricity_calibration"}
    _md.update(md or {})
    if fly:  # the maps flown (plans.fly.sxdm_fly); the intensity is each frame's total
        field, plan = _fly_maps(detectors, x_motor, x_range, y_motor, y_range, eta_motor, etas, start_model,
                                dwell_s, _md, values)
    else:
        field = _intensity_field(detectors, intensity_field)
        plan = sxdm_map(detectors, x_motor, x_range, y_motor, y_range, eta_motor, etas,
                        eccentricity=start_model, snake=False, md=_md)
    primary: set[str] = set()  # descriptors of the map points (not of a baseline or monitor stream)

    def collect(name, doc):
        if name == "descriptor" and doc.get("name", "primary") == "primary":
            primary.add(doc["uid"])
        elif name == "event" and doc["descriptor"] in primary:
            values.append(float(doc["data"][field]))

    yield from bpp.subs_wrapper(plan, {"descriptor": [collect], "event": [collect]})

    n_eta, ny, nx = len(etas), y_range[2], x_range[2]
    if len(values) != n_eta * ny * nx:
        raise RuntimeError(f"calibration collected {len(values)} of {n_eta * ny * nx} points")
    maps = np.asarray(values).reshape(n_eta, ny, nx)
    found, xs, ys = _locate(maps, x_range, y_range, etas, start_model, threshold=threshold, need=need,
                            locate=locate)
    eta_found = [etas[i] for i in found]
    fitted = fit_eccentricity(eta_found, xs, ys, quadratic=quadratic)
    if map_pixel_um is None:
        map_pixel_um = max(abs(r[1] - r[0]) / (r[2] - 1) for r in (x_range, y_range))
    result = judge_calibration(
        fitted, pixel_um=map_pixel_um, etas=map_etas or eta_found, signal=signal_kind(detectors, field),
        mosaic_fraction=mosaic_fraction(maps, etas), map_total_variation=map_total_variation(maps[found]),
        fallback=fallback, eta=eta_found, x_um=xs, y_um=ys,
        eta_not_found=[e for i, e in enumerate(etas) if i not in set(found.tolist())],
        intensity_field=field, locate=locate)
    if cfg is not None and result.accepted:
        store_eccentricity(cfg, result.use, config_path)
    if figure_path is not None:
        plot_calibration(result, figure_path)
    return result


def _fly_maps(detectors, x_motor, x_range, y_motor, y_range, eta_motor, etas, model, dwell_s, md, values):
    """The calibration maps as one ``sxdm_fly`` run (``fly=True``): the frame totals of each accepted
    line go to ``values`` as the line's StreamDatum arrives. Returns ``(field, plan)``."""
    from .fly import sxdm_fly

    if dwell_s is None:
        raise ArgumentError("fly=True needs dwell_s (s per point)")
    flyers = [d for d in detectors if hasattr(d, "collect_asset_docs")]
    if len(flyers) != 1:
        raise ArgumentError("fly=True needs one fly scanner in detectors (braggscope.devices.fly.make_flyer)")
    field = flyers[0].image_key
    resources: dict = {}

    def frame_totals(name, doc):
        if name == "stream_resource" and doc.get("data_key") == field:
            resources[doc["uid"]] = doc
        elif name == "stream_datum" and doc["stream_resource"] in resources:
            import h5py
            import hdf5plugin  # noqa: F401  (registers the Blosc filter of the fly detector files)
            from urllib.parse import unquote, urlparse

            res = resources[doc["stream_resource"]]
            with h5py.File(unquote(urlparse(res["uri"]).path), "r") as f:
                frames = f[res["parameters"]["dataset"]][doc["indices"]["start"]:doc["indices"]["stop"]]
            values.extend(float(v) for v in frames.sum(axis=(1, 2), dtype=np.float64))

    plan = sxdm_fly(detectors, x_motor, x_range, y_motor, y_range, eta_motor, etas, dwell_s=dwell_s,
                    eccentricity=model, snake=False, md=md)
    return field, bpp.subs_wrapper(plan, {"all": [frame_totals]})


def _intensity_field(detectors, intensity_field) -> str:
    """The event field to locate the crystal in, checked against the detectors' ``describe()``."""
    if intensity_field is not None:
        check_fields(detectors, intensity_field=intensity_field)
        return intensity_field
    known = sorted(available_fields(detectors))
    totals = [k for k in known if k.endswith("total")]
    if not totals:
        raise ArgumentError(f"no intensity field ending in 'total' among {known}; pass intensity_field")
    return totals[0]


def _locate(maps, x_range, y_range, etas, start_model, *, threshold, need, locate):
    """Angles (indices) where the crystal is seen and its positions (um) there."""
    n_eta = len(etas)
    _, y_pts, x_pts = sxdm_points(x_range, y_range, etas, eccentricity=start_model, snake=False)
    x_pts, y_pts = x_pts.reshape(maps.shape), y_pts.reshape(maps.shape)
    found, xs, ys, first_error = [], [], [], None
    for i in range(n_eta):
        try:
            x, y = crystal_position(maps[i], x_pts[i], y_pts[i], threshold=threshold)
        except ValueError as exc:  # no signal at this angle (rocking-curve tail)
            first_error = first_error or exc
            continue
        found.append(i)
        xs.append(x)
        ys.append(y)
    if len(found) < need:
        raise ValueError(f"crystal located at {len(found)} of {n_eta} angles (need {need}): {first_error}")
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
    ValueError
        When the map holds no signal above background (crystal not found).
    """
    intensity = np.asarray(intensity, dtype=float)
    background = np.median(intensity)
    w = intensity - background
    peak = w.max()
    # noise of the background: robust spread of the map, at least Poisson on the median
    noise = max(1.4826 * np.median(np.abs(w)), np.sqrt(max(background, 1.0)))
    if not peak > significance * noise:
        raise ValueError(f"no intensity above background (peak {peak:.3g} < {significance} x noise {noise:.3g}): "
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
        raise ValueError(f"maps must be (n_eta, ny, nx) with n_eta = len(etas), got {maps.shape} and {eta.shape}")
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
        raise ValueError(f"maps must be (n, ny, nx) with n >= 1, got shape {maps.shape}")
    totals = np.clip(maps - np.median(maps, axis=(1, 2), keepdims=True), 0.0, None).sum(axis=(1, 2))
    mean = totals.mean()
    return float(totals.std() / mean) if mean > 0 else float("nan")


def _registered_positions(maps, x_range, y_range, x_com, y_com, offsets):
    """Piezo positions (um) of the crystal by chained registration of the maps.

    ``x_com, y_com``: centres of mass (piezo frame) of each map, the strongest
    of which anchors the chain; ``offsets`` (n, 2): the (x, y) correction by
    which each map's raster was shifted.
    """
    from braggscope.analysis.sxdm.drift import register_drift

    step_x = (x_range[1] - x_range[0]) / (x_range[2] - 1)
    step_y = (y_range[1] - y_range[0]) / (y_range[2] - 1)
    shifts = register_drift(maps, upsample=20, reference="consecutive", normalization=None, min_signal=0.0)
    a = int(np.argmax((maps - np.median(maps, axis=(1, 2), keepdims=True)).max(axis=(1, 2))))
    # shifts are relative to map a; a map's content sits at -shift (pixels) from map a's
    x = x_com[a] - offsets[a, 0] - shifts[:, 1] * step_x + offsets[:, 0]
    y = y_com[a] - offsets[a, 1] - shifts[:, 0] * step_y + offsets[:, 1]
    return x, y


def store_eccentricity(cfg, model: EccentricityModel, path=None):
    """Put a model in ``cfg['eccentricity']`` and optionally save the config file (atomically)."""
    cfg.set("eccentricity.eta0", float(model.eta0))
    cfg.set("eccentricity.x", [float(v) for v in model.x])
    cfg.set("eccentricity.y", [float(v) for v in model.y])
    if path is not None:
        return save_config(cfg, path)
    return None


def plot_calibration(result: CalibrationResult, path) -> Path:
    """Save a figure of the measured crystal positions, the fitted drift and the verdict."""
    from matplotlib.figure import Figure

    model = result.fitted
    eta = np.asarray(result.eta, dtype=float)
    x = np.asarray(result.x_um) - result.position_um[0]
    y = np.asarray(result.y_um) - result.position_um[1]
    fine = np.linspace(eta.min(), eta.max(), 200)
    fx, fy = model.offset(fine)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(eta, x, "o", label="x measured")
    ax.plot(fine, fx, "-", label=f"x fit ({model.x[0]:.3g} um/deg, {model.x[1]:.3g} um/deg$^2$)")
    ax.plot(eta, y, "s", label="y measured")
    ax.plot(fine, fy, "--", label=f"y fit ({model.y[0]:.3g} um/deg, {model.y[1]:.3g} um/deg$^2$)")
    ax.set_xlabel("eta (deg)")
    ax.set_ylabel("drift relative to eta0 (um)")
    ax.set_title(f"eccentricity calibration ({result.signal}, {result.locate}): "
                 f"{'accepted' if result.accepted else 'REJECTED'}\nrms residual {result.rms_residual_um:.3g} um, "
                 f"mosaic fraction {result.mosaic_fraction:.2f}, map total variation "
                 f"{result.map_total_variation:.3f}", fontsize="medium")
    ax.legend(fontsize="small")
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path
