"""3D-SXDM: a piezo raster repeated at each rocking angle, drift-corrected, in one run."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from bluesky import plans as bp
from bluesky.utils import MsgGenerator
from cycler import cycler

from braggscope.core.setup import ScanSetup
from braggscope.storage.layout import raster_order

from .checks import check_angles, check_detectors, check_numbers, check_range, check_within_limits, eccentricity_model
from .guard import MOVE_TIMEOUT_S, TRIGGER_TIMEOUT_S, guarded
from .metadata import main_detector, names, setup_metadata
from .stubs import step_point

__all__ = ["sxdm_map", "sxdm_points"]


def sxdm_map(
    detectors: Sequence,
    x_motor,
    x_range,
    y_motor,
    y_range,
    eta_motor,
    etas,
    *,
    eccentricity=None,
    snake: bool = True,
    sample: str | None = None,
    setup: ScanSetup | None = None,
    trigger_timeout_s: float = TRIGGER_TIMEOUT_S,
    move_timeout_s: float = MOVE_TIMEOUT_S,
    md: dict | None = None,
) -> MsgGenerator[str]:
    """Map a crystal with a 2-D piezo raster at each rocking angle (3D-SXDM).

    One run holds the whole dataset (eta x y x x x frame). At each ``eta`` the
    raster origin is moved by ``eccentricity.offset(eta)`` so the same sample
    area is mapped at every angle; the detector is triggered at every point.

    Parameters
    ----------
    detectors : list of readable devices
        Must include the area detector (field ``<name>_image``), which
        records its geometry (distance, pixel size, direct-beam pixel, frame
        shape) as configuration signals in every event descriptor.
    x_motor, x_range : positioner, (start, stop, num)
        Fast piezo axis and its nominal range in micrometres.
    y_motor, y_range : positioner, (start, stop, num)
        Slow piezo axis and its nominal range in micrometres.
    eta_motor, etas : positioner, sequence of float
        Rocking motor and the rocking angles in degrees (outermost loop).
    eccentricity : EccentricityModel or dict, optional
        Drift model; ``None`` maps without correction.
    snake : bool
        Alternate the fast-axis direction row by row (odd rows run backwards).
    sample : str, optional
        Sample name for the start document.
    setup : braggscope.core.setup.ScanSetup, optional
        An explicit setup, recorded in the start document under ``setup``;
        by default the devices record it (detector configuration signals and
        the RunEngine's baseline of ``energy``, ``delta``, ``nu``, ``phi``, as
        the braggscope session and demo install).
    trigger_timeout_s, move_timeout_s : float
        Bounds (s) on one point's detector trigger and moves, for a device
        that stays connected but never finishes (``TimeoutError`` naming it);
        a lost connection ends the run at once (the guard,
        :mod:`braggscope.plans.guard`).
    md : dict, optional
        Extra start-document metadata.

    Yields
    ------
    Msg
        Messages for the RunEngine; returns the run uid.

    Raises
    ------
    ArgumentError
        On an empty range, no angles, NaN or infinite numbers, or corrected
        raster extents outside the motors' limits, before any message is yielded.

    See Also
    --------
    sxdm_points : the corrected positions in acquisition order.
    braggscope.storage.sxdm_stack : the run read back as (eta, y, x, rows, cols).
    """
    x_range = check_range("x_range", x_range)
    y_range = check_range("y_range", y_range)
    etas = check_angles("etas", etas)
    model = eccentricity_model(eccentricity)
    eta_pts, y_pts, x_pts = sxdm_points(x_range, y_range, etas, eccentricity=model, snake=snake)
    check_within_limits(x_motor, "x_range (+ eccentricity offsets)", float(x_pts.min()), float(x_pts.max()))
    check_within_limits(y_motor, "y_range (+ eccentricity offsets)", float(y_pts.min()), float(y_pts.max()))
    check_within_limits(eta_motor, "etas", min(etas), max(etas))
    detectors = check_detectors(detectors)
    setup_md = setup_metadata(setup)
    check_numbers(trigger_timeout_s=trigger_timeout_s, move_timeout_s=move_timeout_s,
                  positive=("trigger_timeout_s", "move_timeout_s"))

    shape = [len(etas), y_range[2], x_range[2]]
    raster = {"fast": x_motor.name, "slow": y_motor.name, "x": list(x_range), "y": list(y_range),
              "snake": bool(snake)}
    _md = {
        "plan_name": "sxdm_map",
        "detector": main_detector(detectors),
        "shape": shape,
        "eta": etas,
        "raster": raster,
        "eccentricity": model.to_dict(),
        "num_points": int(np.prod(shape)),
        "plan_args": {"detectors": names(detectors), "x_motor": x_motor.name, "x_range": list(x_range),
                      "y_motor": y_motor.name, "y_range": list(y_range), "eta_motor": eta_motor.name,
                      "etas": etas, "eccentricity": model.to_dict(), "snake": bool(snake)},
        "hints": {"dimensions": [([eta_motor.name], "primary"), ([y_motor.name], "primary"),
                                 ([x_motor.name], "primary")],
                  "gridding": "rectilinear", "raster": raster},
        "extents": [list(y_range[:2]), list(x_range[:2])],
        **setup_md,
    }
    if sample is not None:
        _md["sample"] = sample
    _md.update(md or {})
    trajectory = cycler(eta_motor, list(eta_pts)) + cycler(y_motor, list(y_pts)) + cycler(x_motor, list(x_pts))
    plan = bp.scan_nd(detectors, trajectory, per_step=step_point, md=_md)
    return (yield from guarded(plan, trigger_timeout_s=trigger_timeout_s, move_timeout_s=move_timeout_s))


def sxdm_points(x_range, y_range, etas, *, eccentricity=None, snake=True):
    """Corrected positions of every point of an SXDM map, in acquisition order.

    Returns
    -------
    eta, y, x : ndarray, shape (n_eta * ny * nx,)
        Angles (degrees) and piezo positions (micrometres, raster origin
        moved by ``eccentricity.offset(eta)``).
    """
    x0, x1, nx = check_range("x_range", x_range)
    y0, y1, ny = check_range("y_range", y_range)
    etas = np.asarray(check_angles("etas", etas))
    model = eccentricity_model(eccentricity)
    xs, ys = np.linspace(x0, x1, nx), np.linspace(y0, y1, ny)
    order = raster_order(len(etas), ny, nx, snake)
    n = order.size
    eta_pts, y_pts, x_pts = np.empty(n), np.empty(n), np.empty(n)
    ei, yi, xi = np.meshgrid(np.arange(len(etas)), np.arange(ny), np.arange(nx), indexing="ij")
    dx, dy = model.offset(etas)
    dx, dy = np.broadcast_to(dx, etas.shape), np.broadcast_to(dy, etas.shape)
    eta_pts[order] = etas[ei]
    y_pts[order] = ys[yi] + dy[ei]
    x_pts[order] = xs[xi] + dx[ei]
    return eta_pts, y_pts, x_pts

