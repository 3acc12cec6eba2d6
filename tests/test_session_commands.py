"""The operator's commands (braggscope.app.commands) on in-process simulated devices.

Positions and return values of each command, refusals before any motion
(outside soft limits, NaN), ``cen``/``goto_cen`` against the simulator's noise-free rocking
curve, the ``%mv`` magic in an IPython shell (and no ``/bin/mv`` alias), labels
for bluesky's own magics, Ctrl-C (a pause) reaching the operator.
"""

import logging

import h5py
import numpy as np
import pytest
from bluesky import Msg, RunEngine
from bluesky.utils import RunEngineInterrupted

from braggscope.app.commands import make_commands
from braggscope.core.config import load_config
from braggscope.core.errors import ArgumentError
from braggscope.simulators.beamline import SimulatedBeamline
from braggscope.simulators.inprocess import make_inprocess_devices

SHAPE = (64, 64)
ROI = (20, 44, 20, 44)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = load_config()
    sim = SimulatedBeamline("nmc622", shape=SHAPE, cch=(32.0, 32.0), distance_m=cfg["detector.distance_m"],
                            energy_kev=cfg["energy.energy_kev"], seed=3)
    devices = make_inprocess_devices(sim, tmp_path_factory.mktemp("frames"), limits=cfg["limits"])
    devices["detector"] = devices["mpx1x4"]
    RE = RunEngine(call_returns_result=True)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    lines, answers = [], []
    commands = make_commands(RE, devices, cfg=cfg, out=lines.append, ask=lambda q: (lines.append(q), answers.pop(0))[1])
    bragg = sim.bragg_setup()
    commands.mv("delta", bragg["delta"], "eta", bragg["eta"], "pix", bragg["center_um"][0],
                "piy", bragg["center_um"][1])
    return dict(sim=sim, devices=devices, RE=RE, docs=docs, lines=lines, answers=answers, c=commands, bragg=bragg)


def _last_frame(det):
    with h5py.File(det.last_path, "r", swmr=True) as f:
        return f["/entry/data/data"][-1]


def test_moves_return_positions_and_wa_lists_every_motor(setup):
    c, d = setup["c"], setup["devices"]
    assert c.mv(d["piz"], 12.5) == {"piz": 12.5} and d["piz"].position == 12.5
    assert c.mvr("piz", -2.5) == {"piz": 10.0}
    assert c.umv(d["piz"], 7.0, d["phi"], 1.0) == {"piz": 7.0, "phi": 1.0}
    assert c.umvr(d["phi"], -1.0) == {"phi": 0.0}
    setup["lines"].clear()
    where = c.wa()
    assert set(where) == {"pix", "piy", "piz", "eta", "phi", "nu", "delta", "energy"}
    assert where["piz"] == 7.0
    table = "\n".join(setup["lines"])
    assert "um" in table and "deg" in table and "keV" in table and "dial" in table  # units, user and dial
    setup["lines"].clear()
    assert c.wm("eta", "pix") == {"eta": pytest.approx(setup["bragg"]["eta"]), "pix": d["pix"].position}
    table = "\n".join(setup["lines"])
    assert "100" in table and "Offset" in table and "Dial" in table  # limits, offset, dial


@pytest.mark.parametrize("args, word", [(("pix", 500.0), "pix"), (("pix", 10.0, "piy", -300.0), "piy"),
                                        (("pix", float("nan")), "pix"), (("eta", float("inf")), "eta"),
                                        (("pix", "ten"), "pix"), (("pix",), "pairs")])
def test_mv_refuses_before_any_motion(setup, args, word):
    c, d = setup["c"], setup["devices"]
    before = {n: d[n].position for n in ("pix", "piy", "eta")}
    n_docs = len(setup["docs"])
    for command in (c.mv, c.umv, c.mvr):
        with pytest.raises(ArgumentError, match=word) as info:
            command(*args)
        assert "\n" not in str(info.value)
    assert {n: d[n].position for n in ("pix", "piy", "eta")} == before
    assert len(setup["docs"]) == n_docs


