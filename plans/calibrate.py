"""Closed-loop eccentricity calibration: find the crystal at several eta, fit its drift.

The crystal is located in coarse maps of a scalar signal: the diffraction
detector's integrated intensity, or, for mosaic crystals, the particle's
X-ray fluorescence (``intensity_field="xrf_counts"``), which shows the whole
particle at any eta.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter of the fly detector files)
import numpy as np
from bluesky import preprocessors as bpp
from bluesky.utils import MsgGenerator

from braggscope.core.atomic import atomic_path
from braggscope.core.calibration import CalibrationResult, judge_calibration
from braggscope.core.config import save_config
from braggscope.core.eccentricity import EccentricityModel, fit_eccentricity
from braggscope.core.errors import ArgumentError

from .calibration_maps import crystal_position, locate_crystal, map_total_variation, mosaic_fraction, signal_kind
from .checks import (
    available_fields,
    check_angles,
    check_detectors,
    check_fields,
    check_number,
    check_range,
    eccentricity_model,
)
from .fly import sxdm_fly
from .sxdm import sxdm_map

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
    md: dict | None = None,
    fly: bool = False,
    dwell_s: float | None = None,
) -> MsgGenerator[CalibrationResult]:
    """Measure and fit the eccentricity drift with coarse maps at several angles, and judge it.

    The plan writes no file: the caller stores an accepted model
    (:func:`store_eccentricity`) and draws the fit (:func:`plot_calibration`), as the
    shell's ``calibrate()`` does.

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
        Its ``[eccentricity]`` is the fallback model without ``initial``
        (read only).
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
    etas, x_range, y_range, map_pixel_um, map_etas = _check_arguments(
        detectors, x_range, y_range, etas, quadratic, threshold, locate, map_pixel_um, map_etas)
    need = 3 if quadratic else 2
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
    found, xs, ys = locate_crystal(maps, x_range, y_range, etas, start_model, threshold=threshold, need=need,
                            locate=locate)
    eta_found = [etas[i] for i in found]
    fitted = fit_eccentricity(eta_found, xs, ys, quadratic=quadratic)
    if map_pixel_um is None:
        map_pixel_um = max(abs(r[1] - r[0]) / (r[2] - 1) for r in (x_range, y_range))
    return judge_calibration(
        fitted, pixel_um=map_pixel_um, etas=map_etas or eta_found, signal=signal_kind(detectors, field),
        mosaic_fraction=mosaic_fraction(maps, etas), map_total_variation=map_total_variation(maps[found]),
        fallback=fallback, eta=eta_found, x_um=xs, y_um=ys,
        eta_not_found=[e for i, e in enumerate(etas) if i not in set(found.tolist())],
        intensity_field=field, locate=locate)


def _check_arguments(detectors, x_range, y_range, etas, quadratic, threshold, locate, map_pixel_um, map_etas):
    """``calibrate_eccentricity``'s arguments checked (ArgumentError naming the bad one), normalised."""
    etas = check_angles("etas", etas)
    need = 3 if quadratic else 2
    if len(set(etas)) < need:
        raise ArgumentError(f"etas must hold at least {need} distinct angles, got {etas!r}")
    x_range, y_range = check_range("x_range", x_range), check_range("y_range", y_range)
    if x_range[2] < 3 or y_range[2] < 3:
        raise ArgumentError("x_range and y_range need num >= 3 to locate the crystal")
    if locate not in LOCATE_METHODS:
        raise ArgumentError(f"locate must be one of {LOCATE_METHODS}, got {locate!r}")
    try:
        threshold_ok = 0 <= float(threshold) < 1
    except (TypeError, ValueError):
        threshold_ok = False
    if not threshold_ok:
        raise ArgumentError(f"threshold must be in [0, 1), got {threshold!r}")
    map_pixel_um = check_number("map_pixel_um", map_pixel_um, positive=True, optional=True)
    map_etas = check_angles("map_etas", map_etas) if map_etas is not None else None
    check_detectors(detectors)
    return etas, x_range, y_range, map_pixel_um, map_etas


def _fly_maps(detectors, x_motor, x_range, y_motor, y_range, eta_motor, etas, model, dwell_s, md, values):
    """The calibration maps as one ``sxdm_fly`` run (``fly=True``): the frame totals of each accepted
    line go to ``values`` as the line's StreamDatum arrives. Returns ``(field, plan)``."""
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
            res = resources[doc["stream_resource"]]
            # SWMR as the resource says: the file is open for writing, and a catalog in this process reads it so
            with h5py.File(unquote(urlparse(res["uri"]).path), "r", swmr=bool(res["parameters"].get("swmr"))) as f:
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
