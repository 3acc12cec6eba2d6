"""Plan arguments: rejected before the first message; trajectories and dry runs by closed forms."""

import numpy as np
import pytest

from braggscope.core.eccentricity import EccentricityModel
from braggscope.core.errors import ArgumentError
from braggscope.plans import bcdi_angles, bcdi_rocking, dry_run, sxdm_map, sxdm_points
from braggscope.simulators.inprocess import HDF5ImageDetector, LimitedSynAxis

# the paper's BCDI set-up (Methods): 13 keV, 55 um pixels at 1.4 m (the detector's configuration),
# 800 nm LMNO 004 (a = 8.17 A)
PAPER = dict(energy=13.0, size_m=800e-9, d_spacing=8.17 / 4)


@pytest.fixture()
def devs(tmp_path):
    motors = {n: LimitedSynAxis(name=n, limits=lim) for n, lim in
              (("pix", (0, 100)), ("piy", (0, 100)), ("eta", (-5, 120)))}
    det = HDF5ImageDetector(render=lambda: np.zeros((4, 4), np.uint32), write_dir=tmp_path, shape=(4, 4),
                            distance_m=1.4, pixel_m=55e-6)
    return motors, det


def first_message(plan):
    return next(iter(plan))


@pytest.mark.parametrize("kwargs, needle", [
    (dict(x_range=(10, 10, 5)), "x_range is empty"),
    (dict(x_range=(10, 20, 0)), "x_range num must be an integer >= 1"),
    (dict(y_range=(10, 20)), "y_range must be (start, stop, num)"),
    (dict(etas=[]), "etas must be a non-empty"),
    (dict(x_range=(90, 101, 5)), "outside its limits [0, 100]"),
    (dict(etas=[10, 130]), "etas needs eta from 10 to 130, outside its limits [-5, 120]"),
    (dict(eccentricity=EccentricityModel(eta0=0, x=(20.0, 0.0))), "x_range (+ eccentricity offsets)"),
])
def test_sxdm_map_rejects_before_any_message(devs, kwargs, needle):
    motors, det = devs
    args = dict(x_range=(40, 60, 5), y_range=(40, 60, 4), etas=[8, 9, 10])
    args.update(kwargs)
    plan = sxdm_map([det], motors["pix"], args.pop("x_range"), motors["piy"], args.pop("y_range"),
                    motors["eta"], args.pop("etas"), **args)
    with pytest.raises(ArgumentError) as err:
        first_message(plan)
    assert needle in str(err.value)
    assert motors["pix"].position == 0 and motors["eta"].position == 0


def test_sxdm_points_order_and_correction():
    model = EccentricityModel(eta0=9.0, x=(0.5, 0.02), y=(-0.3, 0.0))
    etas = [8.0, 9.0, 10.5]
    eta, y, x = sxdm_points((0, 4, 5), (10, 12, 3), etas, eccentricity=model, snake=True)
    assert eta.shape == (45,)
    # closed form of the drift at each angle
    for i, e in enumerate(etas):
        dx = 0.5 * (e - 9) + 0.02 * (e - 9) ** 2
        dy = -0.3 * (e - 9)
        block = slice(15 * i, 15 * (i + 1))
        np.testing.assert_allclose(eta[block], e)
        np.testing.assert_allclose(x[block][:5], np.array([0, 1, 2, 3, 4]) + dx)      # row 0 forward
        np.testing.assert_allclose(x[block][5:10], np.array([4, 3, 2, 1, 0]) + dx)    # row 1 backward
        np.testing.assert_allclose(y[block][5:10], 11 + dy)
    _, _, x_plain = sxdm_points((0, 4, 5), (10, 12, 3), etas, snake=False)
    np.testing.assert_allclose(x_plain[5:10], [0, 1, 2, 3, 4])