def test_scans_refuse_outside_limits_before_any_run(setup):
    c, d = setup["c"], setup["devices"]
    n_docs, eta = len(setup["docs"]), d["eta"].position
    with pytest.raises(ArgumentError, match="eta"):
        c.ascan(d["eta"], 100, 130, 10, 0.01)
    with pytest.raises(ArgumentError, match="pix"):
        c.dscan(d["pix"], -60, 0, 10)
    with pytest.raises(ArgumentError, match="piy"):
        c.mesh(d["pix"], 40, 41, 2, d["piy"], 99, 101, 2)
    with pytest.raises(ArgumentError, match="intervals"):
        c.ascan(d["eta"], 9, 9.1, 2.5)
    with pytest.raises(ArgumentError, match="count_time"):
        c.ascan(d["eta"], 9, 9.1, 2, float("nan"))
    assert len(setup["docs"]) == n_docs and d["eta"].position == eta


def test_ct_counts_the_roi_without_a_run(setup):
    c, det = setup["c"], setup["devices"]["mpx1x4"]
    assert c.roi(det, *ROI) == ROI
    assert c.roi() == ROI  # shown
    n_docs = len(setup["docs"])
    values = c.ct(0.01)
    assert len(setup["docs"]) == n_docs  # nothing recorded
    frame = _last_frame(det)
    r0, r1, c0, c1 = ROI
    assert values["mpx1x4_roistat1_total"] == frame[r0:r1, c0:c1].sum()
    assert values["mpx1x4_total"] == frame.sum() > values["mpx1x4_roistat1_total"]
    assert "xrf_counts" in values and det.acquire_time.get() == 0.01
    with pytest.raises(ArgumentError, match="row1"):
        c.roi(det, 10, 65, 0, 10)
    with pytest.raises(ArgumentError, match="empty"):
        c.roi(det, 10, 10, 0, 10)
    assert c.roi() == ROI
    r = c.ascan(setup["devices"]["piz"], 1, 2, 1)  # the next run carries its own frames only, not ct's
    start = [i for i, (n, d) in enumerate(setup["docs"]) if n == "start" and d["uid"] == r.run_start_uids[0]][0]
    names = [n for n, _ in setup["docs"][start:]]
    assert names.count("resource") == 1 and names.count("datum") == 2


def _events(docs, uid):
    start = [i for i, (n, d) in enumerate(docs) if n == "start" and d["uid"] == uid][0]
    descriptors = {d["uid"] for n, d in docs[start:] if n == "descriptor" and d["name"] == "primary"}
    return [d for n, d in docs[start:] if n == "event" and d["descriptor"] in descriptors]


def test_scan_commands_points_and_returns(setup):
    c, d, docs = setup["c"], setup["devices"], setup["docs"]
    eta0, pix0 = d["eta"].position, d["pix"].position
    r = c.ascan(d["eta"], eta0 - 0.1, eta0 + 0.1, 4, 0.001)
    ev = _events(docs, r.run_start_uids[0])
    assert len(ev) == 5 and ev[0]["data"]["eta"] == pytest.approx(eta0 - 0.1)
    assert d["eta"].position == pytest.approx(eta0 + 0.1)
    c.mv(d["eta"], eta0)
    r = c.dscan(d["pix"], -0.2, 0.2, 2)
    ev = _events(docs, r.run_start_uids[0])
    assert [e["data"]["pix"] for e in ev] == pytest.approx([pix0 - 0.2, pix0, pix0 + 0.2])
    assert d["pix"].position == pytest.approx(pix0)  # dscan returns
    r = c.a2scan(d["eta"], eta0, eta0 + 0.02, d["delta"], 18.0, 18.04, 2)
    ev = _events(docs, r.run_start_uids[0])
    assert [e["data"]["delta"] for e in ev] == pytest.approx([18.0, 18.02, 18.04])
    c.mv(d["delta"], setup["bragg"]["delta"], d["eta"], eta0)
    r = c.d2scan(d["pix"], -0.1, 0.1, d["piy"], -0.2, 0.2, 1)
    assert len(_events(docs, r.run_start_uids[0])) == 2 and d["pix"].position == pytest.approx(pix0)
    r = c.mesh(d["pix"], pix0, pix0 + 0.2, 2, d["piy"], 10.0, 10.1, 1, snake=True)
    ev = _events(docs, r.run_start_uids[0])
    assert len(ev) == 6
    assert [e["data"]["pix"] for e in ev[:3]] == pytest.approx([pix0, pix0 + 0.1, pix0 + 0.2])  # pix fast
    assert [e["data"]["pix"] for e in ev[3:]] == pytest.approx([pix0 + 0.2, pix0 + 0.1, pix0])  # snake
    c.mv(d["piy"], setup["bragg"]["center_um"][1])


