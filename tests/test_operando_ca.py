"""Operando campaigns over Channel Access against the simulator's known lattice law, front and drift.

One simulator per module (prefix ``BSOPR:``, 128 x 128 frames) with an NMC622 cell whose clock runs
100 times faster than the wall. The truth of every measurement is read from the simulated cell (its
``SIM:`` PVs) when the measurement starts, the cell held at open circuit meanwhile (``pause_cell``), and
the simulator's own physics (cell_sample, the forward model) turns it into the peak's rocking centre,
the particle's place and the lattice the map must show.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tiled")

from bluesky.callbacks import CallbackBase
from ophyd import EpicsSignalRO

from braggscope import storage
from braggscope.core.electrochem import charge_to
from braggscope.core.geometry import bragg_angle
from braggscope.simulators.beamline import SimulatedBeamline
from braggscope.simulators.cell import CellState, material
from braggscope.simulators.cell_sample import cell_sample
from tests.conftest import CA_PORTS
from tests.ioc_fixtures import module_simulator_config

pytestmark = pytest.mark.slow

PREFIX, SCALE = "BSOPR:", 300.0
DRIFT_UM_PER_H = [12.0, -8.0, 0.3]  # the particle moves ~10 um in the campaign, z showing along x
TRUTH = ("Front_RBV", "ShellLi_RBV", "CoreLi_RBV", "DriftX_RBV", "DriftY_RBV", "DriftZ_RBV")


def _config(root):
    cfg = module_simulator_config(root, PREFIX, 128)
    cfg.set("simulator.peak_rate", 2.0e6)
    cfg.set("pv.potentiostat", f"{PREFIX}cell:")
    cfg.set("simulator.cell.time_scale", SCALE)
    cfg.set("simulator.cell.drift_um_per_h", DRIFT_UM_PER_H)
    cfg.set("simulator.cell.relax_time_s", 1.0e7)  # the front stays while a checkpoint holds the cell
    return cfg


@contextlib.contextmanager
def cell_rig(cfg, truth_pvs):
    """The beamline's devices on a running simulator, the cell's truth signals (name -> PV), the catalog and
    a recording RunEngine with the plans' guard: ``(devices, truth, client, RE)``; channels cleared after."""
    from braggscope.app.beamline.runengine import recording_run_engine
    from braggscope.devices.ca_client import release_devices
    from braggscope.devices.factory import make_devices
    from braggscope.plans.beam import BeamPolicy
    from braggscope.plans.guard import install_guard

    devices, truth = {}, []
    try:
        devices = make_devices(cfg, connect_timeout=30.0)
        truth = [EpicsSignalRO(pv, name=name) for name, pv in truth_pvs.items()]
        for sig in truth:
            sig.wait_for_connection(timeout=30)
        client = storage.open_catalog(cfg)
        RE = recording_run_engine(devices, client, beam=BeamPolicy.from_config(cfg))
        install_guard(RE)
        yield devices, truth, client, RE
    finally:
        for sig in truth:
            sig.destroy()
        release_devices(devices)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from braggscope.app.beamline.simulator import start_simulator, stop_simulator
    from braggscope.devices.fly import make_flyer

    root = tmp_path_factory.mktemp("operando")
    cfg = _config(root)
    handle = start_simulator(cfg, port=CA_PORTS["module"], state_file=root / "sim.json", set_env=False,
                             exit_with_parent=True)
    state = {"handle": handle}
    try:
        with cell_rig(cfg, {name: f"{PREFIX}cell:SIM:{name}" for name in TRUTH}) as (devices, truth, client, RE):
            yield {"cfg": cfg, "d": devices, "flyer": make_flyer(devices, cfg), "client": client, "RE": RE,
                   "truth": truth, "beamline": SimulatedBeamline.from_config(cfg), "root": root, "state": state}
    finally:
        stop_simulator(state["handle"])


