"""Simulated motor records over Channel Access: motion, limits, stop, DMOV, put-completion.

Runs against the session simulator (``sim_ioc``) through ophyd's EpicsMotor and
through caproto's command-line client (a CA client that is not ours).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from ophyd.utils.errors import LimitError

pytestmark = [pytest.mark.ioc, pytest.mark.timeout(120)]


@pytest.fixture
def pix(sim_devices):
    motor = sim_devices["pix"]
    motor.velocity.set(200.0).wait(5)
    motor.move(50.0, timeout=10)
    yield motor
    motor.velocity.set(200.0).wait(5)
    motor.set_lim(0.0, 100.0)
    motor.move(50.0, timeout=10)


def _ca(command, *args, timeout=60):
    """Run a caproto CLI client with this process's CA environment.

    ``--no-repeater``: the CLI would otherwise spawn a CA repeater bound to
    0.0.0.0 that outlives the test.
    """
    return subprocess.run([command, "--no-repeater", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def test_motor_metadata(sim_devices, sim_config):
    pix, eta, energy = sim_devices["pix"], sim_devices["eta"], sim_devices["energy"]
    assert pix.egu == "um" and eta.egu == "deg" and energy.egu == "keV"
    assert pix.limits == tuple(sim_config["limits.pix"])
    assert eta.limits == tuple(sim_config["limits.eta"])
    assert energy.position == pytest.approx(sim_config["energy.energy_kev"])
    assert pix.name == "pix" and pix.user_setpoint.name == "pix_user_setpoint"
    assert sim_devices["piezo"].hints["fields"] == ["pix", "piy"]


def test_move_takes_distance_over_velocity_and_reports_dmov(pix):
    pix.velocity.set(100.0).wait(5)
    seen = []
    token = pix.motor_done_move.subscribe(lambda value, **kw: seen.append(value), run=False)
    t0 = time.monotonic()
    status = pix.set(80.0)
    time.sleep(0.1)
    mid = pix.position
    moving = pix.moving
    status.wait(10)
    elapsed = time.monotonic() - t0
    pix.motor_done_move.unsubscribe(token)
    assert 50.0 < mid < 80.0 and moving
    assert 0.27 < elapsed < 1.5          # 30 um at 100 um/s = 0.3 s
    assert pix.position == pytest.approx(80.0)
    assert pix.motor_done_move.get(use_monitor=False) == 1
    assert pix.motor_is_moving.get(use_monitor=False) == 0
    assert seen[:1] == [0] and seen[-1] == 1
    assert status.success


def test_soft_limits_refused_client_and_server_side(pix):
    with pytest.raises(LimitError):
        pix.move(150.0)
    # bypass ophyd's check: the IOC itself refuses, the motor does not move
    result = _ca("caproto-put", "-c", "--timeout", "5", "BSSIM:pix", "150")
    assert "Limits are set to 0.0 and 100.0" in result.stdout + result.stderr
    assert pix.user_readback.get(use_monitor=False) == pytest.approx(50.0)
    # limits changed at run time reach ophyd (ctrl limits of the record PV)
    pix.set_lim(0.0, 60.0)
    deadline = time.monotonic() + 5
    while pix.limits != (0.0, 60.0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pix.limits == (0.0, 60.0)
    with pytest.raises(LimitError):
        pix.move(70.0)


def test_a_move_onto_a_hardware_limit_switch_fails_and_moving_off_releases_it(pix):
    """Soft limits wider than the stage's travel: the move stops on the switch, ``.HLS`` is set before
    ``.DMOV`` returns to 1 (as the motor record posts them), and ophyd fails the move from the monitor."""
    from ophyd.utils.errors import UnknownStatusFailure

    pix.set_lim(-10.0, 110.0)
    deadline = time.monotonic() + 5
    while pix.limits != (-10.0, 110.0) and time.monotonic() < deadline:
        time.sleep(0.05)
    status = pix.set(105.0)
    with pytest.raises(UnknownStatusFailure):
        status.wait(10)
    assert pix.user_readback.get(use_monitor=False) == pytest.approx(100.0)
    assert pix.high_limit_switch.get() == 1 and pix.low_limit_switch.get() == 0
    pix.set(50.0).wait(10)  # away from the switch: released, the move succeeds
    assert pix.high_limit_switch.get() == 0
    assert pix.user_readback.get(use_monitor=False) == pytest.approx(50.0)


def test_a_finished_move_asks_the_ioc_nothing(pix, monkeypatch):
    """ophyd's EpicsMotor reads the limit switch of the direction of travel with a Channel Access round
    trip when ``.DMOV`` returns to 1; braggscope's motors take it from the switch's monitor."""
    import epics.ca

    asked = []
    get = epics.ca.get_with_metadata

    def counting(chid, *args, **kwargs):
        asked.append(epics.ca.name(chid))
        return get(chid, *args, **kwargs)

    monkeypatch.setattr(epics.ca, "get_with_metadata", counting)
    for target in (60.0, 40.0, 50.0):  # both directions of travel
        pix.set(target).wait(10)
    assert asked == []


def test_stop_halts_motion_where_it_is(pix):
    pix.velocity.set(50.0).wait(5)
    status = pix.set(100.0)
    time.sleep(0.2)
    pix.stop()
    deadline = time.monotonic() + 5
    while not status.done and time.monotonic() < deadline:   # DMOV back to 1 ends the move
        time.sleep(0.01)
    assert status.done
    stopped = pix.user_readback.get(use_monitor=False)
    assert 52.0 < stopped < 90.0
    time.sleep(0.2)
    assert pix.user_readback.get(use_monitor=False) == pytest.approx(stopped)
    assert pix.user_setpoint.get(use_monitor=False) == pytest.approx(stopped)
    assert pix.motor_done_move.get(use_monitor=False) == 1


def test_foreign_ca_client_reads_and_moves_with_put_completion(pix):
    got = _ca("caproto-get", "-n", "BSSIM:pix.RBV", "BSSIM:pix.EGU")
    assert got.returncode == 0, got.stderr
    values = dict(line.split(None, 1) for line in got.stdout.strip().splitlines())
    assert float(values["BSSIM:pix.RBV"].strip("[]")) == pytest.approx(50.0)
    assert values["BSSIM:pix.EGU"].strip("[]'\" ") == "um"
    pix.velocity.set(100.0).wait(5)
    t0 = time.monotonic()
    put = _ca("caproto-put", "-c", "BSSIM:pix", "70")   # put-completion: returns at end of move
    elapsed = time.monotonic() - t0
    assert put.returncode == 0, put.stderr
    assert pix.user_readback.get(use_monitor=False) == pytest.approx(70.0)
    assert elapsed > 0.2                 # 20 um at 100 um/s; the CLI start-up adds more


def test_set_current_position_changes_offset_without_motion(sim_devices):
    piz = sim_devices["piz"]
    start = piz.position
    offset0 = piz.user_offset.get()
    try:
        piz.set_current_position(start + 5.0)
        assert piz.user_readback.get(use_monitor=False) == pytest.approx(start + 5.0)
        assert piz.user_offset.get(use_monitor=False) == pytest.approx(offset0 + 5.0)
    finally:
        piz.set_current_position(start)


def test_home_and_concurrent_moves(sim_devices):
    phi, nu = sim_devices["phi"], sim_devices["nu"]
    start_phi = phi.position
    status = phi.home("forward", timeout=30)
    assert status.success and phi.position == pytest.approx(0.0)
    # two motors at once: the moves overlap in time
    s1, s2 = phi.set(1.0), nu.set(1.0)
    s1.wait(10), s2.wait(10)
    assert phi.position == pytest.approx(1.0) and nu.position == pytest.approx(1.0)
    phi.move(start_phi, timeout=60)
    nu.move(0.0, timeout=10)
