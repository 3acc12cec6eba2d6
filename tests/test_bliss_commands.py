"""BLISS-style commands beside bluesky's (braggscope.app.commands): counters after the count time,
``ct(counter)``, ``amesh``/``dmesh`` with ``backnforth``, ``lineup``, ``wa``/``wm`` with dial positions and
offsets wrapped to the terminal, and ``RE.md`` kept in a file across RunEngines and processes."""

import json
import subprocess
import sys

import pytest
from bluesky import RunEngine

from braggscope.app.commands import make_commands
from braggscope.app.commands.motion import dial_position
from braggscope.core.config import load_config
from braggscope.core.errors import ArgumentError
from braggscope.simulators.beamline import SimulatedBeamline
from braggscope.simulators.inprocess import make_inprocess_devices
from braggscope.storage.session_md import PersistentMetadata, install_persistent_md


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = load_config()
    sim = SimulatedBeamline("nmc622", shape=(48, 48), cch=(24.0, 24.0), distance_m=cfg["detector.distance_m"],
                            energy_kev=cfg["energy.energy_kev"], seed=5)
    devices = make_inprocess_devices(sim, tmp_path_factory.mktemp("frames"), limits=cfg["limits"])
    devices["detector"] = devices["mpx1x4"]
    RE = RunEngine(call_returns_result=True)
    docs, lines = [], []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    c = make_commands(RE, devices, cfg=cfg, out=lines.append)
    bragg = sim.bragg_setup()
    c.mv("delta", bragg["delta"], "eta", bragg["eta"], "pix", bragg["center_um"][0], "piy", bragg["center_um"][1])
    return dict(c=c, d=devices, docs=docs, lines=lines, bragg=bragg)


def _run(docs, uid):
    start = [i for i, (n, d) in enumerate(docs) if n == "start" and d["uid"] == uid][0]
    primary = {d["uid"] for n, d in docs[start:] if n == "descriptor" and d["name"] == "primary"}
    return docs[start][1], [d for n, d in docs[start:] if n == "event" and d["descriptor"] in primary]


def test_counters_after_the_count_time_are_the_runs_detectors(setup):
    c, d, docs = setup["c"], setup["d"], setup["docs"]
    pix = d["pix"].position
    start, events = _run(docs, c.ascan(d["pix"], pix - 1, pix + 1, 4, 0.002, d["xrf"]).run_start_uids[0])
    assert start["detectors"] == ["xrf"] and len(events) == 5 and "xrf_counts" in events[0]["data"]
    assert d["xrf"].acquire_time.get() == pytest.approx(0.002)
    start, _ = _run(docs, c.dscan("pix", -0.5, 0.5, 2, 0.002, "xrf", "mpx1x4").run_start_uids[0])
    assert start["detectors"] == ["xrf", "mpx1x4"]  # names work too, in the order given
    start, _ = _run(docs, c.d2scan(d["pix"], -0.2, 0.2, d["piy"], -0.2, 0.2, 1, 0.002, d["xrf"]).run_start_uids[0])
    assert start["detectors"] == ["xrf"]
    with pytest.raises(ArgumentError, match="not both"):
        c.ascan(d["pix"], pix, pix + 1, 2, 0.002, d["xrf"], detectors=[d["xrf"]])
    with pytest.raises(ArgumentError, match="'eta' is not a counter"):
        c.ascan(d["pix"], pix, pix + 1, 2, 0.002, d["eta"])
    c.mv(d["pix"], pix)


def test_ct_takes_a_count_time_then_counters_or_a_counter_alone(setup):
    c, d = setup["c"], setup["d"]
    assert set(c.ct(0.003, d["xrf"])) == {"xrf_counts"} and d["xrf"].acquire_time.get() == pytest.approx(0.003)
    assert set(c.ct(d["xrf"])) == {"xrf_counts"} and d["xrf"].acquire_time.get() == pytest.approx(0.003)
    assert set(c.ct("xrf")) == {"xrf_counts"}
    assert {"xrf_counts", "mpx1x4_total"} <= set(c.ct(0.003))


