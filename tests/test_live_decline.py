"""The live-map callback declines what it cannot reduce: one line, never an exception into the RunEngine.

Before, ``RE(bp.count([detector, xrf], num=3))`` with the live maps subscribed
raised "start document lacks key(s)" and then an ``AttributeError`` on every
document. Here ``count``, ``scan``, a BCDI rocking scan and a map without its
setup each give exactly one line, and a map recorded afterwards by the same
callback is still reduced (in-process devices, no EPICS, no catalog).
"""

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import numpy as np
import pytest
from bluesky import RunEngine

from braggscope.analysis.live.callback import LiveSXDM
from braggscope.analysis.live.dispatch import LiveMapDispatcher
from braggscope.app.beamline.runengine import install_baseline
from braggscope.plans import bcdi_rocking, sxdm_map
from braggscope.simulators.inprocess import CountingDetector, HDF5ImageDetector, LimitedSynAxis

SHAPE = (16, 24)


@pytest.fixture()
def beamline(tmp_path):
    motors = {n: LimitedSynAxis(name=n, limits=(-10, 200)) for n in ("pix", "piy", "eta", "delta", "nu", "phi")}
    motors["energy"] = LimitedSynAxis(name="energy", limits=(5, 30), value=8.0)
    rng = np.random.default_rng(0)
    det = HDF5ImageDetector(render=lambda: rng.poisson(2.0, SHAPE).astype(np.uint32), write_dir=tmp_path,
                            shape=SHAPE, distance_m=0.5, pixel_m=55e-6, cch=(8.0, 12.0))
    xrf = CountingDetector(count=lambda: 7)
    return {**motors, "mpx1x4": det, "xrf": xrf}


def _run(RE, plan, capsys):
    RE(plan)
    out = capsys.readouterr()
    return [line for line in (out.out + out.err).splitlines() if line.strip()]


def test_count_scan_and_rocking_scan_are_declined_in_one_line_each(beamline, capsys):
    d = beamline
    RE = RunEngine(call_returns_result=True)
    install_baseline(RE, d)
    live = LiveSXDM()
    RE.subscribe(live)  # directly: an exception in the callback would fail the run
    RE(bps.mv(d["delta"], 18.0, d["eta"], 9.0))
    capsys.readouterr()

    lines = _run(RE, bp.count([d["mpx1x4"], d["xrf"]], num=3), capsys)
    assert len(lines) == 1 and "'count'" in lines[0] and "not an SXDM map" in lines[0]
    lines = _run(RE, bp.scan([d["mpx1x4"]], d["eta"], 8.9, 9.1, 5), capsys)
    assert len(lines) == 1 and "'scan'" in lines[0]
    plan = bcdi_rocking([d["mpx1x4"]], d["eta"], 9.0, size_m=300e-9, d_spacing=2.0, energy=d["energy"],
                        step_deg=0.01, eta_range=0.04, allow_undersampling=True)
    lines = _run(RE, plan, capsys)
    assert len(lines) == 1 and "'bcdi_rocking'" in lines[0]
    assert not live.active

    # the same callback still reduces a map (no output for it)
    lines = _run(RE, sxdm_map([d["mpx1x4"]], d["pix"], (10, 12, 3), d["piy"], (10, 11, 2), d["eta"], [8.95, 9.05]),
                 capsys)
    assert lines == [] and live.declined is None and live.finished
    maps = live.maps()
    assert maps.intensity.shape == (2, 3) and bool(maps.complete.all())


def test_map_without_setup_is_declined_naming_the_missing_fields(beamline, capsys):
    d = beamline
    RE = RunEngine(call_returns_result=True)  # no baseline: delta and the energy are not recorded
    live = LiveSXDM()
    RE.subscribe(live)
    lines = _run(RE, sxdm_map([d["mpx1x4"]], d["pix"], (10, 12, 3), d["piy"], (10, 11, 2), d["eta"], [9.0, 9.1]),
                 capsys)
    assert len(lines) == 1 and "energy_kev" in lines[0] and "delta" in lines[0]
    assert live.declined and not live.active


def test_dispatcher_reports_no_error_for_declined_runs(beamline, capsys):
    d = beamline
    RE = RunEngine(call_returns_result=True)
    install_baseline(RE, d)
    live = LiveSXDM(batch_size=8)
    with LiveMapDispatcher(live) as dispatcher:
        RE.subscribe(dispatcher)
        RE(bp.count([d["mpx1x4"], d["xrf"]], num=3))
        RE(bp.scan([d["xrf"]], d["eta"], 8.9, 9.1, 5))
        dispatcher.wait()  # raises the first worker error, if any
    assert dispatcher.errors == []
    out = capsys.readouterr()
    assert len((out.out + out.err).strip().splitlines()) == 2