def _campaign(bench, campaign_id, **kwargs):
    setup = bench["beamline"].bragg_setup()
    cx, cy = setup["center_um"]
    options = dict(campaign_id=campaign_id, every_s=900.0, count=4, measure="fly", points=(12, 12),
                   half_width_um=(1.8, 1.8), etas=(-0.02, 0.0, 0.02), dwell_s=0.004, roi=(49, 79, 49, 79),
                   poll_s=0.2,
                   line_half_um=2.0, line_points=11, rocking_points=11, track_exposure_s=0.005,  # the demo's tracking
                   start={"eta": setup["eta"], "delta": setup["delta"], "x": cx, "y": cy},
                   protocol={"steps": [charge_to(4.3, 1.0).to_dict()]}, pause_cell=True,
                   eccentricity=dict(bench["cfg"]["simulator.eccentricity"]), sample="nmc622")
    options.update(kwargs)
    return options


def _reset_cell(bench):
    from braggscope.app.demo.operando import fresh_cell

    fresh_cell(bench["cfg"], timeout_s=10)


class _Truth(CallbackBase):
    """At every measurement's start: the cell's truth (the cell is held while it measures)."""

    def __init__(self, signals):
        self.signals, self.by_uid = signals, {}

    def start(self, doc):
        if doc.get("operando_role") == "measure":
            self.by_uid[doc["uid"]] = {s.name: float(s.get(use_monitor=False)) for s in self.signals}


def _run(bench, campaign):
    from braggscope.plans.operando import operando

    d = bench["d"]
    truth = _Truth(bench["truth"])
    token = bench["RE"].subscribe(truth)
    try:
        result = bench["RE"](operando([d["detector"], d["xrf"], d["potentiostat"], bench["flyer"]],
                                      {"x": d["pix"], "y": d["piy"], "eta": d["eta"], "delta": d["delta"]},
                                      campaign, catalog=bench["client"]))
    finally:
        bench["RE"].unsubscribe(token)
    return result.plan_result, truth.by_uid


def _truth_sample(bench, truth):
    """The simulated crystal and its drift as the cell was when a measurement started."""
    beamline = SimulatedBeamline.from_config(bench["cfg"])
    state = CellState(x_shell=truth["ShellLi_RBV"], x_core=truth["CoreLi_RBV"], front=truth["Front_RBV"])
    beamline.set_sample(cell_sample(beamline.sample, material("nmc622"), state, front_width=0.04))
    beamline.set_drift([truth["DriftX_RBV"], truth["DriftY_RBV"], truth["DriftZ_RBV"]])
    return beamline


def _rocking_centre(beamline, eta0, delta):
    """Where the particle's rocking curve is centred at ``delta`` (the forward model's expected ROI counts)."""
    etas = np.linspace(eta0 - 0.5, eta0 + 0.5, 201)
    cx, cy = beamline.apparent_center(eta0)
    counts = np.array([beamline.forward.expected_frame(*beamline.beam_on_sample(cx, cy, e), e, delta)[49:79, 49:79]
                       .sum() for e in etas])
    counts = counts - np.percentile(counts, 10)
    above = counts >= 0.5 * counts.max()
    return float(np.sum(etas[above] * counts[above]) / np.sum(counts[above]))


@pytest.fixture(scope="module")
def tracked(bench):
    """One campaign of four fly-map checkpoints through a partial charge (the tests below share it)."""
    _reset_cell(bench)
    return _run(bench, _campaign(bench, "track-a"))


