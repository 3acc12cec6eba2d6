"""An operando campaign: one particle followed through charge and discharge, unattended, for hours.

:func:`operando` runs (or follows) the cell's electrochemical protocol and, at each checkpoint of its
:class:`~.operando_campaign.Campaign` (every N seconds of the protocol, or at voltage or charge
thresholds), finds the particle and its Bragg peak again (:mod:`.operando_track`), checks that the peak
is inside the planned rocking range and the particle inside the planned map, and measures: a fly SXDM
map, a step SXDM map or an oversampled BCDI rocking scan. Every run carries ``campaign_id``,
``checkpoint``, ``operando_role`` (``track``: the searches, in their streams; ``measure``) and ``operando``
(the cell's state, the positions predicted and found, the re-centring applied, the checks, the campaign).

It goes on through pause and resume (a checkpoint message at every step and poll), suspensions (the
beam's suspenders), a lost IOC (the checkpoint is taken up again once the devices are back, up to
``max_recoveries`` times; one whose measurement had ended is not measured again) and the end of the
session: started again with a catalog, it continues at the checkpoint after the last one measured
successfully, so none is measured twice or lost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from bluesky import preprocessors as bpp
from bluesky.utils import Msg, MsgGenerator

from braggscope.core.electrochem import STATE_FIELDS, Protocol
from braggscope.core.errors import ArgumentError
from braggscope.core.geometry import wavelength
from braggscope.devices.fluorescence import FluorescenceDetector
from braggscope.devices.potentiostat import STATE_SIGNALS, Potentiostat

from .bcdi import bcdi_rocking
from .checks import check_within_limits, eccentricity_model
from .dryrun import DEFAULT_OVERHEAD_S, dry_run
from .fly import FlyLineError, sxdm_fly
from .guard import DetectorFrameError, DeviceLostError, guarded, recovered
from .metadata import area_detector
from .operando_campaign import Campaign, Tracker, completed_checkpoints, due, expected_wait_s
from .operando_track import find_particle, follow_peak, set_exposure, set_roi
from .sxdm import sxdm_map

__all__ = ["operando", "OperandoError", "CampaignEstimate", "estimate_campaign"]

#: Failures after which a campaign waits for its devices and measures the checkpoint again (a fly line
#: that stayed short after its retries, or whose trigger unit did not arm, is one: the map is taken again).
RECOVERABLE = (DeviceLostError, DetectorFrameError, TimeoutError, FlyLineError)


class OperandoError(RuntimeError):
    """A campaign that cannot go on (its devices did not come back, its recoveries are spent)."""


@dataclass(frozen=True)
class Roles:
    """The campaign's devices by what they do."""

    area: object
    potentiostat: object
    x: object
    y: object
    eta: object
    delta: object
    xrf: object = None
    flyer: object = None
    energy: object = None

    @property
    def devices(self) -> list:
        return [d for d in (self.area, self.potentiostat, self.x, self.y, self.eta, self.delta, self.xrf,
                            self.flyer, self.energy) if d is not None and hasattr(d, "connected")]