@pytest.mark.parametrize("backnforth", [False, True])
def test_amesh_and_dmesh_with_backnforth(setup, backnforth):
    c, d, docs = setup["c"], setup["d"], setup["docs"]
    x0, y0 = d["pix"].position, d["piy"].position
    r = c.amesh(d["pix"], x0, x0 + 0.2, 2, d["piy"], y0, y0 + 0.1, 1, 0.002, d["xrf"], backnforth=backnforth)
    _, ev = _run(docs, r.run_start_uids[0])
    second_row = [x0 + 0.2, x0 + 0.1, x0] if backnforth else [x0, x0 + 0.1, x0 + 0.2]
    assert [e["data"]["pix"] for e in ev] == pytest.approx([x0, x0 + 0.1, x0 + 0.2] + second_row)
    c.mv(d["pix"], x0, d["piy"], y0)
    r = c.dmesh(d["pix"], -0.1, 0.1, 1, d["piy"], -0.1, 0.1, 1, 0.002, d["xrf"], backnforth=backnforth)
    start, ev = _run(docs, r.run_start_uids[0])
    assert start["plan_name"] == "rel_grid_scan" and len(ev) == 4
    assert [e["data"]["pix"] for e in ev[:2]] == pytest.approx([x0 - 0.1, x0 + 0.1])
    assert (d["pix"].position, d["piy"].position) == pytest.approx((x0, y0))  # relative: back where it was


def test_lineup_scans_relatively_and_goes_to_the_peak(setup):
    c, d = setup["c"], setup["d"]
    x0 = setup["bragg"]["center_um"][0]
    c.mv(d["pix"], x0 + 0.6)
    at = c.lineup(d["pix"], -2.0, 2.0, 20, 0.002, d["xrf"])
    assert d["pix"].position == pytest.approx(at) == pytest.approx(c.peak("xrf_counts"))
    assert abs(at - x0) < 1.2  # on the crystal (1.8 um wide), not at the scan's edge
    c.mv(d["pix"], x0)


def test_wa_and_wm_show_user_and_dial_wrapped_to_the_terminal(setup, monkeypatch):
    c, lines = setup["c"], setup["lines"]
    monkeypatch.setenv("COLUMNS", "50")
    lines.clear()
    where = c.wa()
    text = "\n".join(lines)
    assert text.startswith("Current Positions: user\n                   dial")
    assert max(len(line) for line in lines) <= 50
    assert sum(1 for line in lines if line.split() == ["um", "um", "um", "deg"]) == 1  # a block of 4 columns
    assert len(where) == 8 and all(name in text for name in where)
    lines.clear()
    c.wm("pix", "eta")
    labels = [line.split()[0] for line in lines if line.strip() and line[0] != " " or line.startswith(" ")]
    for label in ("User", "High", "Current", "Low", "Offset", "Dial"):
        assert label in " ".join(labels), label


def test_dial_of_an_epics_motor_record_undoes_offset_and_direction():
    from types import SimpleNamespace

    from ophyd import EpicsMotor

    for offset, direction, user, dial in ((2.5, 0, 10.0, 7.5), (2.5, 1, 10.0, -7.5)):
        fields = {"position": user, "user_offset": SimpleNamespace(get=lambda o=offset: o),
                  "user_offset_dir": SimpleNamespace(get=lambda s=direction: s)}
        # an EpicsMotor whose fields answer without a channel (the formula only)
        fake = type("Fake", (EpicsMotor,), {k: property(lambda self, v=v: v) for k, v in fields.items()})
        got = dial_position(fake.__new__(fake))
        assert got == (pytest.approx(dial), offset, -1 if direction else 1)


def test_re_md_persists_across_run_engines_and_processes(tmp_path):
    cfg = load_config()
    cfg.set("storage.data_dir", str(tmp_path))
    first = RunEngine()
    install_persistent_md(first, cfg)
    first.md["sample"] = "nmc622"
    first.md["proposal"] = {"id": "hc-1234", "pi": "A. User"}
    second = RunEngine()
    install_persistent_md(second, cfg)  # a new session
    assert second.md["sample"] == "nmc622" and second.md["proposal"]["id"] == "hc-1234"
    assert "bluesky" in second.md["versions"]
    child = subprocess.run([sys.executable, "-c", f"""
from braggscope.storage.session_md import PersistentMetadata
md = PersistentMetadata({str(tmp_path / 'session_md.json')!r})
assert md["sample"] == "nmc622"
md["sample"] = "lmno"
"""], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert first.md["sample"] == "lmno"  # what another process set, seen here at the next read
    uid = first(_one_run())[0]
    assert uid and json.loads((tmp_path / "session_md.json").read_text())["sample"] == "lmno"
    del first.md["proposal"]
    assert "proposal" not in PersistentMetadata(tmp_path / "session_md.json")
    with pytest.raises(ArgumentError, match="NaN|finite"):
        first.md["dose"] = float("nan")
    with pytest.raises(ArgumentError, match="JSON"):
        first.md["when"] = object()


def _one_run():
    from bluesky import plan_stubs as bps
    from bluesky import preprocessors as bpp

    @bpp.run_decorator()
    def plan():
        yield from bps.null()

    return plan()
