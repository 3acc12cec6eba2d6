"""Closed-loop eccentricity calibration: find the crystal at several eta, fit its drift."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from bluesky import preprocessors as bpp
from bluesky.utils import MsgGenerator

from braggscope.eccentricity import EccentricityModel, fit_eccentricity

from ._common import check_angles, check_range, eccentricity_model
from .sxdm import sxdm_map, sxdm_points

__all__ = ["calibrate_eccentricity", "crystal_position", "plot_calibration", "store_eccentricity"]


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
    cfg=None,
    config_path=None,
    figure_path=None,
    md: dict | None = None,
) -> MsgGenerator[EccentricityModel]:
    """Measure and fit the eccentricity drift with coarse maps at several angles.

    One ``sxdm_map`` run of coarse rasters (``plan_name`` ``sxdm_map``,
    ``purpose`` ``eccentricity_calibration``); at each eta the crystal is
    located as the centre of mass of the background-subtracted integrated
    intensity, then ``fit_eccentricity`` fits the drift model.

    Parameters
    ----------
    detectors, x_motor, x_range, y_motor, y_range, eta_motor
        As for :func:`~braggscope.plans.sxdm_map`; the ranges (um) must
        contain the crystal at every angle (after ``initial``'s correction).
    etas : sequence of float
        At least 3 angles (2 with ``quadratic=False``), degrees.
    intensity_field : str, optional
        Scalar event field with the integrated detector intensity per point;
        by default the first field ending in ``total`` (``mpx1x4_total``,
        ``mpx1x4_stats1_total``).
    initial : EccentricityModel, optional
        A previous model: the coarse maps follow it, and the result is the
        total drift (refinement).
    quadratic : bool
        Fit the quadratic term.
    threshold : float
        Fraction of the map maximum below which (background-subtracted)
        intensity is ignored in the centre of mass (0.2, the paper's 20 %).
    cfg : braggscope.config.Config, optional
        Updated in place (``[eccentricity]``) and written to ``config_path``.
    config_path : path-like, optional
        Where to save the updated configuration (needs ``cfg``).
    figure_path : path-like, optional
        PNG of the measured positions and the fit.
    md : dict, optional

    Returns
    -------
    EccentricityModel
        The plan's return value (``RE(plan)`` with ``call_returns_result=True``
        gives it as ``result.plan_result``). ``extra`` holds the measured
        positions and the rms residual.
    """
    etas = check_angles("etas", etas)
    need = 3 if quadratic else 2
    if len(set(etas)) < need:
        raise ValueError(f"etas must hold at least {need} distinct angles, got {etas!r}")
    x_range, y_range = check_range("x_range", x_range), check_range("y_range", y_range)
    if x_range[2] < 3 or y_range[2] < 3:
        raise ValueError("x_range and y_range need num >= 3 to locate the crystal")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    if config_path is not None and cfg is None:
        raise ValueError("config_path needs cfg (the configuration to update)")
    start_model = eccentricity_model(initial)

    values: list[float] = []
    chosen: dict = {"field": intensity_field}

    def collect(name, doc):
        data = doc["data"]
        if chosen["field"] is None:
            keys = [k for k in data if k.endswith("total")]
            if not keys:
                raise ValueError(f"no intensity field ending in 'total' among {sorted(data)}; "
                                 "pass intensity_field")
            chosen["field"] = keys[0]
        values.append(float(data[chosen["field"]]))

    _md = {"purpose": "eccentricity_calibration"}
    _md.update(md or {})
    plan = sxdm_map(detectors, x_motor, x_range, y_motor, y_range, eta_motor, etas,
                    eccentricity=start_model, snake=False, md=_md)
    yield from bpp.subs_wrapper(plan, {"event": [collect]})

    n_eta, ny, nx = len(etas), y_range[2], x_range[2]
    if len(values) != n_eta * ny * nx:
        raise RuntimeError(f"calibration collected {len(values)} of {n_eta * ny * nx} points")
    maps = np.asarray(values).reshape(n_eta, ny, nx)
    _, y_pts, x_pts = sxdm_points(x_range, y_range, etas, eccentricity=start_model, snake=False)
    x_pts, y_pts = x_pts.reshape(maps.shape), y_pts.reshape(maps.shape)
    xs, ys = np.empty(n_eta), np.empty(n_eta)
    for i in range(n_eta):
        xs[i], ys[i] = crystal_position(maps[i], x_pts[i], y_pts[i], threshold=threshold)
    model = fit_eccentricity(etas, xs, ys, quadratic=quadratic)
    model.extra.update({"eta": list(etas), "x_um": xs.tolist(), "y_um": ys.tolist(),
                        "intensity_field": chosen["field"]})
    if cfg is not None:
        store_eccentricity(cfg, model, config_path)
    if figure_path is not None:
        plot_calibration(model, figure_path)
    return model


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


def store_eccentricity(cfg, model: EccentricityModel, path=None):
    """Put a model in ``cfg['eccentricity']`` and optionally save the config file."""
    from braggscope.config import save_config

    cfg.set("eccentricity.eta0", float(model.eta0))
    cfg.set("eccentricity.x", [float(v) for v in model.x])
    cfg.set("eccentricity.y", [float(v) for v in model.y])
    if path is not None:
        return save_config(cfg, path)
    return None


def plot_calibration(model: EccentricityModel, path) -> Path:
    """Save a figure of the measured crystal positions and the fitted drift."""
    from matplotlib.figure import Figure

    eta = np.asarray(model.extra["eta"], dtype=float)
    x = np.asarray(model.extra["x_um"]) - model.extra.get("x_at_eta0", 0.0)
    y = np.asarray(model.extra["y_um"]) - model.extra.get("y_at_eta0", 0.0)
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
    ax.set_title(f"eccentricity calibration, rms residual {model.extra.get('rms_residual_um', float('nan')):.3g} um")
    ax.legend(fontsize="small")
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