def operando(detectors: Sequence, motors: Mapping, campaign, *, catalog=None, md: dict | None = None
             ) -> MsgGenerator[list]:
    """Follow one particle through the cell's protocol, measuring it at every checkpoint.

    Parameters
    ----------
    detectors : list
        The area detector (with its ROI counter), the potentiostat
        (:class:`~braggscope.devices.potentiostat.Potentiostat`), and as the campaign needs them the
        fluorescence detector (re-centring) and the fly scanner (``measure="fly"``,
        :func:`braggscope.devices.fly.make_flyer`).
    motors : mapping
        ``x``, ``y`` (piezo, um), ``eta``, ``delta`` (deg); ``energy`` (keV) for ``measure="bcdi"``.
    campaign : Campaign or dict
        What to measure and when (:class:`~braggscope.plans.operando_campaign.Campaign`).
    catalog : tiled client, optional
        Where the campaign's runs go: the checkpoints it holds are not measured again.
    md : dict, optional
        Extra metadata for every run.

    Returns
    -------
    list of str
        The uids of the measurements this call made, one per checkpoint.

    Raises
    ------
    ArgumentError
        Before anything moves: a campaign that does not check, a device missing for what it asks,
        a resumed campaign whose checkpoints are not the recorded ones.
    OperandoError
        The devices did not come back within ``reconnect_timeout_s``, or the recoveries are spent.
    """
    campaign = Campaign.coerce(campaign)
    roles = _roles(detectors, motors, campaign)
    done = completed_checkpoints(catalog, campaign.campaign_id) if catalog is not None else []
    _check_resumable(campaign, done)
    return (yield from guarded(_campaign(roles, campaign, done, md)))


def _campaign(roles: Roles, campaign: Campaign, done: list, md: dict | None):
    """The checkpoints after those ``done``, each until it is measured or the protocol has ended."""
    tracker = Tracker({"time_s": d["state"]["time_s"], **d["position"]} for d in done)
    yield from _begin(roles, campaign, resumed=bool(done))
    fallback = yield from _start_position(roles, campaign)
    previous = done[-1]["state"] if done else (yield from read_state(roles.potentiostat))
    index, uids, last = (done[-1]["checkpoint"] + 1 if done else 0), [], campaign.last_index()
    context = {"md": dict(md or {}), "fallback": fallback, "model": eccentricity_model(campaign.eccentricity)}
    while last is None or index <= last:
        result = yield from _recovering(roles, campaign, lambda i=index, p=previous: _checkpoint(
            roles, campaign, i, p, tracker, context), on_recover=lambda: context.update(roi_set=False))
        if result is None:  # the protocol ended before this checkpoint was due
            break
        uids.append(result["uid"])
        previous = result["state"] or previous
        index += 1
    return uids


def _roles(detectors, motors, campaign: Campaign) -> Roles:
    """The devices by role, or ArgumentError naming what the campaign lacks."""
    detectors = list(detectors or [])
    flyers = [d for d in detectors if hasattr(d, "kickoff") and hasattr(d, "collect_asset_docs")]
    pstats = [d for d in detectors if isinstance(d, Potentiostat)]
    xrfs = [d for d in detectors if isinstance(d, FluorescenceDetector)]
    area = area_detector([d for d in detectors if d not in flyers and d not in pstats])
    missing = [name for name, ok in (("a potentiostat", pstats), ("an area detector with a ROI counter",
                                                                   area is not None and hasattr(area, "roi1")))
               if not ok]
    if campaign.measure == "fly" and not flyers:
        missing.append("a fly scanner (measure='fly')")
    if campaign.recentre == "xrf" and not xrfs:
        missing.append("a fluorescence detector (recentre='xrf')")
    unknown = sorted(set(motors) - {"x", "y", "eta", "delta", "energy"})
    absent = [k for k in ("x", "y", "eta", "delta") if k not in motors]
    if missing or unknown or absent:
        raise ArgumentError(f"operando: detectors lack {', '.join(missing) or 'nothing'}; motors must map x, y, eta, "
                            f"delta (and energy) to positioners (missing {absent}, unknown {unknown})")
    return Roles(area=area, potentiostat=pstats[0], x=motors["x"], y=motors["y"], eta=motors["eta"],
                 delta=motors["delta"], xrf=xrfs[0] if xrfs else None, flyer=flyers[0] if flyers else None,
                 energy=motors.get("energy"))


