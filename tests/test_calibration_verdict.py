"""The calibration's verdict (braggscope.core.calibration) on synthetic fits with a known truth.

References: Student's t critical values from printed tables, least-squares standard errors
from scipy's ``linregress``, drifts in closed form; never the module's own output.
"""

import copy
import pickle

import numpy as np
import pytest
from scipy.stats import linregress

from braggscope.core.calibration import calibration_verdict, judge_calibration, significant_drift
from braggscope.core.eccentricity import EccentricityModel, fit_eccentricity

ETA = np.linspace(20.0, 20.08, 5)  # the demo's 5 angles over 0.08 deg
NOISE = np.array([0.02, -0.03, 0.01, 0.03, -0.03])  # um, a fixed scatter
T_99_DOF3 = 5.841  # two-sided 99 % Student's t, 3 degrees of freedom (printed tables)


def _flat(noise):
    """The scatter with its own least-squares line removed (same residuals, zero slope)."""
    lr = linregress(ETA, noise)
    return noise - (lr.intercept + lr.slope * ETA)


def _fitted(t_x, t_y=0.5):
    """A linear fit whose x and y slopes are exactly t_x and t_y standard errors (scipy's linregress)."""
    nx, ny = _flat(NOISE), _flat(NOISE[::-1])
    x = nx + t_x * linregress(ETA, nx).stderr * (ETA - ETA[0])
    y = ny + t_y * linregress(ETA, ny).stderr * (ETA - ETA[0])
    return fit_eccentricity(ETA, x, y, quadratic=False)


def test_fit_standard_errors_match_linregress():
    x = NOISE + 0.7 * (ETA - ETA[0])
    fitted = fit_eccentricity(ETA, x, NOISE, quadratic=False)
    ref = linregress(ETA, x)
    assert fitted.x[0] == pytest.approx(ref.slope, rel=1e-9)
    assert fitted.extra["x_slope_stderr_um_per_deg"] == pytest.approx(ref.stderr, rel=1e-9)
    assert fitted.extra["dof"] == 3


def test_three_sigma_with_three_degrees_of_freedom_is_noise():
    configured = EccentricityModel(eta0=20.0, x=(0.25, 0.0), y=(-0.1, 0.0))
    fitted = _fitted(3.2)  # what the weak LMNO particle gave: 2.6 +- 0.8 um/deg
    kept, significant, limit = significant_drift(fitted, configured)
    assert limit == pytest.approx(T_99_DOF3, abs=1e-3)
    assert significant == {"x": False, "y": False}
    assert kept.x == configured.x and kept.y == configured.y


def test_a_clear_drift_is_followed():
    fitted = _fitted(12.0)  # 12 > 5.84
    kept, significant, _ = significant_drift(fitted, EccentricityModel())
    assert significant == {"x": True, "y": False}
    assert kept.x[0] == pytest.approx(fitted.x[0]) and kept.y == (0.0, 0.0)
    # just either side of the table value
    assert significant_drift(_fitted(T_99_DOF3 + 0.05), None)[1]["x"]
    assert not significant_drift(_fitted(T_99_DOF3 - 0.05), None)[1]["x"]


def test_an_insignificant_axis_keeps_the_configured_drift_exactly():
    """The fallback is re-referenced at the fit's eta0: its drift between any two angles is unchanged."""
    configured = EccentricityModel(eta0=9.0, x=(0.08, 0.004), y=(-0.05, 0.01))
    kept, _, _ = significant_drift(_fitted(1.0, 1.0), configured)
    assert kept.eta0 == pytest.approx(ETA[0])
    a, b = 17.0, 23.5
    for axis in (0, 1):
        want = configured.offset(b)[axis] - configured.offset(a)[axis]
        assert kept.offset(b)[axis] - kept.offset(a)[axis] == pytest.approx(want, rel=1e-12)


def _synthetic(truth, eta, noise_um, seed=0):
    rng = np.random.default_rng(seed)
    dx, dy = truth.offset(eta)
    return fit_eccentricity(eta, 30 + dx + rng.normal(0, noise_um, eta.size),
                            40 + dy + rng.normal(0, noise_um, eta.size), quadratic=False)


def test_accepted_fluorescence_fit_gives_the_true_drift():
    truth = EccentricityModel(eta0=15.0, x=(0.5, 0.0), y=(-0.3, 0.0))
    eta = np.linspace(12.0, 18.0, 9)
    fitted = _synthetic(truth, eta, 0.01)
    result = judge_calibration(fitted, pixel_um=0.3, etas=[14.3, 15.7], signal="fluorescence",
                               mosaic_fraction=0.8, map_total_variation=0.05, eta=eta)
    assert result.accepted and result.reason == "accepted", result.reason
    assert result.significant == {"x": True, "y": True}
    fine = np.linspace(14.3, 15.7, 11)
    rel = np.stack(result.use.offset(fine)) - np.stack(result.use.offset(fine[0]))[:, None]
    rel_true = np.stack(truth.offset(fine)) - np.stack(truth.offset(fine[0]))[:, None]
    assert np.abs(rel - rel_true).max() < 0.01
    assert result.position_um == pytest.approx((30 + truth.offset(12.0)[0], 40 + truth.offset(12.0)[1]), abs=0.02)
    assert result.use.extra["signal"] == "fluorescence"
    assert "ACCEPTED" in result.verdict() and "ACCEPTED" in str(result)
    assert result.to_dict()["accepted"] is True


