"""The simulated electrochemical cell (simulators/cell.py, cell_sample.py) against the literature and closed forms.

The literature values are those docs/operando.md cites: theoretical capacities from the formula masses,
NMC622's first charge to 4.3 V (190-205 mAh/g) and its c axis (expanding by 1.2-2 % to a maximum
between 40 and 50 % lithium, collapsing below), LMNO's plateaus near 4.7 V and its three cubic
lattices (8.17, 8.09, 8.00 Angstrom).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from braggscope.core.electrochem import Protocol, Step, charge_to, discharge_to, rest
from braggscope.core.errors import ArgumentError
from braggscope.simulators.beamline import SimulatedBeamline
from braggscope.simulators.cell import LMNO, NMC622, Cell, CellSettings, CellState, Material
from braggscope.simulators.cell_sample import CellParticle, cell_sample, drift_um
from braggscope.simulators.samples import BCDIParticle

WAVELENGTH_8_33 = 12.398419843320026 / 8.33  # Angstrom


def test_theoretical_capacities_are_the_literature_values():
    assert NMC622.theoretical_capacity == pytest.approx(276.5, abs=0.5)   # mAh/g, LiNi0.6Mn0.2Co0.2O2
    assert LMNO.theoretical_capacity == pytest.approx(146.7, abs=0.5)     # mAh/g, LiNi0.5Mn1.5O4


def test_nmc622_voltage_curve_matches_its_first_charge_and_mean_voltage():
    x_cut = float(NMC622.x_at_voltage(4.3))
    capacity = (1 - x_cut) * NMC622.theoretical_capacity
    assert 190.0 <= capacity <= 205.0  # mAh/g charged to 4.3 V
    x = np.linspace(x_cut, 1.0, 2001)
    assert 3.75 <= float(np.mean(NMC622.ocv(x))) <= 3.95  # mean voltage over that window, ~3.8 V
    assert np.all(np.diff(NMC622.ocv(np.linspace(0.1, 1, 500))) < 0)


def test_nmc622_c_axis_expands_then_collapses_below_forty_percent_lithium():
    x = np.linspace(0.1, 1.0, 901)
    c = NMC622.lattice_parameter(x)
    top = x[np.argmax(c)]
    assert 0.40 <= top <= 0.50
    assert 0.012 <= (c.max() - c[-1]) / c[-1] <= 0.020
    assert NMC622.lattice_parameter(0.2) < c.max() - 0.25  # the collapse
    assert NMC622.lattice_parameter(1.0) == pytest.approx(14.22)  # the pristine crystal of the simulator
    assert NMC622.strain_spread(0.5) == 0 and NMC622.strain_spread(0.2) > NMC622.strain_spread(0.3) > 0


def test_lmno_plateaus_and_its_three_cubic_lattices():
    x = np.linspace(0.1, 0.9, 200)
    assert np.all((LMNO.ocv(x) > 4.68) & (LMNO.ocv(x) < 4.78))
    step = float(LMNO.ocv(0.3) - LMNO.ocv(0.7))
    assert 0.02 <= step <= 0.07  # Ni2+/Ni3+ and Ni3+/Ni4+ plateaus
    assert [float(LMNO.lattice_parameter(v)) for v in (1.0, 0.5, 0.0)] == [8.17, 8.09, 8.00]


def _linear_material(slope=-1.0):
    """An electrode whose OCV is a straight line: the constant-voltage current then decays exactly exponentially."""
    return Material(name="nmc622", formula_mass=NMC622.formula_mass, practical_capacity=180.0,
                    ocv_x=(0.0, 1.0), ocv_v=(4.0 - slope * 0.0, 4.0 + slope), lattice_x=(0.0, 1.0),
                    lattice=(14.0, 14.0), lattice_axis="c")


def test_constant_current_moves_lithium_at_the_c_rate_with_an_ir_drop():
    settings = CellSettings(active_mass_mg=4.0, resistance_ohm=80.0)
    cell = Cell(settings)
    cell.start([charge_to(4.3, 0.5)])
    cell.advance(1800.0)
    current = 0.5 * 180.0 * 4.0e-3  # mA
    assert cell.state.current == pytest.approx(current)
    assert cell.charge == pytest.approx(current * 0.5, rel=1e-9)  # mAh in half an hour
    assert 1.0 - cell.state.lithium == pytest.approx(current * 0.5 / (276.5 * 4.0e-3), rel=2e-3)
    assert cell.state.voltage == pytest.approx(float(NMC622.ocv(cell.state.lithium)) + current * 80.0e-3)
    cell.advance(20 * 3600.0)  # the limit: the charge ends at 4.3 V (with the drop)
    assert cell.state.status == "done" and cell.state.lithium == pytest.approx(
        float(NMC622.x_at_voltage(4.3 - current * 80e-3)), abs=1e-6)


def test_constant_voltage_current_decays_as_the_closed_form():
    cell = Cell(CellSettings(resistance_ohm=40.0))
    cell.material = _linear_material(-1.0)
    cell.start([Step("cv_hold", voltage_v=3.5, cutoff_c_rate=1e-6, duration_s=3000.0)])  # OCV(1.0) = 3.0 V
    i0 = 0.5 / 40.0 * 1e3
    tau = 40.0 * 3600.0 * cell.settings.full_capacity_mah * 1e-3 / 1.0
    for t in (100.0, 400.0, 900.0):
        cell.advance(t - cell.state.time_s)
        assert cell.state.current == pytest.approx(i0 * math.exp(-t / tau), rel=1e-6)


def test_two_phase_front_follows_the_lever_rule_and_pause_stops_the_clock():
    cell = Cell(CellSettings(material="lmno"))
    cell.start([charge_to(4.9, 1.0)])
    cell.advance(900.0)
    x = cell.state.lithium
    assert 0.5 < x < 1.0 and (cell.state.x_shell, cell.state.x_core) == (0.5, 1.0)
    assert cell.shell_fraction() == pytest.approx((1.0 - x) / 0.5)
    cell.pause()
    cell.advance(600.0)
    assert (cell.state.lithium, cell.state.current, cell.state.time_s) == (x, 0.0, 900.0)
    cell.resume()
    cell.advance(60.0)
    assert cell.state.lithium < x


def test_solid_solution_front_runs_with_the_step_and_its_gap_relaxes_at_rest():
    cell = Cell(CellSettings(gradient_per_c=0.3, relax_time_s=600.0))
    cell.start([charge_to(4.3, 0.5), rest(3600.0)])
    cell.advance(3000.0)
    s = cell.state
    progress = (1.0 - s.lithium) / (1.0 - float(NMC622.x_at_voltage(4.3)))
    assert cell.shell_fraction() == pytest.approx(progress)
    assert s.x_core - s.x_shell == pytest.approx(0.15)  # 0.3 per C at C/2
    assert s.front * s.x_shell + (1 - s.front) * s.x_core == pytest.approx(s.lithium)  # the mean is kept
    cell.advance(20000.0)  # the charge ends, then the rest
    assert cell.state.step == 2 or cell.state.status == "done"
    assert abs(cell.state.x_core - cell.state.x_shell) < 0.15 * math.exp(-2.0)


def test_state_and_protocol_round_trip_and_bad_steps_are_refused():
    cell = Cell(CellSettings())
    protocol = Protocol((rest(60.0), charge_to(4.2, 0.2), discharge_to(3.0, 0.2)), cycles=2)
    cell.start(protocol)
    cell.advance(4000.0)
    again = Cell(CellSettings(), CellState.from_dict(cell.state.to_dict()))
    again.advance(500.0)
    cell.advance(500.0)
    assert again.state == cell.state
    assert Protocol.from_json(protocol.to_json()) == protocol
    for bad in ({"kind": "cc_charge", "c_rate": -1, "voltage_v": 4.2}, {"kind": "rest"},
                {"kind": "cv_hold", "voltage_v": float("nan")}, {"kind": "jump"}):
        with pytest.raises(ArgumentError):
            Protocol.coerce([bad])


def _charged_state(x_shell, x_core, front):
    lithium = front * x_shell + (1 - front) * x_core
    return CellState(lithium=lithium, x_shell=x_shell, x_core=x_core, front=front)


def test_crystal_lattice_follows_the_law_and_the_front_holds_its_fraction_of_the_particle():
    pristine = SimulatedBeamline("nmc622").sample
    axis = np.linspace(46.5, 53.5, 141)
    homogeneous = cell_sample(pristine, NMC622, _charged_state(0.6, 0.6, 0.0))
    t0, t1 = pristine.truth_maps(axis, axis), homogeneous.truth_maps(axis, axis)
    ratio = t1["d_spacing"][t0["support"]] / t0["d_spacing"][t0["support"]]
    assert ratio == pytest.approx(14.41 / 14.22, rel=1e-9)  # c(0.6) / c(1.0) everywhere
    fronted = cell_sample(pristine, NMC622, _charged_state(0.6, 0.9, 0.4))
    crystal = fronted.crystallites[0]
    xx, yy = np.meshgrid(axis, axis)
    inside = t0["support"]
    shell = crystal.shell_weight(xx, yy)[inside] > 0.5
    assert shell.mean() == pytest.approx(0.4, abs=0.03)
    weight = crystal.shell_weight(xx, yy)[inside]
    ratio = fronted.truth_maps(axis, axis)["d_spacing"][inside] / t0["d_spacing"][inside]
    assert ratio[weight > 0.9999] == pytest.approx(14.41 / 14.22, rel=1e-4)  # c(0.6) / c(1.0) in the shell
    assert ratio[weight < 0.0001] == pytest.approx(14.26 / 14.22, rel=1e-4)  # c(0.9) / c(1.0) in the core
    assert np.all(crystal.depth(xx, yy)[inside][shell] < np.median(crystal.depth(xx, yy)[inside][~shell]))


def test_rendered_bragg_peak_moves_as_braggs_law_says():
    beamline = SimulatedBeamline("nmc622", background_rate=0.0, seed=1)
    setup = beamline.bragg_setup()
    etas = np.linspace(setup["eta"] - 0.6, setup["eta"] + 0.4, 81)
    cx, cy = beamline.apparent_center(setup["eta"])

    def rocking_centre():
        counts = [beamline.forward.expected_frame(*beamline.beam_on_sample(cx, cy, e), e, setup["delta"] + 2 * (
            e - setup["eta"])).sum() for e in etas]  # a theta-2theta scan: the peak in its window
        return float(np.sum(etas * counts) / np.sum(counts))

    before = rocking_centre()
    beamline.set_sample(cell_sample(beamline.sample, NMC622, _charged_state(0.7, 0.7, 0.0)))
    after = rocking_centre()
    d0 = beamline.sample.d_spacing
    d1 = d0 * 14.36 / 14.22
    expected = math.degrees(math.asin(WAVELENGTH_8_33 / (2 * d1)) - math.asin(WAVELENGTH_8_33 / (2 * d0)))
    assert after - before == pytest.approx(expected, abs=0.01)
    assert expected < -0.05  # the peak really moved


def test_the_particle_drifts_with_time_and_lithium_and_z_shows_along_x():
    state = CellState(time_s=7200.0, lithium=0.8)
    offset = drift_um(state, drift_um_per_h=(0.5, -0.25, 0.0), breathing_um=(1.0, 0.0, 0.1))
    assert offset == pytest.approx([0.5 * 2 + 0.2, -0.5, 0.02])
    beamline = SimulatedBeamline("nmc622")
    eta = 9.0
    x0, y0 = beamline.apparent_center(eta)
    beamline.set_drift(offset)
    x1, y1 = beamline.apparent_center(eta)
    assert (x1 - x0, y1 - y0) == pytest.approx((1.2 + 0.02 / math.tan(math.radians(eta)), -0.5))


def test_bcdi_particle_shell_strain_is_the_lattice_ratio():
    pristine = BCDIParticle(shape="sphere", size_m=600e-9, voxel_m=20e-9, eps_shell=0.0)
    particle = cell_sample(pristine, LMNO, _charged_state(0.5, 1.0, 0.5), x_initial=1.0, front_width=0.01)
    assert isinstance(particle, CellParticle)
    assert particle.lattice_a == pytest.approx(8.17) and particle.shell_ratio == pytest.approx(8.09 / 8.17)
    axes, rho, u = particle.voxel_grid()
    _, _, depth, inside = particle.depth_grid()
    dudz = np.diff(u, axis=2) / (axes[2][1] - axes[2][0])
    both = inside[:, :, 1:] & inside[:, :, :-1]
    shell = both & (depth[:, :, 1:] < particle.front - 0.05) & (depth[:, :, :-1] < particle.front - 0.05)
    core = both & (depth[:, :, 1:] > particle.front + 0.05) & (depth[:, :, :-1] > particle.front + 0.05)
    assert shell.sum() > 100 and core.sum() > 100
    assert np.median(dudz[shell]) == pytest.approx(8.09 / 8.17 - 1, rel=0.02)
    assert abs(np.median(dudz[core])) < 1e-4
