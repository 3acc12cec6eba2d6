"""Eccentricity (sphere-of-confusion) drift of the sample with the rocking angle.

When the crystal is not on the eta rotation axis it moves across the piezo
frame as eta changes. Both the simulator (the truth) and the plans (a
calibrated correction) describe that drift with the same polynomial model::

    dx(eta) = x[0] * (eta - eta0) + x[1] * (eta - eta0)**2      (micrometres)
    dy(eta) = y[0] * (eta - eta0) + y[1] * (eta - eta0)**2

``dx, dy`` is where the crystal *appears* in piezo coordinates relative to
where it is at ``eta0``; a plan corrects by adding it to the raster origin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from braggscope.core.numbers import finite_float

__all__ = ["EccentricityModel", "fit_eccentricity"]


class _ReadOnlyDict(dict):
    """A dict that refuses changes (``EccentricityModel.extra``); copies and pickles as a dict."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("EccentricityModel.extra is read-only: build a new model with model.with_extra(...)")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):
        return (type(self), (dict(self),))


@dataclass(frozen=True)
class EccentricityModel:
    """Linear + quadratic drift of the sample in piezo x/y with eta (immutable).

    Parameters
    ----------
    eta0 : float
        Reference rocking angle (degrees) at which the drift is zero.
    x, y : (float, float)
        Linear (um/deg) and quadratic (um/deg^2) coefficients per axis; finite.
    extra : mapping, optional
        Read-only information about how the model was obtained (fit statistics).

    Raises
    ------
    ValueError
        A coefficient that is not a finite number, or not two per axis.
    """

    eta0: float = 0.0
    x: tuple[float, float] = (0.0, 0.0)
    y: tuple[float, float] = (0.0, 0.0)
    extra: Mapping = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "eta0", _finite("eta0", self.eta0))
        for axis in ("x", "y"):
            value = getattr(self, axis)
            try:
                pair = tuple(value)
            except TypeError:
                pair = ()
            if len(pair) != 2:
                raise ValueError(f"{axis} must be (linear um/deg, quadratic um/deg^2), got {value!r}")
            object.__setattr__(self, axis, (_finite(f"{axis}[0]", pair[0]), _finite(f"{axis}[1]", pair[1])))
        object.__setattr__(self, "extra", _ReadOnlyDict(self.extra or {}))

    def offset(self, eta):
        """Drift ``(dx, dy)`` in micrometres at rocking angle(s) ``eta`` (degrees)."""
        t = np.asarray(eta, dtype=float) - self.eta0
        dx = self.x[0] * t + self.x[1] * t**2
        dy = self.y[0] * t + self.y[1] * t**2
        if np.ndim(dx) == 0:
            return float(dx), float(dy)
        return dx, dy

    def to_dict(self) -> dict:
        """Plain-dict form for start documents and the config file."""
        d = {"eta0": self.eta0, "x": list(self.x), "y": list(self.y)}
        if self.extra:
            d["extra"] = dict(self.extra)
        return d

    def with_extra(self, **extra) -> EccentricityModel:
        """A new model with the same coefficients and ``extra`` updated by ``extra``."""
        return EccentricityModel(self.eta0, self.x, self.y, extra={**self.extra, **extra})

    def referenced_at(self, eta0: float) -> EccentricityModel:
        """The same drift with zero at ``eta0`` instead (exact: offsets differ by a constant)."""
        d = float(eta0) - self.eta0
        return EccentricityModel(float(eta0), (self.x[0] + 2 * self.x[1] * d, self.x[1]),
                                 (self.y[0] + 2 * self.y[1] * d, self.y[1]))

    @classmethod
    def from_dict(cls, d) -> EccentricityModel:
        """Model from its dict form (``to_dict``, a config ``[eccentricity]`` table); None: no drift."""
        if d is None:
            return cls()
        unknown = sorted(set(d) - {"eta0", "x", "y", "extra"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} (allowed: eta0, x, y, extra)")
        return cls(eta0=d.get("eta0", 0.0), x=d.get("x", (0.0, 0.0)), y=d.get("y", (0.0, 0.0)),
                   extra=d.get("extra") or {})

    @classmethod
    def coerce(cls, value, name: str = "eccentricity") -> EccentricityModel:
        """The one way in: an EccentricityModel, its dict form, or None (no drift).

        Raises
        ------
        ValueError
            Naming ``name`` and the bad coefficient or key (NaN and infinities included).
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            try:
                return cls.from_dict(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name}: {exc}") from None
        raise ValueError(f"{name} must be an EccentricityModel, a dict or None, got {type(value).__name__}")

    @property
    def is_zero(self) -> bool:
        return not any(self.x) and not any(self.y)


def _finite(name: str, value) -> float:
    return finite_float(value, name)


def fit_eccentricity(eta, x_um, y_um, *, eta0=None, quadratic=True) -> EccentricityModel:
    """Least-squares fit of the drift model to measured crystal positions.

    Parameters
    ----------
    eta : array_like, shape (n,)
        Rocking angles in degrees (n >= 2, or >= 3 when ``quadratic``).
    x_um, y_um : array_like, shape (n,)
        Measured crystal positions (e.g. intensity centre of mass) in micrometres.
    eta0 : float, optional
        Reference angle; defaults to the first angle. The positions at
        ``eta0`` are taken as the fitted constant term, so the model gives
        the drift relative to the crystal position at ``eta0``.
    quadratic : bool
        Fit the quadratic term too.

    Returns
    -------
    EccentricityModel
        With, in ``extra``: the fitted position at ``eta0`` (``x_at_eta0``,
        ``y_at_eta0``, um), the rms residual (um), the degrees of freedom
        ``dof`` (points - coefficients per axis), the residual and total sums
        of squares per axis (``x_rss_um2``, ``x_tss_um2``) and the standard errors of
        the linear (``x_slope_stderr_um_per_deg``) and, when ``quadratic``,
        quadratic (``x_curvature_stderr_um_per_deg2``) coefficients; infinite
        when ``dof`` is 0.
    """
    eta = np.asarray(eta, dtype=float)
    x_um = np.asarray(x_um, dtype=float)
    y_um = np.asarray(y_um, dtype=float)
    if not (eta.shape == x_um.shape == y_um.shape) or eta.ndim != 1:
        raise ValueError("eta, x_um and y_um must be 1-D arrays of the same length")
    need = 3 if quadratic else 2
    if len(np.unique(eta)) < need:
        raise ValueError(f"need at least {need} distinct eta angles to fit, got {len(np.unique(eta))}")
    if not (np.all(np.isfinite(x_um)) and np.all(np.isfinite(y_um))):
        raise ValueError("crystal positions contain NaN/inf (crystal not found at some eta?)")
    eta0 = float(eta[0]) if eta0 is None else float(eta0)
    t = eta - eta0
    cols = [np.ones_like(t), t] + ([t**2] if quadratic else [])
    a = np.stack(cols, axis=1)
    cx, *_ = np.linalg.lstsq(a, x_um, rcond=None)
    cy, *_ = np.linalg.lstsq(a, y_um, rcond=None)
    res_x, res_y = a @ cx - x_um, a @ cy - y_um
    res = np.concatenate([res_x, res_y])
    # standard errors of the drift coefficients from the residual scatter:
    # with angles spanning little, a "drift" can be pure position noise
    dof = len(eta) - a.shape[1]
    cov = np.linalg.pinv(a.T @ a)

    def stderr(r, k):
        return float(np.sqrt(cov[k, k] * (r @ r) / dof)) if dof > 0 else float("inf")

    qx = float(cx[2]) if quadratic else 0.0
    qy = float(cy[2]) if quadratic else 0.0
    extra = {"x_at_eta0": float(cx[0]), "y_at_eta0": float(cy[0]),
             "rms_residual_um": float(np.sqrt(np.mean(res**2))), "dof": int(dof),
             # sums of squares (um^2): residual, and about the mean (for the F test of the drift)
             "x_rss_um2": float(res_x @ res_x), "y_rss_um2": float(res_y @ res_y),
             "x_tss_um2": float(np.sum((x_um - x_um.mean()) ** 2)),
             "y_tss_um2": float(np.sum((y_um - y_um.mean()) ** 2)),
             "x_slope_stderr_um_per_deg": stderr(res_x, 1), "y_slope_stderr_um_per_deg": stderr(res_y, 1)}
    if quadratic:
        extra["x_curvature_stderr_um_per_deg2"] = stderr(res_x, 2)
        extra["y_curvature_stderr_um_per_deg2"] = stderr(res_y, 2)
    return EccentricityModel(eta0=eta0, x=(float(cx[1]), qx), y=(float(cy[1]), qy), extra=extra)

