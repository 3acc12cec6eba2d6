"""Every plan argument is validated before any message: NaN, infinities, misspelt fields.

The plans run on a RunEngine whose ``msg_hook`` records every message, with in-process
motors that would move; a refused argument must leave the message list empty (no
``open_run``, ``set`` or ``trigger``) and the motors where they were, and the error must
name the argument.
"""

import math

import numpy as np
import pytest
from bluesky import RunEngine

from braggscope.core.errors import ArgumentError
from braggscope.plans import bcdi_rocking, calibrate_eccentricity, sxdm_map
from braggscope.plans.checks import check_within_limits
from braggscope.simulators.inprocess import CountingDetector, HDF5ImageDetector, LimitedSynAxis

NAN, INF = float("nan"), float("inf")
# the paper's BCDI set-up: 13 keV, 55 um pixels at 1.4 m (the detector's configuration), an 800 nm crystal,
# LMNO 004
BCDI = dict(size_m=800e-9, d_spacing=8.17 / 4, energy=13.0, eta_range=0.05)


@pytest.fixture()
def bench(tmp_path):
    motors = {n: LimitedSynAxis(name=n, limits=lim) for n, lim in
              (("pix", (0, 100)), ("piy", (0, 100)), ("eta", (-5, 120)))}
    for m in motors.values():
        m.set(1.0).wait(5)
    det = HDF5ImageDetector(render=lambda: np.ones((4, 4), np.uint32), write_dir=tmp_path, shape=(4, 4),
                            distance_m=1.4, pixel_m=55e-6, cch=(2.0, 2.0))
    xrf = CountingDetector(count=lambda: 7, name="xrf")
    RE = RunEngine()
    messages = []
    RE.msg_hook = messages.append
    return motors, det, xrf, RE, messages


def _refused(bench, plan, needle):
    motors, _, _, RE, messages = bench
    with pytest.raises(ArgumentError) as err:
        RE(plan)
    assert needle in str(err.value), str(err.value)
    assert messages == [], [m.command for m in messages]
    assert all(m.position == 1.0 for m in motors.values())


def _sxdm(bench, **kw):
    motors, det, _, _, _ = bench
    args = dict(x_range=(40, 41, 3), y_range=(40, 41, 2), etas=[8, 9])
    args.update(kw)
    return sxdm_map([det], motors["pix"], args.pop("x_range"), motors["piy"], args.pop("y_range"),
                    motors["eta"], args.pop("etas"), **args)


def _bcdi(bench, **kw):
    motors, det, _, _, _ = bench
    args = dict(BCDI, x_motor=motors["pix"], x_um=50.0, y_motor=motors["piy"], y_um=50.0)
    args.update(kw)
    return bcdi_rocking([det], motors["eta"], args.pop("eta_center", 20.0), **args)


def _calibrate(bench, **kw):
    motors, det, xrf, _, _ = bench
    args = dict(x_range=(40, 42, 3), y_range=(40, 42, 3), etas=[8, 9, 10], intensity_field="xrf_counts")
    args.update(kw)
    return calibrate_eccentricity([det, xrf], motors["pix"], args.pop("x_range"), motors["piy"],
                                  args.pop("y_range"), motors["eta"], args.pop("etas"), **args)


def test_the_valid_calls_do_move(bench):
    """The baseline of every case below: without the bad value, messages flow and motors move."""
    motors, _, _, RE, messages = bench
    RE(_sxdm(bench))
    assert {"open_run", "set", "trigger"} <= {m.command for m in messages}
    assert motors["pix"].position in (40.0, 41.0)  # moved into the raster
    messages.clear()
    RE(_bcdi(bench, step_deg=0.01, allow_undersampling=True))
    assert {"open_run", "set", "trigger"} <= {m.command for m in messages}