def _check_resumable(campaign: Campaign, done: list) -> None:
    """A resumed campaign keeps its checkpoints: the same thresholds mean the same indices."""
    if not done or not done[-1].get("campaign"):
        return
    recorded = Campaign.coerce({k: (tuple(v) if isinstance(v, list) else v) for k, v in done[-1]["campaign"].items()})
    if recorded.thresholds != campaign.thresholds or recorded.every_s != campaign.every_s:
        raise ArgumentError(f"campaign {campaign.campaign_id!r} was recorded with checkpoints "
                            f"{recorded.thresholds} every_s={recorded.every_s}; this call gives {campaign.thresholds} "
                            f"every_s={campaign.every_s} (use another campaign_id for another schedule)")


def read_state(potentiostat):
    """The cell's state now: :data:`~braggscope.core.electrochem.STATE_FIELDS`, ``status``, ``step_kind``
    (None in a dry run)."""
    reading = yield Msg("read", potentiostat)
    if not reading:
        return None
    name = potentiostat.name
    out = {f: reading[f"{name}_{STATE_SIGNALS[f]}"]["value"] for f in STATE_FIELDS if f"{name}_{STATE_SIGNALS[f]}"
           in reading}
    for extra in ("status", "step_kind"):
        key = f"{name}_{extra}"
        if key in reading:
            out[extra] = reading[key]["value"]
    return out


def _begin(roles: Roles, campaign: Campaign, *, resumed: bool):
    """Start the campaign's protocol (a fresh campaign that brings one), or check there is one to follow."""
    pstat = roles.potentiostat
    if campaign.protocol is not None and not resumed:
        yield Msg("set", pstat.protocol, Protocol.coerce(campaign.protocol).to_json(), group="operando-protocol")
        yield Msg("wait", None, group="operando-protocol")
        yield Msg("set", pstat.start_command, 1, group="operando-protocol")
        yield Msg("wait", None, group="operando-protocol")
        return
    state = yield from read_state(pstat)
    if state is None:
        return
    if state.get("status") == "paused" and campaign.pause_cell:  # a checkpoint cut short held the cell
        yield Msg("set", pstat.pause_command, 0, group="operando-protocol")
        yield Msg("wait", None, group="operando-protocol")
    elif state.get("status") == "idle" and not resumed:
        raise ArgumentError("operando: the cell runs no protocol; give the campaign a protocol or start one "
                            f"({pstat.name}.load(...), {pstat.name}.start())")


def _start_position(roles: Roles, campaign: Campaign):
    """Where the aligned particle is at the start, in the eccentricity model's frame (x, y at its eta0)."""
    model = eccentricity_model(campaign.eccentricity)
    start = dict(campaign.start) if campaign.start else {}
    if not start:
        for key in ("eta", "delta", "x", "y"):
            motor = getattr(roles, key)
            reading = yield Msg("read", motor)
            value = (reading or {}).get(motor.name, {}).get("value")
            start[key] = float(value) if value is not None else _position(motor)
    dx, dy = model.offset(start["eta"])
    return {"eta": start["eta"], "delta": start["delta"], "x": start["x"] - float(dx), "y": start["y"] - float(dy)}


def _position(motor) -> float:
    try:
        return float(motor.position)
    except Exception:  # noqa: BLE001 - a dry run without the devices: any number will do
        return 0.0


def _recovering(roles: Roles, campaign: Campaign, make_plan, on_recover=None):
    """Run ``make_plan()``; after a lost device, wait for the devices, tell the guard, call ``on_recover()``
    (an IOC that restarted lost its settings) and run it again."""
    for attempt in range(campaign.max_recoveries + 1):
        try:
            return (yield from make_plan())
        except RECOVERABLE as exc:
            if attempt == campaign.max_recoveries:
                raise OperandoError(f"campaign {campaign.campaign_id!r}: {attempt + 1} failures, the last: {exc}; "
                                    "started again, it goes on at the checkpoint it stopped at") from exc
            yield from _await_devices(roles, campaign, exc)
            yield from recovered()
            if on_recover is not None:
                on_recover()
    return None


