"""KMAP-class fly scans: the fast piezo axis swept with hardware triggers, the slow axis stepped.

``sxdm_fly`` maps the same (eta, y, x) grid as :func:`braggscope.plans.sxdm.sxdm_map`, recorded as
one run whose primary stream comes from StreamResource/StreamDatum documents (frames and captured
positions in one detector file and one capture file per run, a datum per line); the ``lines`` stream
records every line attempt (counts, retries). The fly scanner keeps each line's count; the plan reads
it (a ``read`` message) and decides the retries: a short line is flown again up to ``max_retries``
times, a line during which the beam was lost up to :data:`MAX_BEAM_RETRIES` times (the suspenders of
:mod:`.beam` hold the run meanwhile). With the machine's refill countdown, a line that would not end
before the next refill waits for it, recorded in the ``suspensions`` stream. docs/fly.md describes the
hardware model and what is checked.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import numpy as np
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import FailedStatus, Msg, MsgGenerator

from braggscope.core.errors import ArgumentError

from .beam import SuspensionLog
from .checks import check_angles, check_number, check_range, check_within_limits, eccentricity_model
from .metadata import names

__all__ = ["FlyLineError", "MAX_BEAM_RETRIES", "fly_lines", "sxdm_fly"]

#: Flights of a line the beam may interrupt, after the first, before the run gives up.
MAX_BEAM_RETRIES = 10
#: Polls of the refill countdown while a line waits for a refill (0.2-0.5 s each).
MAX_REFILL_POLLS = 6000


class FlyLineError(RuntimeError):
    """A line stayed short (missed pulses, dropped frames) after every retry."""


def _flyer(detectors):
    flyers = [d for d in detectors if hasattr(d, "kickoff") and hasattr(d, "collect_asset_docs")]
    if len(flyers) != 1:
        raise ArgumentError("detectors must hold exactly one fly scanner (braggscope.devices.fly.make_flyer"
                            f"(devices, cfg)), got {names(detectors)}")
    return flyers[0]


def fly_lines(x_range, y_range, etas, *, eccentricity=None, snake=False):
    """Every line of a fly map in acquisition order: dicts eta_index, row, eta (deg), y, x0, x1 (um).

    ``x0``/``x1`` are the first and last exposure centres, the eccentricity offset
    at the line's angle applied; with ``snake`` odd rows run from high x to low.
    """
    x0, x1, _ = check_range("x_range", x_range)
    y0, y1, ny = check_range("y_range", y_range)
    etas = check_angles("etas", etas)
    model = eccentricity_model(eccentricity)
    lines = []
    for i, eta in enumerate(etas):
        dx, dy = (float(v) for v in model.offset(eta))
        for j, y in enumerate(np.linspace(y0, y1, ny)):
            a, b = (x0, x1) if not snake or j % 2 == 0 else (x1, x0)
            lines.append({"eta_index": i, "row": j, "eta": eta, "y": float(y) + dy, "x0": a + dx, "x1": b + dx})
    return lines


def sxdm_fly(
    detectors: Sequence,
    x_motor,
    x_range,
    y_motor,
    y_range,
    eta_motor,
    etas,
    *,
    dwell_s: float,
    snake: bool = False,
    eccentricity=None,
    max_retries: int = 2,
    refill_guard: bool | None = None,
    sample: str | None = None,
    md: dict | None = None,
) -> MsgGenerator[str]:
    """Map a crystal at each rocking angle with the fast axis flown and the slow axis stepped.

    Parameters
    ----------
    detectors : list
        Must hold one fly scanner (:func:`braggscope.devices.fly.make_flyer`); its
        detector records the geometry in the descriptor's configuration.
    x_motor, x_range : positioner, (start, stop, num)
        Fast axis (flown) and its exposure centres in um; num >= 2.
    y_motor, y_range : positioner, (start, stop, num)
        Slow axis (stepped), um.
    eta_motor, etas : positioner, sequence of float
        Rocking motor and angles (deg), outermost.
    dwell_s : float
        Time per point (s): the pulse period; the exposure is ``dwell_s`` minus the
        detector's read-out time. Checked with the line length against the dead
        time and the stage's velocity limit before anything moves.
    snake : bool
        Odd rows swept backwards (no return move).
    eccentricity : EccentricityModel or dict, optional
        Drift model; each line's start, stop and slow position are shifted by its
        offset at the line's angle.
    max_retries : int
        Retries of a line whose pulse, position or frame count is short; each attempt
        is an event of the ``lines`` stream. A line short after them fails the run
        (:class:`FlyLineError`), the lines taken so far stay in the run. A line during which the
        beam was lost (the scanner's beam watch) is flown again, up to :data:`MAX_BEAM_RETRIES`
        times, without counting against ``max_retries``.
    refill_guard : bool, optional
        Hold a line whose sweep would not end before the machine's next refill until the refill is
        over (needs the scanner's beam watch, i.e. a ``machine``). Default: the scanner's setting
        (``[beam] fly_refill_guard``, on).
    sample : str, optional
    md : dict, optional

    Returns
    -------
    str
        The run uid (from the RunEngine).
    """
    flyer = _flyer(detectors)
    dwell_s = check_number("dwell_s", dwell_s, positive=True)
    if int(max_retries) != max_retries or not 0 <= max_retries <= 10:
        raise ArgumentError(f"max_retries must be an integer in 0..10, got {max_retries!r}")
    x_range, y_range = check_range("x_range", x_range), check_range("y_range", y_range)
    etas = check_angles("etas", etas)
    model = eccentricity_model(eccentricity)
    velocity, exposure = _check_line_speed(flyer, x_range, dwell_s)
    lines = [dict(line, num=x_range[2], dwell_s=dwell_s, max_retries=int(max_retries))
             for line in fly_lines(x_range, y_range, etas, eccentricity=model, snake=snake)]
    _check_limits(flyer, lines, velocity, x_range, (x_motor, y_motor, eta_motor))
    refill = _refill_wait(flyer, refill_guard, x_range[2], dwell_s)
    fly = {"dwell_s": dwell_s, "exposure_s": exposure, "velocity_um_s": velocity, "max_retries": int(max_retries),
           "lines": len(lines), "flyer": flyer.name, "refill_guard_s": refill or 0.0}
    motors = {"x_motor": x_motor, "y_motor": y_motor, "eta_motor": eta_motor}
    _md = _start_metadata(detectors, flyer, motors, x_range, y_range, etas, model, snake, fly)
    if sample is not None:
        _md["sample"] = sample
    _md.update(md or {})

    @bpp.stage_decorator([flyer])
    @bpp.run_decorator(md=_md)
    def inner():
        yield from bps.declare_stream(flyer, name="primary", collect=True)
        yield from bps.declare_stream(flyer.attempts, name="lines", collect=True)
        yield from bps.checkpoint()
        yield from bpp.finalize_wrapper(_fly_map(flyer, lines, eta_motor, y_motor, refill), _finish_lines(flyer))

    return (yield from inner())


def _check_line_speed(flyer, x_range, dwell_s) -> tuple[float, float]:
    """The line's velocity (um/s) and exposure (s), or ArgumentError naming what to change."""
    try:
        return flyer.check_line(*x_range, dwell_s)
    except ValueError as exc:
        raise ArgumentError(f"x_range/dwell_s: {exc}") from None


def _refill_wait(flyer, refill_guard, num, dwell_s) -> float | None:
    """The countdown (s) below which a line waits for the refill, or None when lines do not wait."""
    beam = getattr(flyer, "beam", None)
    if refill_guard is None:
        refill_guard = getattr(flyer, "refill_guard", True)
    if not refill_guard or beam is None:
        return None
    return float(num) * dwell_s + flyer.line_overhead_s() + float(getattr(flyer, "refill_margin_s", 0.5))


def _check_limits(flyer, lines, velocity, x_range, motors) -> None:
    """Every line, its run-up, slow position and angle within the motors' limits."""
    x_motor, y_motor, eta_motor = motors
    x0, x1, nx = x_range
    ramp = flyer.ramp_um(velocity) + abs(x1 - x0) / max(nx - 1, 1)
    xs = [v for line in lines for v in (line["x0"], line["x1"])]
    check_within_limits(x_motor, "x_range (+ eccentricity offsets and run-up)", min(xs) - ramp, max(xs) + ramp)
    ys = [line["y"] for line in lines]
    check_within_limits(y_motor, "y_range (+ eccentricity offsets)", min(ys), max(ys))
    etas = [line["eta"] for line in lines]
    check_within_limits(eta_motor, "etas", min(etas), max(etas))


def _start_metadata(detectors, flyer, motors, x_range, y_range, etas, model, snake, fly) -> dict:
    """The start document of a fly map: shape, angles, raster, eccentricity, the line settings."""
    shape = [len(etas), y_range[2], x_range[2]]
    raster = {"fast": flyer.fast, "slow": flyer.slow, "x": list(x_range), "y": list(y_range), "snake": bool(snake)}
    names_of = {role: motor.name for role, motor in motors.items()}
    return {
        "plan_name": "sxdm_fly",
        "detector": flyer.detector.name,
        "shape": shape,
        "eta": etas,
        "raster": raster,
        "eccentricity": model.to_dict(),
        "num_points": int(np.prod(shape)),
        "fly": fly,
        "plan_args": {"detectors": names(detectors), "x_motor": names_of["x_motor"], "x_range": list(x_range),
                      "y_motor": names_of["y_motor"], "y_range": list(y_range), "eta_motor": names_of["eta_motor"],
                      "etas": etas, "dwell_s": fly["dwell_s"], "snake": bool(snake), "eccentricity": model.to_dict(),
                      "max_retries": fly["max_retries"]},
        "hints": {"dimensions": [([names_of[role]], "primary") for role in ("eta_motor", "y_motor", "x_motor")],
                  "gridding": "rectilinear", "raster": raster},
        "extents": [list(y_range[:2]), list(x_range[:2])],
    }


def _fly_map(flyer, lines, eta_motor, y_motor, refill=None):
    """Every line in turn; eta moves when it changes, the slow axis with each line's set-up."""
    current_eta = None
    log = SuspensionLog()
    for line in lines:
        if line["eta"] != current_eta:
            yield from bps.mv(eta_motor, line["eta"])
            current_eta = line["eta"]
        yield from _fly_line(flyer, line, moves=((y_motor, line["y"]),), refill=refill, log=log)


def _fly_line(flyer, line, moves=(), refill=None, log=None):
    """Fly one line, again while the scanner counts it short or flown without beam; the previous line is
    documented while this one sweeps, and this one is left to be documented while the next sweeps.

    ``moves``: (motor, position) pairs set together with the first attempt's ``prepare`` (one wait).
    ``refill``: the refill countdown (s) below which an attempt waits for the refill first.
    The messages are built directly: bluesky's plan stubs capture the caller's stack at every call,
    a cost paid on every line between two sweeps.
    """
    short = lost = attempt = 0
    while True:
        if refill is not None:
            yield from _await_refill(flyer, line, refill, log)
        group = f"fly-{line['eta_index']}-{line['row']}-{attempt}"
        spec = dict(line, attempt=attempt, retry=short, beam_retries_left=MAX_BEAM_RETRIES - lost)
        yield Msg("prepare", flyer, spec, group=group)  # first: see FlyScanner.pause
        for motor, position in moves if attempt == 0 else ():
            yield Msg("set", motor, position, group=group)
        yield Msg("wait", None, group=group)
        yield Msg("kickoff", flyer, group=group)
        yield from _started(line, group)
        yield from _document(flyer)  # what was counted before this line, while it sweeps
        yield Msg("checkpoint")  # a pause takes effect here: this line finishes its sweep meanwhile
        report = yield from _count(flyer, line, attempt)
        if report is None or report.accepted:  # None: a dry run (plans.dry_run), nothing was flown
            return
        yield from _document(flyer)  # recorded (superseded, short, no beam) before it is flown again
        if report.writer_error:  # no retry can write frames
            raise FlyLineError(f"line {line['row']} at eta {line['eta']:g} deg: the detector could not write its "
                               f"frames: {report.writer_error}; the lines taken so far are in the run")
        lost, short = lost + report.beam_lost, short + (not report.beam_lost)
        if lost > MAX_BEAM_RETRIES or short > line["max_retries"]:
            why = (f"lost the beam {lost} times" if report.beam_lost else
                   f"stayed short after {line['max_retries']} retries")
            raise FlyLineError(f"line {line['row']} at eta {line['eta']:g} deg {why} ({report.counts()}); "
                               "the lines taken so far are in the run")
        attempt += 1


def _started(line, group):
    """Wait for the line's kickoff; a kickoff that fails (the trigger unit will not arm) ends the run with the
    scanner's own reason, not bluesky's ``Status(..., success=False)``."""
    try:
        yield Msg("wait", None, group=group)
    except FailedStatus as exc:
        raise FlyLineError(f"line {line['row']} at eta {line['eta']:g} deg did not start: {_status_error(exc)}; "
                           "the lines taken so far are in the run") from exc


def _status_error(exc: FailedStatus) -> str:
    """The error a failed status carries (the guard's explanation of it, when the guard ran)."""
    cause = exc.__cause__
    if cause is None and exc.args:
        with contextlib.suppress(Exception):  # a status without exception()
            cause = exc.args[0].exception()
    return str(cause if cause is not None else exc)


def _await_refill(flyer, line, needed_s: float, log):
    """Hold the line while the refill countdown is shorter than ``needed_s``, until the refill is over (the
    countdown starts again); the wait is recorded in the ``suspensions`` stream. A checkpoint before each
    poll: a suspension meanwhile (the front end closes for the refill) replays one short sleep at most."""
    countdown = flyer.beam.machine.refill_countdown
    start = first = previous = None
    for _ in range(MAX_REFILL_POLLS):
        yield Msg("checkpoint")
        reading = yield Msg("read", countdown)
        if reading is None:  # a dry run
            return
        value = float(reading[countdown.name]["value"])
        if previous is None and (value < 0 or value >= needed_s):
            return  # no refill due during the line
        if previous is not None and (value < 0 or value > previous + 0.5):
            break  # the refill is over: the countdown started again
        if previous is None:
            start, first = time.time(), value
        previous = value
        yield Msg("sleep", None, min(value, 0.5) if value > 0 else 0.2)
    if start is not None:
        reason = (f"line {line['row']} at eta {line['eta']:g} deg held for the refill due in {first:.1f} s "
                  f"(the line takes {needed_s:.1f} s)")
        yield from log.record("refill", reason, start, time.time())


def _count(flyer, line, attempt):
    """Complete the attempt and read the scanner's count of it (None in a dry run). An immediate pause
    that cut the wait short is not replayed (FlyScanner.pause): the count read then is an earlier
    attempt's, and the plan completes again, which waits for this one."""
    for _ in range(2):
        group = f"fly-complete-{line['eta_index']}-{line['row']}-{attempt}"
        yield Msg("complete", flyer, group=group)
        yield Msg("wait", None, group=group)
        reading = yield Msg("read", flyer.last_line)
        report = None if reading is None else reading[flyer.last_line.name]["value"]
        if report is None or (report.eta_index, report.row, report.attempt) == (line["eta_index"], line["row"],
                                                                                  attempt):
            return report
    raise RuntimeError(f"{flyer.name}: no count of line {line['row']} (eta index {line['eta_index']}, attempt "
                       f"{attempt}) after its complete")


def _document(flyer):
    """The documents of what the scanner counted and has not reported: the accepted lines' frames and
    positions (primary stream), and an event of the ``lines`` stream per attempt."""
    yield Msg("collect", flyer, stream=False, return_payload=False, name="primary")
    yield Msg("collect", flyer.attempts, stream=False, return_payload=False, name="lines")


def _finish_lines(flyer):
    """On the way out (end, failure, abort), every line flown documented: one still sweeping is completed
    first (its frames are taken; they belong in the run)."""
    with contextlib.suppress(Exception):  # the error that ended the run is the one to report
        yield from bps.complete(flyer, wait=True)
    yield from _document(flyer)
