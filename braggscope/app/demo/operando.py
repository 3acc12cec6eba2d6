"""``braggscope demo operando``: one NMC622 particle followed through a partial charge.

The caproto simulator serves the operando cell (``pv.potentiostat``; the cell's clock runs
``time_scale`` times faster than the wall so that a charge fits a demo). The campaign
(:func:`braggscope.plans.operando`) starts a 1 C charge to 4.3 V and, at every checkpoint (every
``every_s`` seconds of the protocol), holds the cell at open circuit, finds the particle again
(fluorescence line scans) and its Bragg peak (radial and rocking scans), and flies an SXDM map; the
live view shows the current map and the d-spacing against voltage so far. The series is then
reduced from the catalog (:func:`braggscope.analysis.operando.reduce_campaign`): ``series.h5`` and
its figures (voltage curve with the checkpoints, d-spacing and strain against voltage and lithium,
montage, movie).
"""

from __future__ import annotations

import time

import bluesky.plan_stubs as bps
import numpy as np
from ophyd import EpicsSignal

from braggscope.analysis.live.callback import LiveSXDM
from braggscope.analysis.live.dispatch import LiveMapDispatcher
from braggscope.analysis.live.operando import LiveOperando, LiveOperandoPlot
from braggscope.analysis.operando import reduce_campaign
from braggscope.app.demo.beamline import reflection_window, say
from braggscope.core.eccentricity import EccentricityModel
from braggscope.core.electrochem import charge_to
from braggscope.core.errors import ArgumentError
from braggscope.core.setup import ScanSetup
from braggscope.devices.fly import make_flyer
from braggscope.plans.operando import estimate_campaign, operando

__all__ = ["demo_operando", "fresh_cell", "operando_config", "SETTINGS"]

#: The demo's campaign: full and ``--quick``. ``time_scale``: the cell's clock against the wall.
SETTINGS = {
    "full": dict(checkpoints=8, every_s=400.0, points=(16, 16), etas=(-0.06, -0.03, 0.0, 0.03, 0.06), dwell_s=0.005,
                 time_scale=200.0),
    "quick": dict(checkpoints=6, every_s=500.0, points=(10, 10), etas=(-0.04, 0.0, 0.04), dwell_s=0.004,
                  time_scale=500.0),
}


class RunTimeline:
    """When each run of a campaign opened and when it was closed *and in the catalog*: subscribed to the
    RunEngine after the catalog writer, whose ``stop`` waits until the catalog holds the run, it sees the
    stop document only then (the document's own ``time`` is taken before that wait). ``runs``: one dict
    per run, ``uid``, ``role`` (``operando_role``), ``checkpoint``, ``due`` (when its checkpoint came due,
    ``operando.due_time``), ``opened`` (the start document's time), ``stopped`` (the stop document's),
    ``recorded`` (the wall time once the catalog has it), in order."""

    def __init__(self):
        self.runs: list[dict] = []
        self._open: dict[str, dict] = {}

    def __call__(self, name, doc):
        if name == "start":
            run = {"uid": doc["uid"], "role": doc.get("operando_role"), "checkpoint": doc.get("checkpoint"),
                   "due": (doc.get("operando") or {}).get("due_time"), "opened": float(doc["time"])}
            self._open[doc["uid"]] = run
            self.runs.append(run)
        elif name == "stop" and doc.get("run_start") in self._open:
            self._open.pop(doc["run_start"]).update(stopped=float(doc["time"]), recorded=time.time(),
                                                    exit_status=doc.get("exit_status"))


def operando_config(cfg, *, quick: bool, time_scale: float | None = None) -> None:
    """Point ``cfg`` at the simulator's cell (``pv.potentiostat`` beside the other PVs when unset) and let
    the cell's clock run fast; a simulator started from ``cfg`` then serves it."""
    if not (cfg.get("pv.potentiostat") or "").strip():
        cfg.set("pv.potentiostat", f"{cfg['pv.piezo']}cell:")
    cfg.set("simulator.cell.time_scale", float(time_scale or SETTINGS["quick" if quick else "full"]["time_scale"]))
    cfg.set("simulator.cell.material", "nmc622")


def fresh_cell(cfg, timeout_s: float = 40.0) -> None:
    """The simulated cell as newly assembled (its ``SIM:Reset``): the demo charges a pristine particle, not
    what an earlier demo left in the cell's autosave. The put completes once the crystal is the fresh cell's."""
    reset = EpicsSignal(f"{cfg['pv.potentiostat']}SIM:Reset", name="cell_reset", put_complete=True)
    try:
        reset.wait_for_connection(timeout=10)
        reset.set(1).wait(timeout_s)
    finally:
        reset.destroy()
    say("a fresh cell: the simulated cell reset (SIM:Reset), the particle pristine")