def _await_devices(roles: Roles, campaign: Campaign, exc):
    """Wait (pausable) until every device of the campaign is connected again."""
    waited = 0.0
    while waited < campaign.reconnect_timeout_s:
        if all(device.connected for device in roles.devices):
            return
        yield Msg("checkpoint")
        yield Msg("sleep", None, 1.0)
        waited += 1.0
    lost = [device.name for device in roles.devices if not device.connected]
    raise OperandoError(f"campaign {campaign.campaign_id!r}: {', '.join(lost)} still not connected "
                        f"{campaign.reconnect_timeout_s:g} s after: {exc}") from exc


def _checkpoint(roles: Roles, campaign: Campaign, index: int, previous, tracker: Tracker, context: dict):
    """Wait for checkpoint ``index``, find the particle and its peak, measure, let the cell go on; None when the
    protocol ended. Run again after a lost device, a checkpoint already measured only lets the cell go on (the
    IOC was lost after its measurement: it is not measured twice)."""
    measured = context.setdefault("measured", {})
    if index not in measured:
        result = yield from _track_and_measure(roles, campaign, index, previous, tracker, context)
        if result is None:
            return None
    if campaign.pause_cell:
        yield from _cell_command(roles.potentiostat.pause_command, 0)
    return measured[index]


def _track_and_measure(roles: Roles, campaign: Campaign, index: int, previous, tracker: Tracker, context: dict):
    """:func:`_checkpoint` up to its measurement (the cell held at open circuit with ``pause_cell``): its uid and
    the cell's state, also put in ``context["measured"]`` and the tracker as soon as the measurement's run
    closed successfully (a device lost while the plan unstages after it does not undo it); None when the
    protocol ended."""
    state = yield from _await_due(roles, campaign, index, previous)
    if state is False:
        return None
    due_time = time.time()  # the wall clock when the checkpoint came due (its cost is counted from here)
    predicted = tracker.predict(state["time_s"] if state else None, context["fallback"])
    md = {**context["md"], "campaign_id": campaign.campaign_id, "checkpoint": index,
          "operando": {"state": state, "predicted": predicted, "campaign": campaign.to_dict(), "due_time": due_time}}
    if campaign.sample is not None:
        md["sample"] = campaign.sample
    if campaign.pause_cell:
        yield from _cell_command(roles.potentiostat.pause_command, 1)
    if campaign.roi is not None and not context.get("roi_set"):  # once, and again after a lost IOC
        yield from set_roi(roles.area, campaign.roi)
        context["roi_set"] = True
    found = yield from _track(roles, campaign, predicted, context["model"], md)
    at_measure = (yield from read_state(roles.potentiostat)) or state
    last = tracker.history[-1] if tracker.history else context["fallback"]
    operando_md = dict(md["operando"], state=at_measure, state_at_checkpoint=state, position=found["position"],
                       checks=found["checks"], tracking=found["tracking"],
                       recentring={f"d{k}": found["position"][k] - last[k] for k in Tracker.KEYS})
    time_s = at_measure["time_s"] if at_measure else (state or {}).get("time_s", 0.0)

    def note_measured(name, doc):
        if doc.get("exit_status") == "success":
            context["measured"][index] = {"uid": doc["run_start"], "state": at_measure}
            tracker.add(time_s, found["position"])

    plan = _measure(roles, campaign, found["position"], context["model"],
                    dict(md, operando_role="measure", operando=operando_md))
    uid = yield from bpp.subs_wrapper(plan, {"stop": [note_measured]})
    if index not in context["measured"]:  # a dry run: no documents
        context["measured"][index] = {"uid": uid, "state": at_measure}
    return context["measured"][index]


def _cell_command(signal, value):
    yield Msg("set", signal, value, group="operando-cell")
    yield Msg("wait", None, group="operando-cell")