def test_bcdi_step_from_size_matches_paper():
    etas = bcdi_angles(20.0, d_spacing=PAPER["d_spacing"], size_m=PAPER["size_m"], oversampling=2.0,
                       eta_range=0.4)
    step = etas[1] - etas[0]
    # sigma_rock = d / (size * d_eta) = 2  =>  d_eta = d / (2 size) rad; the paper: <= 0.0073 deg, >= 55 frames
    assert step == pytest.approx(np.degrees(2.0425e-10 / (2 * 800e-9)), rel=1e-9)
    assert step == pytest.approx(0.0073, abs=5e-5)
    assert len(etas) >= 55
    assert etas.mean() == pytest.approx(20.0)


def test_bcdi_refuses_undersampled_step_before_motion(devs):
    motors, det = devs
    plan = bcdi_rocking([det], motors["eta"], 20.0, step_deg=0.01, **PAPER)
    with pytest.raises(ArgumentError) as err:
        first_message(plan)
    msg = str(err.value)
    assert "step_deg" in msg and "0 < step_deg <= 0.0073" in msg
    assert motors["eta"].position == 0
    # explicitly allowed
    plan = bcdi_rocking([det], motors["eta"], 20.0, step_deg=0.01, allow_undersampling=True, **PAPER)
    assert first_message(plan) is not None


def test_bcdi_refuses_short_distance(devs):
    motors, det = devs
    det.distance_m.put(0.9)  # sigma_det = 3.03 * 0.9 / 1.4 = 1.95
    with pytest.raises(ArgumentError) as err:
        first_message(bcdi_rocking([det], motors["eta"], 20.0, **PAPER))
    lam = 12.398419843320026 / 13.0 * 1e-10
    d_min = 2 * 55e-6 * 800e-9 / lam
    assert "distance_m" in str(err.value) and f"distance_m >= {d_min:.4g} m" in str(err.value)


def test_bcdi_refuses_out_of_limits(devs):
    motors, det = devs
    with pytest.raises(ArgumentError, match="eta range"):
        first_message(bcdi_rocking([det], motors["eta"], 119.9, eta_range=0.4, **PAPER))


def test_dry_run_counts_limits_and_time(devs):
    motors, det = devs
    for m in motors.values():
        m.velocity.put(2.0)  # units per second
    det.acquire_time.put(0.1)
    summary = dry_run(sxdm_map([det], motors["pix"], (10, 20, 6), motors["piy"], (30, 40, 3),
                               motors["eta"], [1.0, 2.0]), overhead_s=0.05,
                      start_positions={"pix": 10, "piy": 30, "eta": 1.0})
    assert summary.ok and summary.points == 36 and summary.runs == 1
    assert summary.moves["pix"] == (10, 20) and summary.moves["eta"] == (1.0, 2.0)
    # closed form: snake rows need one 2 um x step per point within a row (5 per row, 1 s at 2 um/s),
    # y steps of 5 um (2.5 s) between rows, and at the eta change eta 1 deg (0.5 s), y back 10 um (5 s),
    # x unchanged (row 2 ends at x = 10 and a new eta starts at x = 10)
    per_eta = 3 * 5 * 1.0 + 2 * 2.5
    expected = 2 * per_eta + 5.0 + 36 * (0.1 + 0.05)
    assert summary.duration_s == pytest.approx(expected, rel=1e-9)
    assert "36 points" in str(summary)


def test_dry_run_reports_limit_violations(devs):
    motors, det = devs
    # a hand-made plan that leaves the limits (sxdm_map itself would refuse first)
    import bluesky.plans as bp
    summary = dry_run(bp.scan([det], motors["pix"], 90, 110, 3))
    assert not summary.ok and "pix -> 110 outside limits [0, 100]" in summary.violations[0]
    with pytest.raises(ArgumentError, match="plan leaves the motor limits"):
        dry_run(bp.scan([det], motors["pix"], 90, 110, 3), raise_on_violation=True)
    assert motors["pix"].position == 0


def test_start_document_names_the_diffraction_detector():
    from braggscope.plans.metadata import main_detector

    class Counter:
        name, bragg_independent = "xrf", True

    class Camera:
        name = "mpx1x4"

    assert main_detector([Counter(), Camera()]) == "mpx1x4"  # the area detector, wherever it is listed
    assert main_detector([Counter()]) == "xrf"              # a fluorescence-only calibration run