def demo_operando(bl, out, *, quick, reduce=True, checkpoints=None, points=None, campaign_id=None) -> dict:
    """The campaign on ``bl`` (whose simulator serves the cell, :func:`operando_config`), its live view and
    the series reduction; the summary dict."""
    d = bl.devices
    if "potentiostat" not in d:
        raise ArgumentError("demo operando needs the cell's potentiostat: set pv.potentiostat (docs/operando.md)")
    settings = dict(SETTINGS["quick" if quick else "full"])
    if checkpoints is not None:
        settings["checkpoints"] = int(checkpoints)
    if points is not None:
        settings["points"] = tuple(points)
    setup = bl.sim.bragg_setup()
    cx, cy = setup["center_um"]
    bl.detector.wait_for_connection(all_signals=True, timeout=30)
    beam = ScanSetup.from_devices(bl.detector, energy=d.get("energy"), delta=d["delta"], nu=d["nu"], phi=d["phi"])
    roi = reflection_window(beam.cch, beam.detector_shape, size=32)  # the tracking's ROI counter
    campaign_id = campaign_id or f"demo-operando-{time.strftime('%Y%m%d-%H%M%S')}"
    campaign = dict(campaign_id=campaign_id, every_s=settings["every_s"], count=settings["checkpoints"],
                    measure="fly", points=settings["points"], half_width_um=(1.8, 1.8), etas=settings["etas"],
                    dwell_s=settings["dwell_s"], roi=roi, poll_s=0.2, pause_cell=True, sample="nmc622",
                    line_points=11, radial_points=11, rocking_points=11, track_exposure_s=0.005,
                    start={"eta": setup["eta"], "delta": setup["delta"], "x": cx, "y": cy},
                    protocol={"steps": [charge_to(4.3, 1.0).to_dict()]},
                    eccentricity=EccentricityModel.coerce(bl.cfg.get("eccentricity"), "[eccentricity]").to_dict())
    detectors = [bl.detector, d["potentiostat"], make_flyer(d, bl.cfg)] + ([bl.xrf] if bl.xrf is not None else [])
    motors = {"x": d["pix"], "y": d["piy"], "eta": d["eta"], "delta": d["delta"]}
    fresh_cell(bl.cfg)
    # the particle aligned at the start, as the scientist leaves it (the first checkpoint re-finds, not aligns)
    bl.RE(bps.mv(d["delta"], setup["delta"], d["eta"], setup["eta"], d["pix"], cx, d["piy"], cy))
    estimate = estimate_campaign(detectors, motors, campaign)
    say(f"campaign {campaign_id}: {estimate}")
    say(f"NMC622 {setup['reflection']}: 1 C charge to 4.3 V, {settings['checkpoints']} checkpoints every "
        f"{settings['every_s']:g} s of the protocol (the cell's clock x{bl.cfg['simulator.cell.time_scale']:g})")

    window = reflection_window(beam.cch, beam.detector_shape)
    view = LiveOperando(LiveSXDM(batch_size=32, detector_roi=window))
    dispatcher = LiveMapDispatcher(view)
    timeline = RunTimeline()  # subscribed after the catalog writer: a stop reaches it once the catalog has the run
    tokens = [bl.RE.subscribe(dispatcher), bl.RE.subscribe(timeline)]
    plot = LiveOperandoPlot(view)
    t0 = time.monotonic()
    try:
        uids = bl.RE(operando(detectors, motors, campaign, catalog=bl.client)).plan_result
    finally:
        for token in tokens:
            bl.RE.unsubscribe(token)
        dispatcher.close()
    t_campaign = time.monotonic() - t0
    plot.save(out / "live_operando.png", dpi=90)
    for p in view.history():
        say(f"checkpoint {p['checkpoint']}: {p.get('voltage', float('nan')):.3f} V, x = "
            f"{p.get('lithium', float('nan')):.3f}, live d = {p['d_mean']:.5f} A")
    result = {"campaign_id": campaign_id, "uids": list(uids), "checkpoints": len(uids), "campaign_s":
              round(t_campaign, 1), "estimate": estimate.to_dict(), "live_figure": str(out / "live_operando.png"),
              "timeline": timeline.runs}
    if reduce and uids:
        say("reducing the series (braggscope reduce series)")
        t1 = time.monotonic()
        series, paths = reduce_campaign(bl.client, campaign_id, out / "series.h5", figures=out,
                                        detector_roi=window)
        result.update(reduce_s=round(time.monotonic() - t1, 1), series=str(paths["series"]),
                      figures=sorted(str(p) for k, p in paths.items() if k != "series"),
                      d_mean=[float(v) for v in series["d_mean"].values],
                      lithium=[float(v) for v in series["lithium"].values],
                      voltage=[float(v) for v in series["voltage"].values])
        say("d_mean (A) against lithium: " + ", ".join(f"x={x:.3f}: {dm:.5f}" for x, dm in
                                                       zip(result["lithium"], result["d_mean"])))
        if not np.all(np.isfinite(result["d_mean"])):
            say("some checkpoints have no d-spacing: see the montage")
    return result