def _true_rocking_peak(sim, bragg, roi, etas):
    """argmax over a fine eta grid of the simulator's noise-free frame summed in the ROI (its truth)."""
    r0, r1, c0, c1 = roi
    x, y = bragg["center_um"]
    totals = []
    for eta in etas:
        dx, dy = sim.eccentricity.offset(eta)
        frame = sim.forward.expected_frame(x - dx, y - dy, eta, bragg["delta"], energy_kev=sim.energy_kev)
        totals.append(frame[r0:r1, c0:c1].sum())
    return etas[int(np.argmax(totals))]


def test_cen_moves_within_one_step_of_the_rocking_curve_peak(setup):
    c, d, sim, bragg = setup["c"], setup["devices"], setup["sim"], setup["bragg"]
    c.roi(d["mpx1x4"], *ROI)
    start, stop, intervals = bragg["eta_start"], bragg["eta_stop"], 40
    step = (stop - start) / intervals
    c.ascan(d["eta"], start, stop, intervals, 0.001)
    truth = _true_rocking_peak(sim, bragg, ROI, np.linspace(start, stop, 20 * intervals + 1))
    cen = c.cen()  # BLISS: cen() returns, goto_cen() moves
    assert d["eta"].position == pytest.approx(stop)  # not moved
    assert c.goto_cen() == cen and d["eta"].position == pytest.approx(cen)
    assert abs(cen - truth) <= step, (cen, truth, step)
    assert abs(c.goto_peak() - truth) <= step and d["eta"].position == pytest.approx(c.peak())
    assert abs(c.goto_com() - truth) <= 2 * step and d["eta"].position == pytest.approx(c.com())
    assert 0 < c.fwhm() < stop - start
    w = c.where()
    assert w["motor"] == "eta" and w["counter"] == "mpx1x4_roistat1_total"
    assert w["cen"] == pytest.approx(cen) and w["fwhm"] == pytest.approx(c.fwhm())
    # BestEffortCallback's peaks, per counter field
    assert c.peaks.cen["mpx1x4_roistat1_total"] == pytest.approx(cen)
    assert c.peaks["fwhm"]["mpx1x4_roistat1_total"] == pytest.approx(c.fwhm())
    with pytest.raises(ArgumentError, match="xrf_countz"):
        c.goto_cen("xrf_countz")


def test_ctrl_c_pause_reaches_the_operator(setup, capsys):
    c, RE = setup["c"], setup["RE"]

    def plan():
        yield Msg("open_run")
        yield Msg("checkpoint")
        yield Msg("pause", defer=False)
        yield Msg("close_run")

    with pytest.raises(RunEngineInterrupted):
        c._run(plan())
    assert "RE.resume()" in capsys.readouterr().err and RE.state == "paused"
    RE.abort("test")
    assert RE.state == "idle"


def test_help_and_labels_for_blueskys_magics(setup):
    from bluesky.magics import get_labeled_devices

    c, d = setup["c"], setup["devices"]
    setup["lines"].clear()
    c.help()
    text = "\n".join(setup["lines"])
    assert all(word in text for word in ("ascan", "cen()", "roi(", "calibrate", "Ctrl-C"))
    assert len(setup["lines"]) <= 30  # one screen
    labelled = get_labeled_devices(user_ns=d)
    assert {n for n, _ in labelled["motors"]} >= {"pix", "piy", "eta", "delta"}
    assert {obj.name for _, obj in labelled["detectors"]} == {"mpx1x4", "xrf"}


