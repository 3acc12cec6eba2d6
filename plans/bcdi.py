"""BCDI: an oversampled rocking scan of one crystal, kept in the beam at every angle."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from bluesky import plans as bp
from bluesky.utils import MsgGenerator
from cycler import cycler

from braggscope.core.errors import ArgumentError
from braggscope.core.geometry import oversampling_detector, oversampling_rocking, rocking_step, wavelength
from braggscope.core.setup import ScanSetup

from .checks import check_detectors, check_numbers, check_within_limits, eccentricity_model
from .guard import MOVE_TIMEOUT_S, TRIGGER_TIMEOUT_S, guarded
from .metadata import area_detector, main_detector, names, setup_metadata
from .stubs import step_point

__all__ = ["bcdi_rocking", "bcdi_angles", "MIN_OVERSAMPLING"]

#: Nyquist: below this oversampling ratio the phase cannot be retrieved.
MIN_OVERSAMPLING = 2.0


def bcdi_angles(eta_center: float, *, d_spacing: float, size_m: float, oversampling: float = 2.0,
                step_deg: float | None = None, eta_range: float | None = None,
                n_fringes: float = 12.0, allow_undersampling: bool = False) -> np.ndarray:
    """Rocking angles (degrees) of an oversampled BCDI scan.

    The step is ``rocking_step(d_spacing, size_m, oversampling)`` unless
    ``step_deg`` is given; the range is ``eta_range`` or ``n_fringes``
    fringe periods (one period is ``d_spacing / size_m`` radians).

    Raises
    ------
    ArgumentError
        If the step gives a rocking oversampling below 2 (and not
        ``allow_undersampling``), naming the allowed step range; for
        numbers that are not finite or not > 0.
    """
    check_numbers(d_spacing=d_spacing, size_m=size_m, oversampling=oversampling, step_deg=step_deg,
                  eta_range=eta_range, n_fringes=n_fringes,
                  positive=("d_spacing", "size_m", "oversampling", "step_deg", "eta_range", "n_fringes"))
    max_step = rocking_step(d_spacing, size_m, MIN_OVERSAMPLING)
    if step_deg is None:
        if oversampling < MIN_OVERSAMPLING and not allow_undersampling:
            raise ArgumentError(f"oversampling must be >= {MIN_OVERSAMPLING}, got {oversampling!r} "
                                "(pass allow_undersampling=True to override)")
        step_deg = rocking_step(d_spacing, size_m, oversampling)
    step_deg = float(step_deg)
    sigma = oversampling_rocking(d_spacing, size_m, step_deg)
    if sigma < MIN_OVERSAMPLING * (1 - 1e-9) and not allow_undersampling:
        raise ArgumentError(
            f"step_deg = {step_deg:.6g} deg gives a rocking oversampling of {sigma:.3g} < {MIN_OVERSAMPLING}; "
            f"allowed range: 0 < step_deg <= {max_step:.6g} deg for a {size_m * 1e9:.0f} nm crystal at "
            f"d = {d_spacing:.4g} A (pass allow_undersampling=True to override)")
    if eta_range is None:
        eta_range = float(n_fringes) * np.degrees(d_spacing * 1e-10 / size_m)
    eta_range = float(eta_range)
    n = int(np.floor(eta_range / step_deg + 1e-9)) + 1
    if n < 3:
        raise ArgumentError(f"eta_range = {eta_range:.6g} deg holds {n} steps of {step_deg:.6g} deg; "
                            f"need eta_range >= {2 * step_deg:.6g} deg")
    half = (n - 1) * step_deg / 2.0
    return float(eta_center) + np.linspace(-half, half, n)


def bcdi_rocking(
    detectors: Sequence,
    eta_motor,
    eta_center: float,
    *,
    size_m: float,
    d_spacing: float,
    energy=None,
    setup: ScanSetup | None = None,
    oversampling: float = 2.0,
    step_deg: float | None = None,
    eta_range: float | None = None,
    n_fringes: float = 12.0,
    x_motor=None,
    y_motor=None,
    x_um: float | None = None,
    y_um: float | None = None,
    eccentricity=None,
    allow_undersampling: bool = False,
    reflection=None,
    sample: str | None = None,
    trigger_timeout_s: float = TRIGGER_TIMEOUT_S,
    move_timeout_s: float = MOVE_TIMEOUT_S,
    md: dict | None = None,
) -> MsgGenerator[str]:
    """Oversampled rocking scan of one crystal for BCDI.

    The step follows from the particle size, the reflection's d-spacing and
    the requested oversampling (``braggscope.core.geometry.rocking_step``); the
    detector-plane oversampling ``lambda D / (p size)`` is checked from the
    photon energy and the area detector's configuration (distance and pixel
    size signals), or from ``setup``. With ``x_motor``/``y_motor`` the piezo follows the
    eccentricity drift, ``(x_um, y_um) + eccentricity.offset(eta)``, so the
    crystal stays in the beam at every angle.

    Parameters
    ----------
    detectors : list of readable devices
        Including the area detector, which records its geometry as
        configuration signals (see :func:`~braggscope.plans.sxdm_map`).
    eta_motor : positioner
        Rocking motor (degrees).
    eta_center : float
        Centre of the rocking curve (degrees), usually the Bragg angle.
    size_m : float
        Particle size in metres.
    d_spacing : float
        Reflection d-spacing in Angstrom.
    energy : positioner or float, optional
        The monochromator energy positioner (its position is read, keV) or
        the energy in keV; needed unless ``setup`` is given.
    setup : braggscope.core.setup.ScanSetup, optional
        An explicit setup (recorded in the start document under ``setup``);
        by default the devices and the baseline record it.
    oversampling : float
        Requested rocking oversampling (>= 2).
    step_deg, eta_range : float, optional
        Explicit step and total range (degrees) instead of the defaults
        (step from ``oversampling``, range ``n_fringes`` fringe periods).
    x_motor, y_motor, x_um, y_um : optional
        Piezo axes and the crystal position at ``eccentricity.eta0`` (um).
    eccentricity : EccentricityModel or dict, optional
    allow_undersampling : bool
        Permit oversampling below 2 (in either direction).
    reflection : sequence of int, optional
        Miller indices, recorded in the start document.
    sample, md
        Recorded in the start document.
    trigger_timeout_s, move_timeout_s : float
        Bounds (s) on one point's detector trigger and moves, as for
        :func:`~braggscope.plans.sxdm_map`.

    Yields
    ------
    Msg
        Messages for the RunEngine; returns the run uid.

    Raises
    ------
    ArgumentError
        Before the first message (so before any motion) for a step or a
        distance giving an oversampling below 2, naming the argument and the
        allowed range, for NaN or infinite numbers, or for targets outside
        the motors' limits.
    """
    detectors = check_detectors(detectors)
    setup_md = setup_metadata(setup)
    check_numbers(eta_center=eta_center, size_m=size_m, d_spacing=d_spacing, oversampling=oversampling,
                  step_deg=step_deg, eta_range=eta_range, n_fringes=n_fringes, x_um=x_um, y_um=y_um,
                  energy=None if hasattr(energy, "position") else energy, trigger_timeout_s=trigger_timeout_s,
                  move_timeout_s=move_timeout_s,
                  positive=("size_m", "d_spacing", "oversampling", "step_deg", "eta_range", "n_fringes", "energy",
                            "trigger_timeout_s", "move_timeout_s"))
    energy_kev, distance_m, pixel_m = _beam(setup, energy, area_detector(detectors))
    sigma_det = oversampling_detector(energy_kev, distance_m, pixel_m, size_m)
    if sigma_det < MIN_OVERSAMPLING * (1 - 1e-9) and not allow_undersampling:
        min_distance = MIN_OVERSAMPLING * pixel_m * size_m / (wavelength(energy_kev) * 1e-10)
        raise ArgumentError(
            f"distance_m = {distance_m:.4g} m gives a detector-plane oversampling of {sigma_det:.3g} < "
            f"{MIN_OVERSAMPLING}; allowed range: distance_m >= {min_distance:.4g} m for {pixel_m * 1e6:.0f} um "
            f"pixels, a {size_m * 1e9:.0f} nm crystal at {energy_kev:.4g} keV "
            "(pass allow_undersampling=True to override)")
    etas = bcdi_angles(eta_center, d_spacing=d_spacing, size_m=size_m, oversampling=oversampling,
                       step_deg=step_deg, eta_range=eta_range, n_fringes=n_fringes,
                       allow_undersampling=allow_undersampling)
    model = eccentricity_model(eccentricity)
    check_within_limits(eta_motor, "eta range", float(etas.min()), float(etas.max()))
    traj, follow = _trajectory(eta_motor, etas, model, x_motor, x_um, y_motor, y_um)
    step = float(etas[1] - etas[0])
    _md = {
        "plan_name": "bcdi_rocking",
        "detector": main_detector(detectors),
        "eta": [float(e) for e in etas],
        "size_m": float(size_m),
        "d_spacing": float(d_spacing),
        "reflection": list(reflection) if reflection is not None else None,
        "step_deg": step,
        "oversampling_rocking": oversampling_rocking(d_spacing, size_m, step),
        "oversampling_detector": sigma_det,
        "eccentricity": model.to_dict(),
        "follow": follow,
        "plan_args": {"detectors": names(detectors), "eta_motor": eta_motor.name, "eta_center": float(eta_center),
                      "size_m": float(size_m), "d_spacing": float(d_spacing), "oversampling": float(oversampling),
                      "step_deg": step_deg, "eta_range": eta_range, "n_fringes": float(n_fringes),
                      "allow_undersampling": bool(allow_undersampling)},
        "hints": {"dimensions": [([eta_motor.name], "primary")]},
        **setup_md,
    }
    if sample is not None:
        _md["sample"] = sample
    _md.update(md or {})
    plan = bp.scan_nd(detectors, traj, per_step=step_point, md=_md)
    return (yield from guarded(plan, trigger_timeout_s=trigger_timeout_s, move_timeout_s=move_timeout_s))


def _trajectory(eta_motor, etas, model, x_motor, x_um, y_motor, y_um):
    """The rocking trajectory, the piezo following the drift where given: ``(cycler, follow)``.

    ``follow`` records, per piezo axis, the motor and the crystal position at ``eta0``.
    """
    if (x_motor is None) != (x_um is None) or (y_motor is None) != (y_um is None):
        raise ArgumentError("x_motor/x_um and y_motor/y_um must be given together")
    traj, follow = cycler(eta_motor, list(etas)), {}
    dx, dy = model.offset(etas)
    for axis, motor, at_eta0, offset in (("x", x_motor, x_um, dx), ("y", y_motor, y_um, dy)):
        if motor is None:
            continue
        positions = float(at_eta0) + np.asarray(offset)
        check_within_limits(motor, f"{axis}_um (+ eccentricity offsets)", float(positions.min()),
                            float(positions.max()))
        traj = traj + cycler(motor, list(positions))
        follow[axis] = {"motor": motor.name, "at_eta0": float(at_eta0)}
    return traj, follow


def _beam(setup, energy, detector) -> tuple[float, float, float]:
    """Energy (keV), distance (m) and pixel size (m) for the oversampling check, before any message.

    From ``setup``, else the ``energy`` positioner (or value) and the area
    detector's configuration signals.
    """
    if setup is not None:
        return setup.energy_kev, setup.distance_m, min(setup.geometry().pixel_size)
    values = {}
    if energy is not None:
        values["energy_kev"] = getattr(energy, "position", energy)
    for name in ("distance_m", "pixel_m"):
        signal = getattr(detector, name, None)
        if signal is not None and hasattr(signal, "get"):
            values[name] = signal.get()
    out = []
    for name, hint in (("energy_kev", "pass energy=<the energy positioner> (or keV)"),
                       ("distance_m", "the area detector has no distance_m configuration signal"),
                       ("pixel_m", "the area detector has no pixel_m configuration signal")):
        try:
            value = float(np.ravel(values[name])[0])
        except (KeyError, TypeError, ValueError, IndexError):
            raise ArgumentError(f"bcdi_rocking needs {name} for the oversampling check: {hint}, "
                                "or pass setup=ScanSetup(...)") from None
        if not (np.isfinite(value) and value > 0):
            raise ArgumentError(f"bcdi_rocking: {name} = {value!r} is not > 0 (set the detector's configuration "
                                "signal from the [detector] configuration, or pass setup=ScanSetup(...))")
        out.append(value)
    return out[0], out[1], out[2]
