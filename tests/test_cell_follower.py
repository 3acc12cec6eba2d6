"""The simulated crystal keeps up with a held cell: a put to Pause completes only once the crystal is the
paused state's (simulators/ioc_cell.py), without a server.

The crystal follows the cell in a thread whose rebuilds take ~0.5 s for a BCDI particle (seconds under
load). Before the fix a put to Pause returned at once while the thread was still building an earlier state:
an operando checkpoint could track the peak of the crystal the cell had left and measure the one it is in.
In tests/test_operando_bcdi_ca.py (LMNO, 300x clock) the cell crosses x = 0.5, where the pristine phase's
peak vanishes, about half a second of wall before checkpoint 2; the tracking saw the crystal at x ~ 0.52
(the peak at the pristine angles, 'found'), the rocking scan the one at x ~ 0.47 (nothing there): a flat
curve with the peak reported in range (reproduced with every rebuild slowed by 1 s). Here the rebuild is
held by a gate instead of a clock, so the test does not depend on timing.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from braggscope.core.electrochem import charge_to
from braggscope.simulators.cell import LMNO, Cell, CellSettings, CellState
from braggscope.simulators.cell_sample import cell_sample
from braggscope.simulators.ioc_cell import PotentiostatIOC, SampleFollower
from braggscope.simulators.samples import make_sample

RATE_PER_S = 140.0 / LMNO.theoretical_capacity / 3600.0  # lithium removed per second at 1 C


class GatedBeamline:
    """What the follower drives, its sample swaps held until ``gate`` opens (a slow rebuild)."""

    is_bcdi = True

    def __init__(self):
        self.sample = make_sample("lmno_bcdi", 0)
        self.drift_um = np.zeros(3)
        self.gate = threading.Event()
        self.gate.set()
        self.building = threading.Event()  # a swap is waiting at the gate

    def set_drift(self, offset_um):
        self.drift_um = np.asarray(offset_um, float)

    def set_sample(self, sample):
        self.building.set()
        assert self.gate.wait(30.0), "the gate was never opened"
        self.sample = sample


def _expected(pristine, state: CellState):
    sample = cell_sample(pristine, LMNO, state)
    return sample.shell_ratio, sample.lattice_a, sample.front


def test_a_pause_put_completes_once_the_crystal_is_the_held_cells():
    beamline = GatedBeamline()
    pristine = beamline.sample
    follower = SampleFollower(beamline, LMNO)
    ioc = PotentiostatIOC("T:cell:", cell=Cell(CellSettings(material="lmno")), follower=follower)
    ioc.cell.start([charge_to(4.9, 1.0)])
    ioc.cell.advance((1.0 - 0.52) / RATE_PER_S)  # the pristine phase's last few percent, the peak still there

    async def scenario():
        beamline.gate.clear()
        await ioc.publish()  # what the IOC's tick does: the follower starts building x = 0.52
        assert await asyncio.to_thread(beamline.building.wait, 10.0)
        ioc.cell.advance(0.05 / RATE_PER_S)  # the cell goes on across x = 0.5 while it builds
        put = asyncio.create_task(ioc.pause.write(1))  # the checkpoint holds the cell
        await asyncio.sleep(0.2)
        waited = not put.done()  # before the fix: done at once, the crystal still the x = 0.52 one
        beamline.gate.set()
        await asyncio.wait_for(put, 30.0)
        return CellState.from_dict(ioc.cell.state.to_dict()), waited

    held, waited = asyncio.run(scenario())
    assert held.status == "paused" and held.lithium < 0.5 and (held.x_shell, held.x_core) == (0.0, 0.5)
    assert waited, "the Pause put completed while the crystal was still an earlier state's"
    shown = beamline.sample
    assert (shown.shell_ratio, shown.lattice_a, shown.front) == pytest.approx(_expected(pristine, held))
    assert shown.lattice_a == pytest.approx(pristine.lattice_a * 8.09 / 8.17)  # the core: the x = 0.5 phase


def test_the_follower_tickets_cover_later_states_and_a_failed_rebuild():
    beamline = GatedBeamline()
    follower = SampleFollower(beamline, LMNO)
    first = follower.submit(CellState(lithium=0.8, x_shell=0.5, x_core=1.0, front=0.4))
    second = follower.submit(CellState(lithium=0.7, x_shell=0.5, x_core=1.0, front=0.6))
    assert second == first + 1
    deadline = 100
    while not follower.shows(second) and deadline:
        threading.Event().wait(0.05)
        deadline -= 1
    assert follower.shows(first) and follower.shows(second)
    assert beamline.sample.front > 0  # the later state applied (the earlier one may have been skipped)

    def broken(sample):
        raise RuntimeError("a rebuild that fails")

    beamline.set_sample = broken
    third = follower.submit(CellState(lithium=0.6, x_shell=0.5, x_core=1.0, front=0.8))
    deadline = 100
    while not follower.shows(third) and deadline:
        threading.Event().wait(0.05)
        deadline -= 1
    assert follower.shows(third)  # a put waiting on it is not held up to its timeout
    del beamline.set_sample  # the thread goes on after a failed rebuild
    fourth = follower.submit(CellState(lithium=0.55, x_shell=0.5, x_core=1.0, front=0.9))
    deadline = 100
    while not follower.shows(fourth) and deadline:
        threading.Event().wait(0.05)
        deadline -= 1
    assert follower.shows(fourth) and beamline.sample.front == pytest.approx(cell_sample(
        make_sample("lmno_bcdi", 0), LMNO, CellState(lithium=0.55, x_shell=0.5, x_core=1.0, front=0.9)).front)