def _await_due(roles: Roles, campaign: Campaign, index: int, previous):
    """Poll the cell (pausable) until checkpoint ``index`` is due: its state; False when the protocol ended
    first. In a dry run (no readings) the expected wait is slept instead and None returned."""
    while True:
        state = yield from read_state(roles.potentiostat)
        if state is None:
            capacity = _capacity(roles.potentiostat)
            wait = expected_wait_s(campaign, index, capacity) - (expected_wait_s(campaign, index - 1, capacity)
                                                                 if index > 0 else 0.0)
            if wait > 0:
                yield Msg("sleep", None, wait)
            return None
        if due(campaign, index, state, previous):
            return state
        if state.get("status") in ("done", "idle"):
            return False
        yield Msg("checkpoint")
        yield Msg("sleep", None, campaign.poll_s)


def _capacity(potentiostat) -> float | None:
    try:
        return float(potentiostat.capacity.get())
    except Exception:  # noqa: BLE001 - a dry run without the device: the estimate does without
        return None


def _track(roles: Roles, campaign: Campaign, predicted: dict, model, md: dict):
    """Re-centre, re-find the peak, check, in one run (``operando_role`` ``track``); returns ``position``
    (eta, delta, x, y in the model's frame), ``checks`` and ``tracking`` (what each search found)."""
    result = {}

    def body():
        result.update((yield from _searches(roles, campaign, predicted, model)))

    counters = [roles.area] + ([roles.xrf] if roles.xrf is not None else [])
    # its stop does not wait for the catalog (storage.background.NO_WAIT_KEY): the run is written while the
    # checkpoint's measurement goes on, whose stop waits for both
    run_md = dict(md, operando_role="track", plan_name="operando_track", catalog_wait_at_stop=False)
    yield from bpp.stage_wrapper(bpp.run_wrapper(body(), md=run_md), counters)
    return result


def _searches(roles: Roles, campaign: Campaign, predicted: dict, model):
    """The searches of :func:`_track`, inside its run (the ROI counter's window set before)."""
    counters = [roles.area] + ([roles.xrf] if roles.xrf is not None else [])
    yield from set_exposure(counters, campaign.track_exposure_s)
    yield Msg("set", roles.eta, predicted["eta"], group="operando-angles")
    yield Msg("set", roles.delta, predicted["delta"], group="operando-angles")
    yield Msg("wait", None, group="operando-angles")
    recentre = campaign.recentre if campaign.recentre != "auto" else ("xrf" if roles.xrf else "diffraction")
    dx, dy = (float(v) for v in model.offset(predicted["eta"]))
    guess = (predicted["x"] + dx, predicted["y"] + dy)
    particle = {"x": guess[0], "y": guess[1], "found": True, "width_x": 0.0, "width_y": 0.0, "scans": 0}
    roi_field = f"{roles.area.name}_roistat1_total"
    line_eta = predicted["eta"]
    if recentre == "xrf":
        particle = yield from find_particle([roles.xrf], roles.x, roles.y, f"{roles.xrf.name}_counts", guess,
                                            campaign.line_half_um, campaign.line_points)
    yield from _move_to(roles, particle)
    peak = yield from follow_peak(roles.area, roles.eta, roles.delta, roi_field, predicted, campaign)
    if recentre == "diffraction":
        yield Msg("set", roles.eta, peak["eta"], group="operando-angles")
        yield Msg("wait", None, group="operando-angles")
        line_eta = peak["eta"]
        guess = (guess[0] + float(model.offset(line_eta)[0]) - dx, guess[1] + float(model.offset(line_eta)[1]) - dy)
        particle = yield from find_particle([roles.area], roles.x, roles.y, roi_field, guess, campaign.line_half_um,
                                            campaign.line_points, prefix="diffraction")
    dx, dy = (float(v) for v in model.offset(line_eta))
    position = {"eta": peak["eta"], "delta": peak["delta"], "x": particle["x"] - dx, "y": particle["y"] - dy}
    checks = _checks(roles, campaign, peak, particle, position)
    return {"position": position, "checks": checks, "tracking": {"particle": particle, "peak": peak,
                                                                  "recentre": recentre}}


