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

from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["EccentricityModel", "fit_eccentricity"]


@dataclass(frozen=True)
class EccentricityModel:
    """Linear + quadratic drift of the sample in piezo x/y with eta.

    Parameters
    ----------
    eta0 : float
        Reference rocking angle (degrees) at which the drift is zero.
    x, y : (float, float)
        Linear (um/deg) and quadratic (um/deg^2) coefficients per axis.
    """

    eta0: float = 0.0
    x: tuple[float, float] = (0.0, 0.0)
    y: tuple[float, float] = (0.0, 0.0)
    extra: dict = field(default_factory=dict, compare=False)

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
        d = asdict(self)
        d["x"], d["y"] = list(self.x), list(self.y)
        if not d["extra"]:
            d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d) -> "EccentricityModel":
        if d is None:
            return cls()
        return cls(
            eta0=float(d.get("eta0", 0.0)),
            x=tuple(float(v) for v in d.get("x", (0.0, 0.0))),
            y=tuple(float(v) for v in d.get("y", (0.0, 0.0))),
            extra=dict(d.get("extra", {})),
        )

    @property
    def is_zero(self) -> bool:
        return not any(self.x) and not any(self.y)


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
        With the fitted position at ``eta0``, the rms residual and the standard
        errors of the linear coefficients (um/deg) stored in ``extra``.
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
    # standard errors of the linear (drift) coefficients from the residual scatter:
    # with angles spanning little, a "drift" can be pure position noise
    dof = len(eta) - a.shape[1]
    cov = np.linalg.pinv(a.T @ a)
    stderr = [float(np.sqrt(cov[1, 1] * (r @ r) / dof)) if dof > 0 else float("inf") for r in (res_x, res_y)]
    qx = float(cx[2]) if quadratic else 0.0
    qy = float(cy[2]) if quadratic else 0.0
    return EccentricityModel(
        eta0=eta0,
        x=(float(cx[1]), qx),
        y=(float(cy[1]), qy),
        extra={"x_at_eta0": float(cx[0]), "y_at_eta0": float(cy[0]),
               "rms_residual_um": float(np.sqrt(np.mean(res**2))),
               "x_slope_stderr_um_per_deg": stderr[0], "y_slope_stderr_um_per_deg": stderr[1]},
    )
