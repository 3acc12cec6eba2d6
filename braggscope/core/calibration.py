"""Whether an eccentricity calibration can be used: the verdict lives with the measurement.

A fitted drift (:func:`braggscope.core.eccentricity.fit_eccentricity`) is only
the goniometer's drift when the located crystal is the whole crystal (not a
diffracting region sweeping across a mosaic crystal), when the fit describes
the measured positions to within the map pixel, and when its coefficients are
known well enough over the angles it will be used at. And a drift that does not
differ significantly from zero is position noise: following it would move the
crystal out of the beam. :func:`judge_calibration` applies these criteria and
returns a :class:`CalibrationResult` that says what to use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .eccentricity import EccentricityModel

__all__ = ["CalibrationResult", "judge_calibration", "calibration_verdict", "significant_drift",
           "DRIFT_CONFIDENCE", "MAX_MOSAIC_FRACTION", "MAX_MAP_TOTAL_VARIATION"]

#: Two-sided confidence at which a fitted drift coefficient must differ from zero to be followed.
DRIFT_CONFIDENCE = 0.99
#: Above this mosaic fraction a diffraction calibration follows the diffracting region, not the drift.
MAX_MOSAIC_FRACTION = 0.4
#: Above this relative spread of the maps' totals a fluorescence calibration lost the particle.
MAX_MAP_TOTAL_VARIATION = 0.2


@dataclass(frozen=True)
class CalibrationResult:
    """An eccentricity calibration, its diagnostics and whether to use it.

    Built by :func:`judge_calibration`; the plan result of
    :func:`braggscope.plans.calibrate_eccentricity`. ``print(result)`` gives a
    short report, ``result.verdict()`` one line.

    Attributes
    ----------
    fitted : EccentricityModel
        The least-squares drift, zero at ``fitted.eta0`` (``extra``: fit statistics).
    use : EccentricityModel
        The model to apply. Accepted: ``fitted`` with every axis whose drift is
        not significant replaced by the fallback's drift (re-referenced at
        ``fitted.eta0``); its ``extra`` adds ``signal``, ``intensity_field``,
        ``locate`` and the ``significant`` axes to the fit statistics.
        Rejected: the fallback model, unchanged.
    accepted : bool
    reason : str
        ``"accepted"`` or why the fit cannot be the goniometer's drift.
    signal : str
        ``"fluorescence"`` (a Bragg-independent detector) or ``"diffraction"``.
    significant : mapping of str to bool
        Per axis (``"x"``, ``"y"``): does the fitted drift differ from zero?
    t_limit : float
        The drift statistic an axis needed at ``confidence``: Student's
        ``|slope| / standard error`` for a line, ``sqrt(F)`` with the
        quadratic term (see :func:`significant_drift`).
    confidence : float
    stderr : mapping of str to (float, float)
        Per axis: standard errors of the linear (um/deg) and quadratic
        (um/deg^2, 0 when not fitted) coefficients.
    rms_residual_um : float
    mosaic_fraction : float
        See :func:`braggscope.plans.calibrate.mosaic_fraction`; NaN when unknown.
    map_total_variation : float
        Relative spread of the coarse maps' totals; NaN when unknown.
    tolerance_um : float
        Half the map pixel the correction must hold to.
    position_um : (float, float)
        Fitted crystal position (x, y) at ``fitted.eta0``, micrometres.
    eta, x_um, y_um : tuple of float
        Angles (deg) where the crystal was found and its measured positions (um).
    eta_not_found : tuple of float
        Angles whose map held no signal.
    intensity_field, locate : str
        The event field used and how the crystal was located.
    """

    fitted: EccentricityModel
    use: EccentricityModel
    accepted: bool
    reason: str
    signal: str
    significant: Mapping
    t_limit: float
    confidence: float
    stderr: Mapping
    rms_residual_um: float
    mosaic_fraction: float
    map_total_variation: float
    tolerance_um: float
    position_um: tuple[float, float]
    eta: tuple[float, ...] = ()
    x_um: tuple[float, ...] = ()
    y_um: tuple[float, ...] = ()
    eta_not_found: tuple[float, ...] = ()
    intensity_field: str = ""
    locate: str = "com"

    def verdict(self) -> str:
        """One line: accepted or rejected, why, and which model is used."""
        if not self.accepted:
            return f"REJECTED: {self.reason}; keep the configured model (result.use)"
        kept = [a for a in ("x", "y") if self.significant[a]]
        dropped = [a for a in ("x", "y") if not self.significant[a]]
        line = f"ACCEPTED ({self.signal}, rms residual {self.rms_residual_um:.3g} um <= {self.tolerance_um:.3g} um)"
        if dropped:
            line += (f"; drift in {', '.join(dropped)} not significant at {self.confidence:.0%} "
                     f"(below {self.t_limit:.2f} standard errors): the configured drift is kept there")
        if kept:
            line += f"; following the fitted drift in {', '.join(kept)} (result.use)"
        return line

    def __str__(self) -> str:
        f = self.fitted
        lines = [f"eccentricity calibration: {self.verdict()}"]
        for axis in ("x", "y"):
            (lin, quad), (e1, e2) = getattr(f, axis), self.stderr[axis]
            curvature = f", {quad:+.3g} +- {e2:.2g} um/deg^2" if (quad or e2) else ""
            lines.append(f"  {axis}: {lin:+.4g} +- {e1:.2g} um/deg{curvature}"
                         f" ({'significant' if self.significant[axis] else 'not significant'})")
        lines.append(f"  eta0 {f.eta0:.4f} deg, crystal at ({self.position_um[0]:.3f}, {self.position_um[1]:.3f}) um;"
                     f" found at {len(self.eta)} angles, not at {len(self.eta_not_found)}")
        lines.append(f"  mosaic fraction {self.mosaic_fraction:.2f}, map total variation "
                     f"{self.map_total_variation:.3f}, field {self.intensity_field or '?'}, locate {self.locate}")
        u = self.use
        lines.append(f"  use: eta0 {u.eta0:.4f} deg, x ({u.x[0]:+.4g}, {u.x[1]:+.3g}), "
                     f"y ({u.y[0]:+.4g}, {u.y[1]:+.3g})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready summary (models as :meth:`EccentricityModel.to_dict`)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("fitted", "use")}
        out["fitted"], out["use"] = self.fitted.to_dict(), self.use.to_dict()
        out["significant"], out["stderr"] = dict(self.significant), {k: list(v) for k, v in self.stderr.items()}
        for key in ("position_um", "eta", "x_um", "y_um", "eta_not_found"):
            out[key] = list(out[key])
        out["verdict"] = self.verdict()
        return out


def judge_calibration(fitted: EccentricityModel, *, pixel_um: float, etas: Sequence[float],
                      signal: str = "diffraction", mosaic_fraction: float = float("nan"),
                      map_total_variation: float = float("nan"), fallback=None,
                      confidence: float = DRIFT_CONFIDENCE, max_mosaic: float = MAX_MOSAIC_FRACTION,
                      max_variation: float = MAX_MAP_TOTAL_VARIATION, **measured) -> CalibrationResult:
    """Decide whether a fitted drift is the goniometer's, and which model to use.

    Parameters
    ----------
    fitted : EccentricityModel
        From :func:`fit_eccentricity` (its ``extra`` holds the fit statistics).
    pixel_um : float
        Pixel (um) of the maps the correction is for: the residual and the
        drift's uncertainty over ``etas`` must stay within half of it.
    etas : sequence of float
        Angles (deg) at which the correction will be used.
    signal, mosaic_fraction, map_total_variation
        Diagnostics of the coarse maps (see :func:`calibration_verdict`).
    fallback : EccentricityModel, dict or None
        The model to keep where the fit is not trusted (the configured one).
    confidence : float
        Of the significance test (:func:`significant_drift`).
    max_mosaic, max_variation : float
        Thresholds of :func:`calibration_verdict`.
    **measured
        ``eta``, ``x_um``, ``y_um``, ``eta_not_found``, ``intensity_field``,
        ``locate``: recorded in the result.

    Returns
    -------
    CalibrationResult
    """
    fallback = EccentricityModel.coerce(fallback, "fallback")
    accepted, reason = calibration_verdict(fitted, pixel_um=pixel_um, etas=etas, signal=signal,
                                           mosaic_fraction=mosaic_fraction,
                                           map_total_variation=map_total_variation,
                                           max_mosaic=max_mosaic, max_variation=max_variation)
    followed, significant, limit = significant_drift(fitted, fallback, confidence=confidence)
    # provenance, recorded with the model in the start documents of the runs that follow it
    followed = followed.with_extra(signal=signal, intensity_field=str(measured.get("intensity_field") or ""),
                                   locate=str(measured.get("locate", "com")),
                                   significant=[a for a in ("x", "y") if significant[a]])
    ex = fitted.extra
    return CalibrationResult(
        fitted=fitted, use=followed if accepted else fallback, accepted=accepted, reason=reason, signal=signal,
        significant=significant, t_limit=limit, confidence=confidence, stderr=_stderrs(fitted),
        rms_residual_um=float(ex.get("rms_residual_um", float("nan"))), mosaic_fraction=float(mosaic_fraction),
        map_total_variation=float(map_total_variation), tolerance_um=float(pixel_um) / 2,
        position_um=(float(ex.get("x_at_eta0", 0.0)), float(ex.get("y_at_eta0", 0.0))),
        eta=tuple(float(v) for v in measured.get("eta", ())), x_um=tuple(float(v) for v in measured.get("x_um", ())),
        y_um=tuple(float(v) for v in measured.get("y_um", ())),
        eta_not_found=tuple(float(v) for v in measured.get("eta_not_found", ())),
        intensity_field=str(measured.get("intensity_field") or ""), locate=str(measured.get("locate", "com")))


def calibration_verdict(fitted: EccentricityModel, *, pixel_um: float, etas: Sequence[float],
                        signal: str = "diffraction", mosaic_fraction: float = float("nan"),
                        map_total_variation: float = float("nan"), max_mosaic: float = MAX_MOSAIC_FRACTION,
                        max_variation: float = MAX_MAP_TOTAL_VARIATION) -> tuple[bool, str]:
    """Accept a fitted drift only if it can be the goniometer's: ``(accepted, reason)``.

    Located by diffraction: rejected when the crystal is mosaic
    (``mosaic_fraction > max_mosaic``: the located position follows the
    diffracting region, which sweeps across the crystal with eta, as well as
    the drift). Located by fluorescence (the whole particle at every eta, so
    mosaicity does not matter): rejected when the maps' totals change with
    eta by more than ``max_variation`` (the particle left some maps, or the
    signal depends on the Bragg condition after all); NaN counts as a change.
    Either way rejected when the rms residual exceeds half a map pixel
    (``pixel_um / 2``), or when the coefficients' standard errors make the
    drift uncertain by more than half a map pixel over ``etas``
    (``se_linear * h + se_quadratic * h**2``, ``h`` the half-span of
    ``etas``).
    """
    ex = fitted.extra
    half = float(pixel_um) / 2
    h = (max(etas) - min(etas)) / 2
    se = _stderrs(fitted)
    spread = max(e1 * h + e2 * h * h for e1, e2 in se.values())
    if signal == "fluorescence":
        if not map_total_variation <= max_variation:
            return False, (f"fluorescence map totals vary by {map_total_variation:.2f} (> {max_variation}) with eta:"
                           " the particle is not inside every coarse map, or the signal depends on the Bragg "
                           "condition")
    elif mosaic_fraction > max_mosaic:
        return False, (f"mosaic fraction {mosaic_fraction:.2f} > {max_mosaic}: different regions diffract at "
                       "different eta, so the located crystal moves with the diffracting region as well as with "
                       "the drift")
    rms = float(ex.get("rms_residual_um", float("nan")))
    if not rms <= half:
        return False, f"rms residual {rms:.3f} um > half a map pixel ({half:.3f} um)"
    if not spread <= half:
        return False, f"drift uncertainty {spread:.3f} um across the angles > half a map pixel ({half:.3f} um)"
    return True, "accepted"


def significant_drift(fitted: EccentricityModel, fallback=None, *, confidence: float = DRIFT_CONFIDENCE):
    """Keep the fitted drift only on the axes where it differs from zero at ``confidence``.

    A weak crystal is visible over a few hundredths of a degree only, so a
    fitted drift can be position noise, and following it would move the
    crystal out of the beam. The test, per axis, is the F test of the drift
    coefficients against a crystal that does not move: ``F = ((TSS - RSS) /
    p) / (RSS / dof)`` with ``p`` drift coefficients (1 for a line, 2 with the
    quadratic term), ``TSS`` the scatter of the positions about their mean and
    ``RSS`` the fit's residual. The statistic reported is ``sqrt(F)``, which
    for a line is exactly Student's ``|slope| / standard error``; the limit
    is ``sqrt`` of the F distribution's ``confidence`` quantile (for a line,
    the two-sided Student's t: with 5 angles, 3 degrees of freedom, where
    99 % needs 5.84 standard errors, not 3). Testing the two coefficients of
    a quadratic fit one by one would miss a clear drift, because they are
    strongly correlated over a short span. An insignificant axis takes the
    fallback's drift, re-referenced at ``fitted.eta0``.

    Returns
    -------
    model : EccentricityModel
    significant : dict
        ``{"x": bool, "y": bool}``.
    limit : float
        The ``sqrt(F)`` (``|t|`` for a line) a drift needed; infinite with no
        degree of freedom.
    """
    from scipy.stats import f as fisher_f

    fallback = EccentricityModel.coerce(fallback, "fallback").referenced_at(fitted.eta0)
    dof = int(fitted.extra.get("dof", 0))
    n_coef = 2 if any(f"{a}_curvature_stderr_um_per_deg2" in fitted.extra for a in ("x", "y")) else 1
    limit = float(np.sqrt(fisher_f.ppf(confidence, n_coef, dof))) if dof > 0 else float("inf")
    significant, axes = {}, {}
    for axis in ("x", "y"):
        significant[axis] = bool(_drift_statistic(fitted, axis, n_coef, dof) > limit)
        axes[axis] = getattr(fitted, axis) if significant[axis] else getattr(fallback, axis)
    model = EccentricityModel(fitted.eta0, axes["x"], axes["y"], extra=fitted.extra)
    return model, significant, limit


def _drift_statistic(fitted: EccentricityModel, axis: str, n_coef: int, dof: int) -> float:
    """``sqrt(F)`` of one axis's drift (``|slope| / stderr`` for a line); 0 without the sums of squares."""
    ex = fitted.extra
    rss, tss = ex.get(f"{axis}_rss_um2"), ex.get(f"{axis}_tss_um2")
    if rss is None or tss is None or dof <= 0:
        return 0.0
    explained = max(float(tss) - float(rss), 0.0) / n_coef
    if rss <= 0:
        return float("inf") if explained > 0 else 0.0
    return float(np.sqrt(explained / (float(rss) / dof)))


def _stderrs(fitted: EccentricityModel) -> dict:
    """Per axis: (linear, quadratic) standard errors from ``fit_eccentricity``'s ``extra``."""
    ex = fitted.extra
    return {axis: (float(ex.get(f"{axis}_slope_stderr_um_per_deg", float("inf"))),
                   float(ex.get(f"{axis}_curvature_stderr_um_per_deg2", 0.0)))
            for axis in ("x", "y")}