@pytest.mark.parametrize("signal, mosaic, variation, match", [
    ("diffraction", 0.7, 0.9, "mosaic fraction 0.70"),
    ("fluorescence", 0.7, 0.9, "fluorescence map totals vary"),
    ("fluorescence", 0.0, float("nan"), "fluorescence map totals vary"),
])
def test_rejected_when_the_located_crystal_is_not_the_crystal(signal, mosaic, variation, match):
    truth = EccentricityModel(eta0=9.0, x=(3.4, 0.0), y=(0.0, 0.0))
    fitted = _synthetic(truth, np.linspace(8.3, 9.7, 7), 0.005)
    configured = EccentricityModel(eta0=9.0, x=(0.1, 0.0), y=(0.0, 0.0))
    result = judge_calibration(fitted, pixel_um=0.3, etas=[8.3, 9.7], signal=signal, mosaic_fraction=mosaic,
                               map_total_variation=variation, fallback=configured)
    assert not result.accepted and match in result.reason
    assert result.use == configured  # rejected: the configured model, unchanged
    assert result.verdict().startswith("REJECTED")


def test_rejected_for_scatter_or_an_uncertain_drift():
    truth = EccentricityModel(eta0=9.0, x=(0.5, 0.0), y=(0.2, 0.0))
    noisy = _synthetic(truth, np.linspace(8.0, 10.0, 7), 0.4)  # rms ~0.4 um > half of a 0.3 um pixel
    ok, why = calibration_verdict(noisy, pixel_um=0.3, etas=[8.0, 10.0], mosaic_fraction=0.1)
    assert not ok and "rms residual" in why
    # a fit over 0.08 deg with 0.02 um scatter, used over +-3 deg: the slope's standard error
    # (linregress) times the half-span exceeds half a pixel although the residual is small
    fitted = _fitted(12.0)
    spread = linregress(ETA, _flat(NOISE)).stderr * 3.0
    assert spread > 0.15
    ok, why = calibration_verdict(fitted, pixel_um=0.3, etas=[17.0, 23.0], mosaic_fraction=0.1)
    assert not ok and "drift uncertainty" in why
    ok, why = calibration_verdict(fitted, pixel_um=0.3, etas=[20.0, 20.08], mosaic_fraction=0.1)
    assert ok, why


def test_eccentricity_model_is_immutable_and_refuses_nan():
    model = fit_eccentricity(ETA, NOISE, NOISE, quadratic=False)
    with pytest.raises(TypeError, match="read-only"):
        model.extra["signal"] = "x"
    with pytest.raises(TypeError, match="read-only"):
        model.extra.update(signal="x")
    with pytest.raises(AttributeError):
        model.x = (1.0, 0.0)
    tagged = model.with_extra(signal="fluorescence")
    assert tagged.extra["signal"] == "fluorescence" and "signal" not in model.extra
    assert copy.deepcopy(tagged) == tagged and pickle.loads(pickle.dumps(tagged)).extra == tagged.extra
    with pytest.raises(ValueError, match=r"x\[0\] must be finite, got nan"):
        EccentricityModel(x=(float("nan"), 0.0))
    with pytest.raises(ValueError, match=r"^eccentricity: y\[1\] must be finite, got inf"):
        EccentricityModel.coerce({"eta0": 0.0, "x": [0.0, 0.0], "y": [0.0, float("inf")]})
    with pytest.raises(ValueError, match=r"initial: unknown key\(s\) \['x0'\]"):
        EccentricityModel.coerce({"x0": [1.0, 0.0]}, "initial")
    assert EccentricityModel.coerce(None) == EccentricityModel()


def test_quadratic_fit_drift_is_judged_jointly_by_the_f_test():
    """A clear 0.6 um drift over 0.1 deg with a quadratic fit (5 angles, 2 dof): the linear and
    quadratic coefficients are each insignificant (correlated over the short span), the drift is not."""
    from scipy.stats import f as fisher_f
    from scipy.stats import t as student_t

    eta = np.linspace(21.32, 21.42, 5)
    noise = np.array([0.03, -0.02, 0.0, 0.025, -0.03])
    y = 50.0 - 6.0 * (eta - eta[0]) + noise
    fitted = fit_eccentricity(eta, 30.0 + noise[::-1], y, quadratic=True)
    # independent reference: numpy's polynomial fit, its covariance, and the F statistic by hand
    coef, cov = np.polyfit(eta - eta[0], y, 2, cov="unscaled")
    rss = np.sum((np.polyval(coef, eta - eta[0]) - y) ** 2)
    tss = np.sum((y - y.mean()) ** 2)
    dof = 2
    t_linear = abs(coef[1]) / np.sqrt(cov[1, 1] * rss / dof)
    assert t_linear < student_t.ppf(0.995, dof)  # one coefficient at a time: "no drift"
    f_stat = ((tss - rss) / 2) / (rss / dof)
    assert f_stat > fisher_f.ppf(0.99, 2, dof)  # jointly: a drift
    _, significant, limit = significant_drift(fitted, None)
    assert significant["y"] and limit == pytest.approx(np.sqrt(fisher_f.ppf(0.99, 2, dof)))


def test_the_session_prints_the_result_when_the_plan_ends(capsys):
    from braggscope.app.session.namespace import printing_result

    result = judge_calibration(_fitted(12.0), pixel_um=0.3, etas=ETA, mosaic_fraction=0.1)

    def plan():
        yield from ()
        return result

    wrapped = printing_result(plan)()
    with pytest.raises(StopIteration) as done:
        next(wrapped)
    assert done.value.value is result
    assert capsys.readouterr().out.startswith("eccentricity calibration: ACCEPTED")