@pytest.mark.parametrize("kw, needle", [
    (dict(x_range=(NAN, 41, 3)), "x_range start/stop must be finite"),
    (dict(x_range=(40, INF, 3)), "x_range start/stop must be finite"),
    (dict(y_range=(40, 41, NAN)), "y_range num must be an integer"),
    (dict(y_range=(40, 41, INF)), "y_range num must be an integer"),
    (dict(etas=[8, NAN]), "etas contains NaN/inf"),
    (dict(etas=[-INF, 9]), "etas contains NaN/inf"),
    (dict(eccentricity={"eta0": 9.0, "x": [NAN, 0.0], "y": [0.0, 0.0]}), "eccentricity: x[0] must be finite"),
    (dict(eccentricity={"eta0": INF}), "eccentricity: eta0 must be finite"),
    (dict(eccentricity={"eta0": 9.0, "x": [0.1, 0.0], "z": [0.0, 0.0]}), "eccentricity: unknown key(s) ['z']"),
    (dict(trigger_timeout_s=NAN), "trigger_timeout_s must be finite"),
    (dict(move_timeout_s=INF), "move_timeout_s must be finite"),
    (dict(move_timeout_s=0.0), "move_timeout_s must be > 0"),
])
def test_sxdm_map_refuses_before_any_message(bench, kw, needle):
    _refused(bench, _sxdm(bench, **kw), needle)


@pytest.mark.parametrize("name", ["eta_center", "size_m", "d_spacing", "oversampling", "step_deg", "eta_range",
                                  "n_fringes", "x_um", "y_um", "energy", "trigger_timeout_s", "move_timeout_s"])
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_bcdi_rocking_refuses_every_non_finite_number(bench, name, bad):
    _refused(bench, _bcdi(bench, **{name: bad}), name)


@pytest.mark.parametrize("coefficients", [{"x": [NAN, 0.0]}, {"y": [0.0, INF]}, {"eta0": NAN}])
def test_bcdi_rocking_refuses_nan_eccentricity(bench, coefficients):
    model = dict({"eta0": 20.0, "x": [0.1, 0.0], "y": [0.0, 0.0]}, **coefficients)
    _refused(bench, _bcdi(bench, eccentricity=model), "eccentricity:")


@pytest.mark.parametrize("kw, needle", [
    (dict(intensity_field="xrf_countz"), "intensity_field='xrf_countz' is not a field of the detectors"),
    (dict(intensity_field="mpx1x4_totl"), "intensity_field='mpx1x4_totl'"),
    (dict(etas=[8, 9, NAN]), "etas contains NaN/inf"),
    (dict(x_range=(40, NAN, 3)), "x_range start/stop must be finite"),
    (dict(map_pixel_um=NAN), "map_pixel_um must be finite"),
    (dict(map_etas=[8, INF]), "map_etas contains NaN/inf"),
    (dict(initial={"eta0": 9.0, "x": [0.1, NAN], "y": [0.0, 0.0]}), "initial: x[1] must be finite"),
    (dict(threshold=NAN), "threshold must be in [0, 1)"),
    (dict(locate="outline"), "locate must be one of"),
])
def test_calibrate_eccentricity_refuses_before_any_message(bench, kw, needle):
    _refused(bench, _calibrate(bench, **kw), needle)


def test_misspelt_field_error_lists_the_real_fields(bench):
    motors, det, xrf, RE, messages = bench
    with pytest.raises(ArgumentError) as err:
        RE(_calibrate(bench, intensity_field="xrf_countz"))
    assert "xrf_counts" in str(err.value) and "mpx1x4_total" in str(err.value)


def test_limit_check_refuses_nan_targets():
    motor = LimitedSynAxis(name="pix", limits=(0, 100))
    for low, high in ((NAN, 10.0), (10.0, NAN), (NAN, NAN), (-INF, 5.0)):
        with pytest.raises(ArgumentError, match="x_um .* not finite"):
            check_within_limits(motor, "x_um", low, high)
    unlimited = LimitedSynAxis(name="piz", limits=(0, 0))  # no soft limits: NaN is still refused
    with pytest.raises(ArgumentError, match="not finite"):
        check_within_limits(unlimited, "z", math.nan, 1.0)