def test_mv_magic_in_an_ipython_shell_and_no_bin_mv(setup, tmp_path, monkeypatch, capsys, caplog):
    from IPython.core.interactiveshell import InteractiveShell

    from braggscope.app.session.magics import load_ipython_extension

    c, d = setup["c"], setup["devices"]
    shell = InteractiveShell.instance()
    try:
        assert shell.alias_manager.is_alias("mv")  # IPython's /bin/mv
        shell.user_ns.update(d, commands=c, **c.namespace())
        load_ipython_extension(shell)
        assert not shell.alias_manager.is_alias("mv")
        shell.run_cell("%mv piz 3.5", store_history=False)
        assert d["piz"].position == 3.5
        shell.run_cell("target = 4.5\n%umvr piz target-3.5", store_history=False)
        assert d["piz"].position == 4.5
        monkeypatch.chdir(tmp_path)
        (tmp_path / "pix").write_text("x")  # what /bin/mv would rename
        shell.run_cell("mv(pix, 50)", store_history=False)
        shell.run_cell("mv pix 51", store_history=False)  # no alias left to run: a Python syntax error
        assert d["pix"].position == 50.0 and (tmp_path / "pix").exists() and not (tmp_path / "51").exists()
        capsys.readouterr()
        result = shell.run_cell("%mv pix 500", store_history=False)
        assert isinstance(result.error_in_exec, ArgumentError) and d["pix"].position == 50.0
        shown = capsys.readouterr()
        # one line naming the motor and its limits, no traceback
        assert shown.err.splitlines() == [f"ArgumentError: {result.error_in_exec}"] and "soft limits" in shown.err
        assert "Traceback" not in shown.out + shown.err
        result = shell.run_cell("mv(pix, float('nan'))", store_history=False)
        assert isinstance(result.error_in_exec, ArgumentError) and len(capsys.readouterr().err.splitlines()) == 1
        # a plan that refuses its arguments inside the RunEngine: the RunEngine's "Run aborted" and its
        # traceback are not logged, the one line is shown
        with caplog.at_level(logging.DEBUG, logger="bluesky"):
            result = shell.run_cell("sxdm((45, 55, 3), (45, 55, float('nan')), [9.0])", store_history=False)
        assert isinstance(result.error_in_exec, ArgumentError)
        assert capsys.readouterr().err.splitlines() == [f"ArgumentError: {result.error_in_exec}"]
        assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
        shell.run_cell("1 / 0", store_history=False)  # a bug keeps its traceback
        assert "ZeroDivisionError" in capsys.readouterr().out
        setup["lines"].clear()
        shell.run_cell("%where_all", store_history=False)  # braggscope's wa(): user and dial
        assert "piz" in "\n".join(setup["lines"]) and "dial" in "\n".join(setup["lines"])
        capsys.readouterr()
        shell.run_cell("%wa motors", store_history=False)  # bluesky's label magic, as bluesky prints it
        shown = capsys.readouterr().out
        assert shown.startswith("motors") and "piz" in shown and "Traceback" not in shown
    finally:
        c.mv(d["pix"], setup["bragg"]["center_um"][0])
        InteractiveShell.clear_instance()


def test_ctrl_c_during_a_scan_pauses_and_resume_loses_nothing(setup, capsys):
    """A real SIGINT (Ctrl-C) in the middle of ``ascan``: bluesky's deferred pause, then resume."""
    import os
    import signal
    import threading

    c, d, RE, docs = setup["c"], setup["devices"], setup["RE"], setup["docs"]
    eta0 = d["eta"].position
    timer = threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(RunEngineInterrupted):
            c.ascan(d["eta"], eta0 - 0.1, eta0 + 0.1, 20, 0.05)  # ~1 s: 21 points of 0.05 s
    finally:
        timer.cancel()
    assert RE.state == "paused" and "RE.resume()" in capsys.readouterr().err
    start = [doc for name, doc in docs if name == "start"][-1]
    taken = len(_events(docs, start["uid"]))
    assert 0 < taken < 21
    RE.resume()
    ev = _events(docs, start["uid"])
    assert RE.state == "idle" and [name for name, _ in docs][-1] == "stop"
    assert [e["seq_num"] for e in ev] == list(range(1, 22))  # every point once, in order
    assert [e["data"]["eta"] for e in ev] == pytest.approx(list(np.linspace(eta0 - 0.1, eta0 + 0.1, 21)))
    c.mv(d["eta"], eta0)