def _move_to(roles: Roles, particle: dict):
    """The beam on the particle found (the peak is searched there)."""
    yield Msg("set", roles.x, particle["x"], group="operando-particle")
    yield Msg("set", roles.y, particle["y"], group="operando-particle")
    yield Msg("wait", None, group="operando-particle")


def _checks(roles: Roles, campaign: Campaign, peak: dict, particle: dict, position: dict) -> dict:
    """Whether the peak is inside the planned rocking range and the particle inside the planned map."""
    hx, hy = campaign.half_width_um
    etas = campaign.rocking_angles(position["eta"])
    check_within_limits(roles.eta, "the campaign's rocking angles around the peak found", min(etas), max(etas))
    fits = particle["width_x"] / 2 <= hx and particle["width_y"] / 2 <= hy
    return {"peak_found": peak["found"], "peak_in_range": peak["in_range"] and peak["found"],
            "particle_found": particle["found"], "particle_in_map": bool(particle["found"] and fits),
            "particle_width_um": [particle["width_x"], particle["width_y"]]}


def _measure(roles: Roles, campaign: Campaign, position: dict, model, md: dict):
    """The checkpoint's measurement around ``position``, delta moved to the peak found first (the tracking's
    rocking scan ran at the delta expected: the peak sits on the ROI window's centre row only at this one);
    returns its uid."""
    yield Msg("set", roles.delta, position["delta"], group="operando-delta")
    yield Msg("wait", None, group="operando-delta")
    (hx, hy), (nx, ny) = campaign.half_width_um, campaign.points
    x_range = (position["x"] - hx, position["x"] + hx, nx)
    y_range = (position["y"] - hy, position["y"] + hy, ny)
    etas = campaign.rocking_angles(position["eta"])
    pstat = roles.potentiostat
    if campaign.measure == "fly":
        plan = sxdm_fly([roles.flyer], roles.x, x_range, roles.y, y_range, roles.eta, etas, dwell_s=campaign.dwell_s,
                        eccentricity=model, md=md)
        signals = [pstat.voltage, pstat.current, pstat.charge, pstat.lithium, pstat.time_s]
        return (yield from bpp.monitor_during_wrapper(plan, signals))
    yield from set_exposure([roles.area] + ([roles.xrf] if roles.xrf is not None else []), campaign.dwell_s)
    if campaign.measure == "step":
        detectors = [roles.area, pstat] + ([roles.xrf] if roles.xrf is not None else [])
        return (yield from sxdm_map(detectors, roles.x, x_range, roles.y, y_range, roles.eta, etas,
                                    eccentricity=model, md=md))
    options = dict(campaign.bcdi)
    energy = roles.energy if roles.energy is not None else options.pop("energy_kev", None)
    options["d_spacing"] = _d_spacing(roles, position["delta"], options["d_spacing"])
    return (yield from bcdi_rocking([roles.area, pstat], roles.eta, position["eta"], energy=energy,
                                    x_motor=roles.x, y_motor=roles.y, x_um=position["x"], y_um=position["y"],
                                    eccentricity=model, md=md, **options))


def _d_spacing(roles: Roles, delta: float, nominal: float) -> float:
    """The reflection's d-spacing now, from the peak's delta (Bragg's law), else ``nominal``."""
    try:
        energy = float(roles.energy.position)
    except Exception:  # noqa: BLE001 - no energy positioner, or a dry run: the nominal value
        return float(nominal)
    d = wavelength(energy) / (2.0 * math.sin(math.radians(delta / 2.0)))
    return d if math.isfinite(d) and d > 0 else float(nominal)


