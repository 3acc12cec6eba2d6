"""Argument checks of the braggscope plans, public so that a site's own plans check alike.

Every check raises :class:`~braggscope.core.errors.ArgumentError` (a
``ValueError``) naming the argument and what is allowed (NaN and infinities
refused), and is meant to run before a plan yields its first message, so
before anything moves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from braggscope.core.eccentricity import EccentricityModel
from braggscope.core.errors import ArgumentError
from braggscope.core.numbers import finite_float

__all__ = ["available_fields", "check_angles", "check_detectors", "check_fields", "check_number", "check_numbers",
           "check_range", "check_within_limits", "eccentricity_model", "motor_limits"]


def check_range(name: str, value) -> tuple[float, float, int]:
    """Validate a ``(start, stop, num)`` raster range; returns it normalised."""
    try:
        start, stop, num = value
        start, stop = float(start), float(stop)
    except (TypeError, ValueError):
        raise ArgumentError(f"{name} must be (start, stop, num), got {value!r}") from None
    if not (np.isfinite(start) and np.isfinite(stop)):
        raise ArgumentError(f"{name} start/stop must be finite, got {value!r}")
    try:
        whole = int(num) == num and int(num) >= 1
    except (TypeError, ValueError, OverflowError):  # NaN, inf, not a number
        whole = False
    if not whole:
        raise ArgumentError(f"{name} num must be an integer >= 1, got {num!r}")
    num = int(num)
    if num > 1 and start == stop:
        raise ArgumentError(f"{name} is empty: start == stop = {start} with num = {num} > 1")
    return start, stop, num


def check_angles(name: str, values) -> list[float]:
    """Validate a non-empty list of finite angles (degrees)."""
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    if arr.ndim != 1 or arr.size == 0:
        raise ArgumentError(f"{name} must be a non-empty 1-D list of angles in degrees, got {values!r}")
    if not np.all(np.isfinite(arr)):
        raise ArgumentError(f"{name} contains NaN/inf: {values!r}")
    return [float(v) for v in arr]


def motor_limits(motor) -> tuple[float, float] | None:
    """Soft limits of a positioner (``EpicsMotor.limits``), or None when unset.

    ophyd reports ``(0, 0)`` (or equal values) for "no limits".
    """
    lim = getattr(motor, "limits", None)
    if lim is None:
        return None
    try:
        low, high = float(lim[0]), float(lim[1])
    except (TypeError, ValueError, IndexError):
        return None
    if low == high:
        return None
    return (min(low, high), max(low, high))


def check_within_limits(motor, name: str, low: float, high: float) -> None:
    """Refuse targets ``[low, high]`` that are not finite or lie outside the motor's soft limits.

    NaN compares False with everything, so it is refused explicitly (it
    would pass a plain limit comparison and reach the motor).
    """
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ArgumentError(f"{name} gives {getattr(motor, 'name', motor)} a target that is not finite "
                            f"({low!r} .. {high!r}): check the argument and the eccentricity coefficients")
    lim = motor_limits(motor)
    if lim is None:
        return
    if low < lim[0] or high > lim[1]:
        raise ArgumentError(
            f"{name} needs {motor.name} from {low:.6g} to {high:.6g}, outside its limits "
            f"[{lim[0]:.6g}, {lim[1]:.6g}]")


def eccentricity_model(value, name: str = "eccentricity") -> EccentricityModel:
    """The plans' check of an eccentricity argument: :meth:`EccentricityModel.coerce`.

    Accepts an EccentricityModel, its dict form, or None (no correction);
    refuses NaN or infinite coefficients and unknown keys, naming ``name``.
    """
    try:
        return EccentricityModel.coerce(value, name)
    except ValueError as exc:
        raise ArgumentError(str(exc)) from None


def check_number(name: str, value, *, positive: bool = False, optional: bool = False) -> float | None:
    """A finite number (``> 0`` when ``positive``); None passes when ``optional``.

    Raises
    ------
    ArgumentError
        Naming ``name``, for NaN, infinities, non-numbers and (``positive``) values <= 0.
    """
    if value is None and optional:
        return None
    v = finite_float(value, name, error=ArgumentError)
    if positive and not v > 0:
        raise ArgumentError(f"{name} must be > 0, got {value!r}")
    return v


def check_numbers(*, positive: Sequence[str] = (), **values) -> None:
    """:func:`check_number` on each keyword (None allowed); those named in ``positive`` must be > 0.

    Sequences (``cch``, ``reflection``) are checked element by element.
    """
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple, np.ndarray)):
            for i, v in enumerate(np.ravel(np.asarray(value, dtype=object))):
                check_number(f"{name}[{i}]", v, positive=name in positive)
        else:
            check_number(name, value, positive=name in positive)


def check_fields(detectors: Sequence, **fields) -> None:
    """Refuse event field names that none of ``detectors`` describes (``describe()`` keys).

    Called before the run opens, so a misspelt ``intensity_field="xrf_countz"``
    fails before any motion. None values are skipped.

    Raises
    ------
    ArgumentError
        Naming the argument, the field and the fields the detectors do have.
    """
    wanted = {arg: f for arg, f in fields.items() if f is not None}
    if not wanted:
        return
    known = available_fields(detectors)
    for arg, field in wanted.items():
        if field not in known:
            close = [k for k in known if k.endswith(("_counts", "_total", "total"))] or sorted(known)
            detector_names = [getattr(d, "name", repr(d)) for d in detectors]
            raise ArgumentError(f"{arg}={field!r} is not a field of the detectors {detector_names}; "
                                f"available: {', '.join(sorted(close))}")


def available_fields(detectors: Sequence) -> set[str]:
    """Union of the ``describe()`` keys of ``detectors`` (the event fields they will produce)."""
    known: set[str] = set()
    for det in detectors:
        describe = getattr(det, "describe", None)
        if describe is None:
            raise ArgumentError(f"detectors: {getattr(det, 'name', det)!r} is not a readable device (no describe())")
        known.update(describe())
    return known


def check_detectors(detectors: Sequence) -> list:
    """A non-empty list of detectors, else ArgumentError."""
    detectors = list(detectors or [])
    if not detectors:
        raise ArgumentError("detectors must name at least one detector")
    return detectors
