"""KMAP-class fly scans: the fast piezo axis swept with hardware triggers, the slow axis stepped.

``sxdm_fly`` maps the same (eta, y, x) grid as :func:`braggscope.plans.sxdm.sxdm_map`,
recorded as one run whose primary stream comes from StreamResource/StreamDatum
documents (frames and captured positions in one detector file and one capture file per run, a
datum per line); the ``lines``
stream records every line attempt (counts, retries). docs/fly.md describes the
hardware model and what is checked.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import MsgGenerator

from braggscope.core.errors import ArgumentError

from ._common import (check_angles, check_number, check_range, check_within_limits, eccentricity_model,
                      names)

__all__ = ["FlyLineError", "fly_lines", "sxdm_fly"]


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
    x0, x1, nx = check_range("x_range", x_range)
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
    fast_motor,
    x_range,
    slow_motor,
    y_range,
    eta_motor,
    etas,
    *,
    dwell_s: float,
    snake: bool = False,
    eccentricity=None,
    max_retries: int = 2,
    sample: str | None = None,
    md: dict | None = None,
) -> MsgGenerator[str]:
    """Map a crystal at each rocking angle with the fast axis flown and the slow axis stepped.

    Parameters
    ----------
    detectors : list
        Must hold one fly scanner (:func:`braggscope.devices.fly.make_flyer`); its
        detector records the geometry in the descriptor's configuration.
    fast_motor, x_range : positioner, (start, stop, num)
        Fast axis (flown) and its exposure centres in um; num >= 2.
    slow_motor, y_range : positioner, (start, stop, num)
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
        (:class:`FlyLineError`), the lines taken so far stay in the run.
    sample : str, optional
    md : dict, optional

    Returns
    -------
    str
        The run uid (from the RunEngine).
    """
    flyer = _flyer(detectors)
    x0, x1, nx = check_range("x_range", x_range)
    y_range = check_range("y_range", y_range)
    etas = check_angles("etas", etas)
    dwell_s = check_number("dwell_s", dwell_s, positive=True)
    if int(max_retries) != max_retries or not 0 <= max_retries <= 10:
        raise ArgumentError(f"max_retries must be an integer in 0..10, got {max_retries!r}")
    model = eccentricity_model(eccentricity)
    try:
        velocity, exposure = flyer.check_line(x0, x1, nx, dwell_s)
    except ValueError as exc:
        raise ArgumentError(f"x_range/dwell_s: {exc}") from None
    lines = fly_lines((x0, x1, nx), y_range, etas, eccentricity=model, snake=snake)
    ramp = flyer.ramp_um(velocity) + abs(x1 - x0) / max(nx - 1, 1)
    xs = [v for line in lines for v in (line["x0"], line["x1"])]
    check_within_limits(fast_motor, "x_range (+ eccentricity offsets and run-up)", min(xs) - ramp, max(xs) + ramp)
    ys = [line["y"] for line in lines]
    check_within_limits(slow_motor, "y_range (+ eccentricity offsets)", min(ys), max(ys))
    check_within_limits(eta_motor, "etas", min(etas), max(etas))

    ny = y_range[2]
    shape = [len(etas), ny, nx]
    raster = {"fast": flyer.fast, "slow": flyer.slow, "x": [x0, x1, nx], "y": list(y_range), "snake": bool(snake)}
    _md = {
        "plan_name": "sxdm_fly",
        "detector": flyer.detector.name,
        "shape": shape,
        "eta": etas,
        "raster": raster,
        "eccentricity": model.to_dict(),
        "num_points": int(np.prod(shape)),
        "fly": {"dwell_s": dwell_s, "exposure_s": exposure, "velocity_um_s": velocity, "max_retries": int(max_retries),
                "lines": len(lines), "flyer": flyer.name},
        "plan_args": {"detectors": names(detectors), "fast_motor": fast_motor.name, "x_range": [x0, x1, nx],
                      "slow_motor": slow_motor.name, "y_range": list(y_range), "eta_motor": eta_motor.name,
                      "etas": etas, "dwell_s": dwell_s, "snake": bool(snake), "eccentricity": model.to_dict(),
                      "max_retries": int(max_retries)},
        "hints": {"dimensions": [([eta_motor.name], "primary"), ([slow_motor.name], "primary"),
                                 ([fast_motor.name], "primary")], "gridding": "rectilinear", "raster": raster},
        "extents": [list(y_range[:2]), [x0, x1]],
    }
    if sample is not None:
        _md["sample"] = sample
    _md.update(md or {})

    flying = {"line": None, "pending": None}  # kicked off and not completed; completed, not yet documented

    def document(report):
        """The ``lines`` event of a counted attempt and, for an accepted one, its frames and positions."""
        flyer.accept_line(report)
        yield from bps.collect(flyer, name="primary")
        flyer.show_line(report)
        yield from bps.trigger_and_read([flyer.line_report], name="lines")

    def document_pending():
        report, flying["pending"] = flying["pending"], None
        if report:
            yield from document(report)

    def fly_line(line, moves=()):
        """Fly one line, retried while short. The previous line is documented while this one flies, and
        this one is left to be documented while the next flies (``flying["pending"]``).

        ``moves``: (motor, position) pairs set together with the first attempt's ``prepare``.
        """
        for attempt in range(int(max_retries) + 1):
            spec = dict(line, num=nx, dwell_s=dwell_s, attempt=attempt, max_retries=int(max_retries))
            flyer.last_line = {}
            group = f"fly-prepare-{line['eta_index']}-{line['row']}-{attempt}"
            for motor, position in moves if attempt == 0 else ():
                yield from bps.abs_set(motor, position, group=group)
            yield from bps.prepare(flyer, spec, group=group)
            yield from bps.wait(group=group)
            yield from bps.kickoff(flyer, wait=True)
            flying["line"] = line
            yield from document_pending()  # the last line's documents, while this one sweeps
            yield from bps.checkpoint()  # a pause takes effect here: this line finishes its sweep meanwhile
            yield from bps.complete(flyer, wait=True)
            flying["line"] = None
            report = flyer.last_line
            if not report:  # a dry run (plans.dry_run): nothing was flown
                return
            if report["ok"]:
                flying["pending"] = report
                return
            yield from document(report)  # a short attempt: recorded (superseded or short) before its retry
        raise FlyLineError(
            f"line {line['row']} at eta {line['eta']:g} deg stayed short after {max_retries} retries "
            f"({report['pulses']} pulses, {report['positions']} positions, {report['frames']} frames of {nx}, "
            f"{report['dropped']} dropped); the lines taken so far are in the run")

    def finish_lines():
        """On the way out (end, failure, abort), document every line flown: the pending one, and one
        still sweeping (its frames are taken; they belong in the run)."""
        yield from document_pending()
        if flying["line"] is not None:
            flying["line"] = None
            try:
                yield from bps.complete(flyer, wait=True)
            except Exception:  # noqa: BLE001 - the error that ended the run is the one to report
                return
            if flyer.last_line:
                yield from document(flyer.last_line)

    def lines_of_the_map():
        current_eta = None
        for line in lines:
            if line["eta"] != current_eta:
                yield from bps.mv(eta_motor, line["eta"])
                current_eta = line["eta"]
            # the slow axis moves while the line's settings are written (one wait for both)
            yield from fly_line(line, moves=((slow_motor, line["y"]),))

    @bpp.stage_decorator([flyer])
    @bpp.run_decorator(md=_md)
    def inner():
        yield from bps.declare_stream(flyer, name="primary", collect=True)
        yield from bps.checkpoint()
        yield from bpp.finalize_wrapper(lines_of_the_map(), finish_lines())

    return (yield from inner())