@dataclass(frozen=True)
class CampaignEstimate:
    """What a campaign will cost (:func:`estimate_campaign`), on the cell's own clock.

    ``checkpoints`` (None: until the protocol ends), ``protocol_s`` (the protocol's time to the last
    checkpoint), per checkpoint ``track_s`` (re-finding the peak and re-centring the particle, no
    widened scan), ``measure_s`` (the measurement, from its dry run) and ``measure_points``;
    ``beam_s`` (their sum: the beam time of one checkpoint) and ``duration_s`` (the campaign: with
    ``pause_cell`` the protocol's clock stops while a checkpoint measures, else the checkpoints run
    within it).
    """

    checkpoints: int | None
    protocol_s: float
    track_s: float
    track_points: int
    measure_s: float
    measure_points: int
    pause_cell: bool

    @property
    def beam_s(self) -> float:
        return self.track_s + self.measure_s

    @property
    def duration_s(self) -> float:
        n = self.checkpoints or 1
        return self.protocol_s + (n if self.pause_cell else 1) * self.beam_s

    def to_dict(self) -> dict:
        return {**asdict(self), "beam_s": self.beam_s, "duration_s": self.duration_s}

    def __str__(self) -> str:
        n = "until the protocol ends" if self.checkpoints is None else f"{self.checkpoints} checkpoints"
        return (f"{n}, estimated {self.duration_s / 3600:.2f} h on the cell's clock; per checkpoint "
                f"{self.beam_s:.1f} s of beam: tracking {self.track_s:.1f} s ({self.track_points} points), "
                f"measurement {self.measure_s:.1f} s ({self.measure_points} points), tracking "
                f"{100 * self.track_s / max(self.beam_s, 1e-9):.0f} %")


def estimate_campaign(detectors: Sequence, motors: Mapping, campaign, *, overhead_s: float = DEFAULT_OVERHEAD_S
                      ) -> CampaignEstimate:
    """The dry run of a campaign: its duration and the beam time of each checkpoint, tracking and
    measurement apart (nothing moves; the devices give limits, velocities and the capacity).

    The measurement is costed by :func:`~braggscope.plans.dry_run` of the checkpoint's plan at the
    campaign's start position; the tracking by its points when the peak is where expected (two line
    scans and a rocking scan, each point ``track_exposure_s`` + ``overhead_s``; a peak lost adds the radial
    scan) and the moves of its dry run; the protocol's
    time to the last checkpoint as :func:`~.operando_campaign.expected_wait_s` gives it.
    """
    campaign = Campaign.coerce(campaign)
    roles = _roles(detectors, motors, campaign)
    model = eccentricity_model(campaign.eccentricity)
    start = dict(campaign.start) if campaign.start else {k: _position(getattr(roles, k)) for k in Tracker.KEYS}
    dx, dy = (float(v) for v in model.offset(start["eta"]))
    position = {"eta": start["eta"], "delta": start["delta"], "x": start["x"] - dx, "y": start["y"] - dy}
    searches = _searches(roles, campaign, position, model)
    track_moves = dry_run(searches, acquire_time_s=0.0, overhead_s=0.0)
    recentre = campaign.recentre if campaign.recentre != "auto" else ("xrf" if roles.xrf else "diffraction")
    n_track = campaign.rocking_points + (0 if recentre == "none" else 2 * campaign.line_points)  # peak not lost
    track_s = track_moves.duration_s + n_track * (campaign.track_exposure_s + overhead_s)
    measured = dry_run(_measure(roles, campaign, position, model, {}), acquire_time_s=campaign.dwell_s,
                       overhead_s=overhead_s)
    last = campaign.last_index()
    protocol_s = expected_wait_s(campaign, last, _capacity(roles.potentiostat)) if last is not None else 0.0
    return CampaignEstimate(checkpoints=None if last is None else last + 1, protocol_s=float(protocol_s),
                            track_s=float(track_s), track_points=int(n_track), measure_s=float(measured.duration_s),
                            measure_points=int(measured.points), pause_cell=bool(campaign.pause_cell))