def test_tracking_keeps_the_peak_in_range_and_the_particle_in_the_map_while_both_move(bench, tracked):
    uids, truths = tracked
    assert len(uids) == 4
    client, first = bench["client"], None
    for uid in uids:
        start = client[uid].metadata["start"]
        op, truth = start["operando"], truths[uid]
        assert client[uid].metadata["stop"]["exit_status"] == "success"
        assert op["checks"]["peak_in_range"] and op["checks"]["particle_in_map"], op["checks"]
        beamline = _truth_sample(bench, truth)
        position = op["position"]
        centre = _rocking_centre(beamline, position["eta"], position["delta"])
        assert min(start["eta"]) - 0.01 <= centre <= max(start["eta"]) + 0.01  # the peak inside the rocking range
        x_true, y_true = beamline.apparent_center(position["eta"])
        dx, dy = (float(v) for v in beamline.eccentricity.offset(position["eta"]))
        assert abs(x_true - dx - position["x"]) < 0.3 and abs(y_true - dy - position["y"]) < 0.3
        # the peak on the ROI window's centre row (64 of 49:79) with delta where the tracking put it, and the
        # map measured there (the tracking's rocking scan ran at the delta expected)
        assert abs(_peak_row(beamline, start["eta"], position["delta"]) - 64.0) < 30 / 4
        delta_name = bench["d"]["delta"].name
        assert float(client[uid]["baseline"].read()[delta_name][0]) == pytest.approx(position["delta"], abs=1e-3)
        two_theta = 2 * bragg_angle(_mean_d(beamline), beamline.bragg_setup()["energy_kev"])
        first = first or (centre, x_true, y_true, two_theta)
    moved_peak = abs(centre - first[0])
    moved_particle = math.hypot(x_true - first[1], y_true - first[2])
    # NMC622's c axis grows by ~1.4 % from x = 1 to 0.55: the peak moves ~0.09 deg in eta and the mean lattice's
    # 2 theta ~0.26 deg (the part in the rocking range, on which the tracking centres the ROI: ~0.17 deg)
    assert moved_peak > 2 * 0.04 and abs(two_theta - first[3]) > 0.19  # the rocking range, the ROI's height
    assert moved_particle > 2.5 * 3.6  # the map's width


def _peak_row(beamline, etas, delta):
    """The detector row of the particle's peak over the measurement's rocking angles with the detector at
    ``delta`` (the forward model's expected frames over the particle, ROI columns 49:79)."""
    cx, cy = beamline.apparent_center(float(np.mean(etas)))
    grid = np.linspace(-1.5, 1.5, 7)
    image = sum(beamline.forward.expected_frame(*beamline.beam_on_sample(cx + dx, cy + dy, e), e, delta)
                for e in etas for dx in grid for dy in grid)
    rows = image[:, 49:79].sum(axis=1)
    return float(np.argmax(rows - np.median(rows)))


def _mean_d(beamline) -> float:
    """The crystal's area-mean d-spacing (Angstrom)."""
    fine = np.linspace(-2.5, 2.5, 101)
    return float(np.nanmean(_truth_maps(beamline, fine, fine)[0]))


def _truth_maps(beamline, x_um, y_um):
    """The crystal's d-spacing (Angstrom, NaN outside) and shell weight on a grid around its centre."""
    crystal = beamline.sample.crystallites[0]
    cx, cy = crystal.center_um
    xx, yy = np.meshgrid(cx + np.asarray(x_um), cy + np.asarray(y_um))
    fields = crystal.fields(xx, yy)
    inside = np.asarray(fields["support"], bool)
    return np.where(inside, fields["d_spacing"], np.nan), np.where(inside, fields["shell"], np.nan)


def _mean_on_mask(beamline, series, k) -> float:
    """The true mean d-spacing over the pixels of checkpoint ``k``'s map that the reduction kept."""
    d_true, _ = _truth_maps(beamline, series.x.values, series.y.values)
    kept = np.isfinite(series["d_spacing"].isel(checkpoint=k).values) & np.isfinite(d_true)
    return float(np.mean(d_true[kept]))


