"""demo bcdi follows a calibrated drift only when Student's t says it is not noise."""

import numpy as np
import pytest
from scipy.stats import linregress

from braggscope.app.demo import _significant_drift
from braggscope.core.eccentricity import EccentricityModel, fit_eccentricity

ETA = np.linspace(20.0, 20.08, 5)  # the demo's 5 angles over 0.08 deg
NOISE = np.array([0.02, -0.03, 0.01, 0.03, -0.03])  # um, a fixed scatter


def _fitted(t_x, t_y=0.5):
    """A fitted model whose x and y slopes are t_x and t_y standard errors (scipy's linregress)."""
    err = linregress(ETA, NOISE).stderr  # the slope's standard error for this scatter
    x = NOISE + t_x * err * (ETA - ETA[0])
    y = NOISE[::-1] + t_y * linregress(ETA, NOISE[::-1]).stderr * (ETA - ETA[0])
    model = fit_eccentricity(ETA, x, y, quadratic=False)
    model.extra["eta"] = list(ETA)
    return model


def test_three_sigma_with_three_degrees_of_freedom_is_noise():
    configured = EccentricityModel(eta0=20.0, x=(0.25, 0.0), y=(-0.1, 0.0))
    fitted = _fitted(3.2)  # what the weak LMNO particle gave: 2.6 +- 0.8 um/deg
    kept = _significant_drift(fitted, configured)
    assert kept.x[0] == configured.x[0] and kept.y[0] == configured.y[0]


def test_a_clear_drift_is_followed():
    configured = EccentricityModel(eta0=20.0, x=(0.0, 0.0), y=(0.0, 0.0))
    fitted = _fitted(12.0)  # t(0.995, 3) = 5.84 < 12
    kept = _significant_drift(fitted, configured)
    assert kept.x[0] == pytest.approx(fitted.x[0])
    assert kept.y[0] == 0.0  # y stays insignificant