@pytest.mark.slow  # the session's embedded catalog takes ~5-25 s to start
def test_the_shell_namespace_has_the_commands(tmp_path):
    from braggscope.app.session.namespace import make_session

    cfg = load_config()
    for key, value in (("storage.data_dir", str(tmp_path / "data")), ("detector.read_path", str(tmp_path / "det")),
                       ("detector.write_path", str(tmp_path / "det")), ("detector.shape", [32, 32]),
                       ("detector.cch", [16.0, 16.0])):
        cfg.set(key, value)
    ns = make_session(cfg, inprocess=True, live=False, headless=True)
    try:
        for name in ("wa", "wm", "mv", "umv", "mvr", "umvr", "ct", "ascan", "dscan", "a2scan", "d2scan", "mesh",
                     "amesh", "dmesh", "lineup", "cen", "peak", "com", "fwhm", "goto_cen", "goto_peak", "goto_com",
                     "where", "roi", "set_roi", "sxdm", "kmap", "bcdi", "calibrate", "dry", "helpme"):
            assert callable(ns[name]), name
        assert ns["peaks"] is ns["commands"].peaks
        ns["RE"].md["proposal"] = "hc-1234"  # persisted in the data directory (storage.session_md)
        assert "hc-1234" in (tmp_path / "data" / "session_md.json").read_text()
        assert ns["commands"].RE is ns["RE"] and ns["help"] == ns["commands"].help
        assert ns["mv"](ns["pix"], 12.0) == {"pix": 12.0}
        assert ns["live_figures"]["scan"].path == tmp_path / "data" / "live" / "scan.png"
        summary = ns["dry"](ns["sxdm_map"]([ns["detector"]], ns["pix"], (10, 11, 3), ns["piy"], (10, 11, 2),
                                           ns["eta"], [9.0, 9.1]))
        assert summary.points == 12
        # no fly-scan hardware in the in-process simulation: kmap says so in one line, nothing moves
        assert "flyer" not in ns
        with pytest.raises(ArgumentError, match="no fly-scan hardware.*pv.fly"):
            ns["kmap"]((10, 11, 3), (10, 11, 2), [9.0, 9.1], 0.005)
        assert ns["pix"].position == 12.0
    finally:
        ns["__cleanup__"]()


def test_umv_shows_the_position_while_moving(capsys):
    from braggscope.simulators.inprocess import LimitedSynAxis

    slow = LimitedSynAxis(name="pix", limits=(0, 100), delay=0.5)
    c = make_commands(RunEngine(call_returns_result=True), {"pix": slow}, out=print)
    assert c.umv(slow, 10.0) == {"pix": 10.0}
    out = capsys.readouterr().out
    updates = out.split("\r")
    assert len(updates) >= 4  # refreshed in place (every 0.1 s) while the motor moved
    assert "pix            0 um" in updates[1] and updates[-1].strip() == "pix           10 um"


def test_procedures_sxdm_bcdi_calibrate_dry(setup):
    from braggscope.core.calibration import CalibrationResult
    from braggscope.core.eccentricity import EccentricityModel
    from braggscope.plans import sxdm_map

    c, d, docs, bragg = setup["c"], setup["devices"], setup["docs"], setup["bragg"]
    cx, cy = bragg["center_um"]
    etas = [bragg["eta"] - 0.05, bragg["eta"] + 0.05]
    c.eccentricity = EccentricityModel(eta0=bragg["eta"], x=(0.1, 0.0), y=(0.0, 0.0))
    try:
        r = c.sxdm((cx - 0.2, cx + 0.2, 3), (cy - 0.1, cy + 0.1, 2), etas)
    finally:
        c.eccentricity = None
    start = [doc for name, doc in docs if name == "start" and doc["uid"] == r.run_start_uids[0]][0]
    assert start["plan_name"] == "sxdm_map" and start["shape"] == [2, 2, 3]
    assert start["eccentricity"]["x"] == [0.1, 0.0]  # the session's model applied
    assert len(_events(docs, start["uid"])) == 12

    r = c.bcdi(bragg["eta"], size_m=300e-9, d_spacing=bragg["d_spacing"], step_deg=0.01, eta_range=0.04,
               allow_undersampling=True)
    start = [doc for name, doc in docs if name == "start" and doc["uid"] == r.run_start_uids[0]][0]
    assert start["plan_name"] == "bcdi_rocking" and len(_events(docs, start["uid"])) == len(start["eta"])

    setup["lines"].clear()
    result = c.calibrate((cx - 1.5, cx + 1.5, 7), (cy - 1.5, cy + 1.5, 7), [bragg["eta"] - 0.3, bragg["eta"],
                                                                          bragg["eta"] + 0.3],
                         detectors=[d["xrf"]], intensity_field="xrf_counts")
    assert isinstance(result, CalibrationResult)
    report = "\n".join(setup["lines"])
    assert report.startswith("eccentricity calibration: ") and result.verdict() in report
    assert c.eccentricity is (result.use if result.accepted else None)  # what sxdm() applies next
    c.eccentricity = None

    setup["lines"].clear()
    n_docs = len(docs)
    summary = c.dry(sxdm_map([d["mpx1x4"]], d["pix"], (cx, cx + 1, 3), d["piy"], (cy, cy + 1, 2), d["eta"], etas))
    assert summary.points == 12 and "12 points" in setup["lines"][0] and len(docs) == n_docs