@pytest.fixture(scope="module")
def reduced(bench, tracked, tmp_path_factory):
    """The campaign reduced by the command a user types (``braggscope reduce series track-a --out series.h5
    --figures DIR``); the dataset the command reduced is kept for the tests (one reduction for them all)."""
    from braggscope.analysis.operando import series as series_module
    from braggscope.app.cli.main import main
    from braggscope.core.config import save_config

    root = tmp_path_factory.mktemp("series")
    cfg_path = save_config(bench["cfg"], root / "cfg.toml")
    out, figures, kept = root / "series.h5", root / "figures", []
    original = series_module.reduce_campaign

    def keep(*args, **kwargs):
        kept.append(original(*args, **kwargs))
        return kept[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(series_module, "reduce_campaign", keep)  # the command imports it when it runs
        code = main(["--config", str(cfg_path), "reduce", "series", "track-a", "--out", str(out),
                     "--figures", str(figures), "--quiet"])
    assert code == 0 and len(kept) == 1
    return {"series": kept[0][0], "out": out, "figures": figures, "cfg_path": cfg_path}


def test_series_recovers_the_lattice_law(bench, tracked, reduced, tmp_path, capsys):
    import h5py

    from braggscope.app.cli.main import main

    uids, truths = tracked
    series, out, figures = reduced["series"], reduced["out"], reduced["figures"]
    assert list(series.checkpoint.values) == [0, 1, 2, 3]
    assert list(series["uid"].values) == list(uids)
    fine = np.linspace(-2.5, 2.5, 201)
    d_true = np.array([float(np.nanmean(_truth_maps(_truth_sample(bench, truths[uid]), fine, fine)[0]))
                       for uid in uids])  # the crystal's area mean, as the reduction's mask weighs it
    d_mean, change = series["d_mean"].values, d_true[-1] - d_true[0]
    assert np.all(np.diff(series["lithium"].values) < 0) and np.all(np.diff(d_mean) > 0)  # c grows on charge
    # the mean d-spacing against lithium: within 3 standard errors of a mean over the map's mask of the truth on
    # the same pixels (the reduction's own noise: the pixels sample a front, the spread is mostly the particle's
    # own; measured 0.2-2.6 mA), and within 20 % of the campaign's change of the particle's area mean (the map
    # sees the part in the rocking range; measured 8-12 %)
    seen = np.array([_mean_on_mask(_truth_sample(bench, truths[uid]), series, k) for k, uid in enumerate(uids)])
    pixels = series["mask"].sum(["y", "x"]).values
    standard_error = np.maximum(3 * series["d_std"].values / np.sqrt(pixels), 2e-4)
    assert np.all(np.abs(d_mean - seen) < standard_error) and np.all(np.abs(d_mean - d_true) < 0.2 * change), \
        (d_mean, seen, d_true, standard_error)
    assert abs(d_mean[0] - d_true[0]) < 2e-4  # pristine: one lattice
    with h5py.File(out) as f:
        assert f["entry/series/d_spacing"].shape == series["d_spacing"].shape
        np.testing.assert_allclose(f["entry/series_checkpoint/lithium"][()], series["lithium"].values)
        np.testing.assert_allclose(f["entry/series_checkpoint/d_mean"][()], d_mean, rtol=1e-9)
    assert {p.name for p in figures.iterdir()} >= {"voltage_curve.png", "lattice_trends.png",
                                                    "montage_d_spacing.png", "movie.gif"}
    # the command: a campaign the catalog lacks is one line, and no file
    cfg_path = reduced["cfg_path"]
    capsys.readouterr()
    assert main(["--config", str(cfg_path), "reduce", "series", "no-such", "--out", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such" in err and not (tmp_path / "x.h5").exists()
    # ... and so is a reference checkpoint the campaign does not have (refused before anything is reduced)
    assert main(["--config", str(cfg_path), "reduce", "series", "track-a", "--reference", "9", "--out",
                 str(tmp_path / "y.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "reference" in err and not (tmp_path / "y.h5").exists()


def test_series_places_the_front_where_it_is(bench, tracked, reduced):
    """The lithium front the simulated cell drives from the particle's surface inward, found in the reduced
    d-spacing maps: at every checkpoint with a front, the depth that best splits each map's pixels into a
    high-d shell and a low-d core (least squares) lies within half a map pixel of the simulator's front."""
    uids, truths = tracked
    series = reduced["series"]
    pixel_um = float(np.median(np.diff(series.x.values)))
    fronts, found, spreads = [], [], []
    for k, uid in enumerate(uids):
        crystal = _truth_sample(bench, truths[uid]).sample.crystallites[0]
        # the map's pixels in the crystal's frame (the series is in the particle's frame the campaign found)
        xx, yy = np.meshgrid(crystal.center_um[0] + series.x.values, crystal.center_um[1] + series.y.values)
        depth = np.asarray(crystal.depth(xx, yy), float)
        d = series["d_spacing"].isel(checkpoint=k).values
        inside = np.isfinite(d) & (np.asarray(crystal.fields(xx, yy)["support"], float) > 0.5)
        assert inside.sum() >= 10, f"checkpoint {k}: {inside.sum()} pixels of the particle mapped"
        order = np.argsort(depth[inside])
        values, depths = d[inside][order], depth[inside][order]
        fronts.append(float(crystal.front))
        spreads.append(float(np.ptp(values)))
        costs = [values[:i].var() * i + values[i:].var() * (values.size - i) for i in range(1, values.size)]
        i = int(np.argmin(costs)) + 1
        found.append((0.5 * (depths[i - 1] + depths[i]), values[:i].mean() - values[i:].mean()))
        half_pixel = 0.5 * pixel_um / crystal.depth_scale_um
        if crystal.front > 0.05:
            assert found[-1][1] > 0, f"checkpoint {k}: the shell behind the front has the larger c"
            assert abs(found[-1][0] - crystal.front) < half_pixel, (k, found[-1], crystal.front, half_pixel)
    assert fronts[0] == 0.0 and all(np.diff(fronts) > 0)  # the front runs inward on charge
    assert spreads[0] < 0.2 * max(spreads[1:])  # pristine: no front in the map (measured 1e-3 A against 3e-2)


def test_a_campaign_started_again_continues_at_the_next_checkpoint(bench, tracked):
    """The session ended after checkpoint 3 (the tests above ran the campaign to its count): started again with
    the same id and one more checkpoint, it measures checkpoint 4 only; another schedule is refused first."""
    from braggscope.core.errors import ArgumentError
    from braggscope.storage import find_runs

    uids, _ = tracked
    with pytest.raises(ArgumentError, match="was recorded with checkpoints"):
        _run(bench, _campaign(bench, "track-a", every_s=600.0, count=5))
    again, _ = _run(bench, _campaign(bench, "track-a", count=5))
    assert len(again) == 1 and again[0] not in uids
    measured = [run.metadata["start"]["checkpoint"]
                for run in find_runs(bench["client"], campaign_id="track-a", operando_role="measure")]
    assert sorted(measured) == [0, 1, 2, 3, 4]  # none measured twice, none lost
    assert bench["client"][again[0]].metadata["start"]["checkpoint"] == 4


def _session(cfg_path, campaign):
    """``tests.operando_session`` in a process of its own (an operator's session): it prints a JSON line per run."""
    env = {**os.environ, "BRAGGSCOPE_CATALOG_SERVER": "off", "EPICS_CA_AUTO_ADDR_LIST": "NO"}
    return subprocess.Popen([sys.executable, "-m", "tests.operando_session", str(cfg_path), json.dumps(campaign)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[1])


def _said(session, until, timeout_s=240.0):
    """The session's JSON lines up to the first for which ``until(line)`` holds (its other output kept for the
    failure message); the session is killed if that takes longer than ``timeout_s``."""
    watchdog = threading.Timer(timeout_s, session.kill)
    watchdog.start()
    lines, other = [], []
    try:
        for text in session.stdout:
            if not text.startswith("{"):
                other.append(text)
                continue
            lines.append(json.loads(text))
            if until(lines[-1]):
                return lines
    finally:
        watchdog.cancel()
    raise AssertionError(f"the session ended (status {session.wait()}) before the line awaited: {lines}\n"
                         + "".join(other[-40:]))


def test_a_campaign_continues_after_its_session_is_killed(bench, tmp_path):
    """A session killed with SIGKILL between checkpoints (once checkpoint 1 is measured), then a new session
    with the same campaign: it measures checkpoints 2 and 3 from what the catalog holds; none twice, none lost."""
    from braggscope.core.config import load_config, save_config
    from braggscope.storage import find_runs

    path = save_config(bench["cfg"], tmp_path / "session.toml")
    cfg = load_config(path)
    cfg.set("storage.data_dir", str(tmp_path / "data"))  # a catalog of its own: this process writes the module's
    path = save_config(cfg, path)
    _reset_cell(bench)
    campaign = _campaign(bench, "killed-a")
    first = _session(path, campaign)
    try:
        said = _said(first, lambda line: line.get("role") == "measure" and line["checkpoint"] == 1)
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    finally:
        first.kill()
        first.wait(30)
    measured_first = {line["checkpoint"]: line["stop"] for line in said if line["role"] == "measure"}
    assert sorted(measured_first) == [0, 1] and all(line["exit_status"] == "success" for line in said)
    second = _session(path, campaign)
    try:
        said = _said(second, lambda line: "done" in line)
        assert second.wait(60) == 0
    finally:
        second.kill()
        second.wait(30)
    measured_second = {line["checkpoint"]: line["stop"] for line in said if line.get("role") == "measure"}
    assert sorted(measured_second) == [2, 3] and said[-1]["done"] == [measured_second[2], measured_second[3]]
    client = storage.open_catalog(cfg)
    runs = [run.metadata for run in find_runs(client, campaign_id="killed-a", operando_role="measure")]
    succeeded = sorted((m["start"]["checkpoint"], m["start"]["uid"]) for m in runs
                       if (m.get("stop") or {}).get("exit_status") == "success")
    assert succeeded == sorted({**measured_first, **measured_second}.items())  # each checkpoint once, none lost


class _RestartAfter(CallbackBase):
    """Stops the simulator and starts it again (in a thread) once checkpoint ``after`` is measured."""

    def __init__(self, bench, after):
        self.bench, self.after, self.starts, self.errors = bench, after, {}, []
        self.done, self.thread, self.pids = threading.Event(), None, []

    def start(self, doc):
        self.starts[doc["uid"]] = doc

    def stop(self, doc):
        start = self.starts.get(doc["run_start"], {})
        if self.thread is None and start.get("operando_role") == "measure" and start["checkpoint"] == self.after:
            self.thread = threading.Thread(target=self._restart, daemon=True)
            self.thread.start()

    def _restart(self):
        from braggscope.app.beamline.simulator import start_simulator, stop_simulator

        state = self.bench["state"]
        try:
            self.pids.append(state["handle"].pid)
            stop_simulator(state["handle"])
            time.sleep(2.0)  # the campaign meets its IOCs gone
            state["handle"] = start_simulator(self.bench["cfg"], port=CA_PORTS["module"],
                                              state_file=self.bench["root"] / "sim.json", set_env=False,
                                              exit_with_parent=True)
            self.pids.append(state["handle"].pid)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
        finally:
            self.done.set()


def test_a_campaign_continues_after_an_ioc_restart(bench):
    """The simulator (motors, detector, cell: every IOC) stopped once checkpoint 1 is measured and started again
    (the cell takes up its autosaved state): the campaign waits for its devices, goes on with checkpoint 2 and
    ends; each checkpoint measured once, the peak and the particle found after the restart as before."""
    from braggscope.storage import find_runs

    _reset_cell(bench)
    restart = _RestartAfter(bench, after=1)
    token = bench["RE"].subscribe(restart)
    try:
        uids, _ = _run(bench, _campaign(bench, "restart-a", reconnect_timeout_s=120.0))
    finally:
        bench["RE"].unsubscribe(token)
        restart.done.wait(120)
    assert not restart.errors and len(set(restart.pids)) == 2, (restart.errors, restart.pids)
    client = bench["client"]
    runs = [run.metadata for run in find_runs(client, campaign_id="restart-a", operando_role="measure")]
    succeeded = sorted((m["start"]["checkpoint"], m["start"]["uid"]) for m in runs
                       if (m.get("stop") or {}).get("exit_status") == "success")
    assert [c for c, _ in succeeded] == [0, 1, 2, 3] and sorted(uids) == sorted(u for _, u in succeeded)
    for uid in uids[2:]:
        checks = client[uid].metadata["start"]["operando"]["checks"]
        assert checks["peak_in_range"] and checks["particle_in_map"], checks
