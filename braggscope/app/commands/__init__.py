"""The operator's commands: plain functions bound to the session's RunEngine.

``braggscope shell`` puts them in the namespace (``make_commands(...).namespace()``):

* motors: ``wa()``, ``wm(pix, eta)``, ``mv(pix, 50)``, ``umv(pix, 50)`` (positions shown while moving),
  ``mvr(eta, 0.01)``, ``umvr``;
* counting and scans (BLISS arguments: motor, start, stop, intervals, count time, counters):
  ``ct(0.1)``, ``ct(xrf)``, ``ascan(eta, 10, 11, 20, 0.1[, xrf])``, ``dscan``, ``a2scan``, ``d2scan``,
  ``amesh``/``mesh``, ``dmesh`` (``backnforth=True``), ``lineup``;
* after a 1D scan: ``cen()``, ``peak()``, ``com()``, ``fwhm()`` return the statistics,
  ``goto_cen()``, ``goto_peak()``, ``goto_com()`` move there, ``peaks`` holds them all (as
  BestEffortCallback's), ``where()``;
* the detector ROI counter: ``roi(detector, row0, row1, col0, col1)`` (``set_roi``);
* braggscope procedures: ``sxdm(...)``, its fly-scan twin ``kmap(..., dwell_s)``, ``bcdi(...)``,
  ``calibrate(...)`` (prints the verdict; ``fly=True, dwell_s=...`` flies its maps), ``dry(plan)``
  (what a plan would do, nothing moves);
* ``helpme()`` (and ``help()`` without argument): one screen of what is there.

Every command checks its arguments (numbers, finite, inside the soft limits)
before anything moves, and says what is wrong in one line naming the motor or
argument. Every plan runs guarded (``plans.guard``, installed on the RunEngine):
a lost or restarted IOC ends the run within seconds naming the PV and the point,
and a detector whose frame counter stalls or goes backwards records no point.
Ctrl-C pauses the RunEngine the bluesky way; the command re-raises
bluesky's ``RunEngineInterrupted`` after printing how to resume, stop or abort.
"""

from __future__ import annotations

import builtins
import sys

from bluesky.utils import RunEngineInterrupted

from braggscope.app.commands.motion import MotionCommands
from braggscope.app.commands.scans import PeakResults, PeakTracker, ScanCommands
from braggscope.core.errors import ArgumentError
from braggscope.plans import plot_calibration, store_eccentricity
from braggscope.plans.guard import install_guard

__all__ = ["COMMANDS", "Commands", "make_commands", "save_calibration", "set_roi"]

#: Names put into the session namespace, with their one-line summaries (``helpme()``).
COMMANDS = {
    "wa": "wa()                          where all: user and dial positions of every motor",
    "wm": "wm(pix, eta)                  where these motors: user and dial positions, limits, offset, units",
    "mv": "mv(pix, 50[, piy, 20])        move (absolute), checked against the soft limits first",
    "umv": "umv(pix, 50)                  move showing the positions",
    "mvr": "mvr(eta, 0.01)                move by a relative amount",
    "umvr": "umvr(eta, 0.01)               relative move showing the positions",
    "ct": "ct(0.1[, xrf])  ct(xrf)        count once (s), print the counters; no run recorded",
    "ascan": "ascan(eta, 10, 11, 20, 0.1[, xrf])  motor, start, stop, intervals, count time (s), counters",
    "dscan": "dscan(eta, -0.5, 0.5, 20, 0.1) relative to the position; returns there",
    "a2scan": "a2scan(m1, s1, e1, m2, s2, e2, intervals, time)",
    "d2scan": "d2scan(m1, s1, e1, m2, s2, e2, intervals, time)  relative",
    "amesh": "amesh(pix, 0, 2, 20, piy, 0, 2, 20, 0.05[, backnforth=True])  pix fast; mesh() too",
    "mesh": "",
    "dmesh": "dmesh(pix, -1, 1, 20, piy, -1, 1, 20, 0.05)  relative; the motors return",
    "lineup": "lineup(eta, -0.2, 0.2, 40, 0.1)  dscan, then goto_peak()",
    "cen": "cen()  peak()  com()  fwhm()   the last 1D scan's peak statistics (nothing moves)",
    "peak": "",
    "com": "",
    "fwhm": "",
    "goto_cen": "goto_cen()  goto_peak()  goto_com()  move the scan's motor there",
    "goto_peak": "",
    "goto_com": "",
    "peaks": "peaks                         the last 1D scan's statistics per counter (peaks.cen, .fwhm ...)",
    "where": "where()                       the last scan's motor and its peak statistics",
    "roi": "roi(detector, r0, r1, c0, c1)  ROI counter window (rows r0:r1, cols c0:c1); roi() shows it",
    "set_roi": "",
    "sxdm": "sxdm((x0, x1, nx), (y0, y1, ny), etas)  3D-SXDM map (eccentricity applied)",
    "kmap": "kmap((x0, x1, nx), (y0, y1, ny), etas, 0.005[, snake=True])  the same map flown (dwell s)",
    "bcdi": "bcdi(eta_center, size_m=, d_spacing=)    BCDI rocking scan",
    "calibrate": "calibrate((x0, x1, nx), (y0, y1, ny), etas)  eccentricity calibration, prints the verdict",
    "dry": "dry(sxdm_map(...))            what a plan would do (points, ranges, time); nothing moves",
    "helpme": "helpme()  help()              this list; help(ascan) for one command",
}

PAUSE_HINT = ("paused (Ctrl-C): RE.resume() continues, RE.stop() ends the run (success), "
              "RE.abort('why') ends it (abort); every point taken so far is kept")


class Commands(MotionCommands, ScanCommands):
    """The session's commands around one RunEngine and its devices.

    Parameters
    ----------
    RE : bluesky.RunEngine
        Created with ``call_returns_result=True``.
    devices : dict
        Name -> device (motors labelled ``motors``, detectors ``detectors``).
    cfg : braggscope.core.config.Config, optional
        For ``calibrate`` (where to store a model) and the default detector.
    eccentricity : EccentricityModel, optional
        Applied by ``sxdm`` (default none).
    out : callable
        Where lines go (default ``print``).
    ask : callable
        Asks a question, returns the answer (default ``input``; no command asks today).
    """

    def __init__(self, RE, devices, *, cfg=None, eccentricity=None, out=print, ask=input):
        self.RE, self.devices, self.cfg = RE, devices, cfg
        self.eccentricity = eccentricity
        self.out, self.ask = out, ask
        self.counter = None  # the field cen/peak/com use; None: ROI counter, else the first hinted field
        self.peaks = PeakResults()  # BestEffortCallback's ``peaks``, even with its plots off
        self.peak_tracker = PeakTracker(self.peaks)
        self._token = RE.subscribe(self.peak_tracker)
        install_guard(RE)  # after the session's baseline: the guard sees its readings too
        self._flyer = None

    def namespace(self) -> dict:
        """``{name: bound command}`` for the session namespace (``help`` included)."""
        ns = {name: getattr(self, name) for name in COMMANDS}
        ns["help"] = self.help
        return ns

    # -- running ------------------------------------------------------------------------
    def _run(self, plan):
        """Run ``plan`` on the RunEngine; on Ctrl-C print how to go on and re-raise bluesky's interruption."""
        try:
            return self.RE(plan)
        except RunEngineInterrupted:
            print(PAUSE_HINT, file=sys.stderr, flush=True)
            raise

    def default_detectors(self) -> list:
        """The detectors counted by default: the diffraction detector first, then the other labelled ones."""
        seen, dets = set(), []
        first = self.devices.get("detector")
        for device in ([first] if first is not None else []) + list(self.devices.values()):
            if "detectors" in getattr(device, "_ophyd_labels_", ()) and id(device) not in seen:
                seen.add(id(device))
                dets.append(device)
        return dets

    # -- ROI counter ------------------------------------------------------------------
    def roi(self, detector=None, row0=None, row1=None, col0=None, col1=None) -> tuple[int, int, int, int]:
        """Set (with all four bounds) or show the ROI counter's window; returns ``(row0, row1, col0, col1)``.

        Rows ``row0:row1`` and columns ``col0:col1`` of the frame (half-open,
        as numpy slices); the ROI total (``<det>_roistat1_total``) is the frame
        summed there, hinted so that scans plot it and ``cen()`` uses it.
        """
        detector = self.devices.get("detector") if detector is None else detector
        if detector is None or not hasattr(detector, "roi1"):
            raise ArgumentError(f"roi: {getattr(detector, 'name', detector)!r} has no ROI counter (roi1)")
        bounds = (row0, row1, col0, col1)
        if all(b is None for b in bounds):
            window = read_roi(detector)
        else:
            window = set_roi(detector, *bounds)
        r0, r1, c0, c1 = window
        self.out(f"{detector.name} ROI: rows {r0}:{r1}, cols {c0}:{c1} ({r1 - r0} x {c1 - c0} px); "
                 f"counter {detector.name}_roistat1_total")
        return window

    set_roi = roi

    # -- braggscope procedures --------------------------------------------------------
    def sxdm(self, x_range, y_range, etas, *, detectors=None, eccentricity=None, **kwargs):
        """3D-SXDM map (``plans.sxdm_map``) with pix/piy/eta and the session's eccentricity model."""
        from braggscope.plans import sxdm_map

        ecc = self.eccentricity if eccentricity is None else eccentricity
        d = self.devices
        return self._run(sxdm_map(self._detectors(detectors), d["pix"], x_range, d["piy"], y_range, d["eta"],
                                  etas, eccentricity=ecc, **kwargs))

    def kmap(self, x_range, y_range, etas, dwell_s, *, snake=False, eccentricity=None, **kwargs):
        """The 3D-SXDM map as a fly scan (``plans.sxdm_fly``): ``pix`` swept, the detector triggered by the
        position-compare unit every ``dwell_s`` s, ``piy`` and ``eta`` stepped, the session's eccentricity
        model applied to every line."""
        from braggscope.plans import sxdm_fly

        ecc = self.eccentricity if eccentricity is None else eccentricity
        d = self.devices
        return self._run(sxdm_fly([self.flyer()], d["pix"], x_range, d["piy"], y_range, d["eta"], etas,
                                  dwell_s=dwell_s, snake=snake, eccentricity=ecc, **kwargs))

    def flyer(self):
        """The fly scanner over the fly-scan hardware and the Maxipix (made once; ``sxdm_fly([flyer], ...)``)."""
        if self._flyer is None:
            if "fly" not in self.devices or "detector" not in self.devices or self.cfg is None:
                raise ArgumentError("kmap: this session has no fly-scan hardware (config pv.fly names its "
                                    "PV prefix; the in-process simulation has none)")
            from braggscope.devices.fly import make_flyer

            self._flyer = make_flyer(self.devices, self.cfg)
        return self._flyer

    def bcdi(self, eta_center, *, size_m, d_spacing, detectors=None, **kwargs):
        """BCDI rocking scan (``plans.bcdi_rocking``) around ``eta_center`` with the session's energy motor."""
        from braggscope.plans import bcdi_rocking

        kwargs.setdefault("energy", self.devices.get("energy"))
        return self._run(bcdi_rocking(self._detectors(detectors), self.devices["eta"], eta_center, size_m=size_m,
                                      d_spacing=d_spacing, **kwargs))

    def calibrate(self, x_range, y_range, etas, *, detectors=None, config_path=None, figure_path=None, **kwargs):
        """Eccentricity calibration (``plans.calibrate_eccentricity``); prints its report and verdict.

        Returns the :class:`braggscope.core.calibration.CalibrationResult`
        (``result.use`` is the model to apply). An accepted calibration becomes
        the model ``sxdm()`` applies (``commands.eccentricity``) and, with the
        session's configuration, its ``[eccentricity]`` (in memory, and in
        ``config_path`` when given); ``figure_path``: a PNG of the fit
        (:func:`save_calibration`).
        """
        from braggscope.plans import calibrate_eccentricity

        d = self.devices
        kwargs.setdefault("cfg", self.cfg)
        if kwargs.get("fly") and detectors is None:  # flown maps: the fly scanner takes the frames
            detectors = [self.flyer()]
        if config_path is not None and kwargs["cfg"] is None:
            raise ArgumentError("calibrate: config_path needs a configuration (cfg=...) to update")
        result = self._run(calibrate_eccentricity(self._detectors(detectors), d["pix"], x_range, d["piy"],
                                                  y_range, d["eta"], etas, **kwargs)).plan_result
        self.out(str(result))
        save_calibration(result, cfg=kwargs["cfg"], config_path=config_path, figure_path=figure_path)
        if result.accepted:
            self.eccentricity = result.use
            self.out("sxdm() applies this model from now on (commands.eccentricity)")
        return result

    def dry(self, plan, **kwargs):
        """What ``plan`` would do (points, ranges, time, limit violations), printed; nothing moves."""
        from braggscope.plans import dry_run

        summary = dry_run(plan, **kwargs)
        self.out(str(summary))
        return summary

    # -- help -------------------------------------------------------------------------
    def helpme(self) -> None:
        """One screen: the session's commands and objects."""
        self.out("braggscope commands (help(name) for details):")
        for line in COMMANDS.values():
            if line:
                self.out("  " + line)
        self.out("  objects: RE, catalog, devices, " + ", ".join(sorted(m.name for m in self.motors()))
                 + "; detectors " + ", ".join(d.name for d in self.default_detectors()))
        self.out("  Ctrl-C pauses: RE.resume() / RE.stop() / RE.abort('why');  %mv pix 10  %where_all  %count 0.1;"
                 "  bluesky's %wa and %ct [label]")

    def help(self, *args, **kwargs):
        """``help()``: :meth:`helpme`; ``help(obj)``: Python's help."""
        if not args and not kwargs:
            return self.helpme()
        return builtins.help(*args, **kwargs)


def save_calibration(result, *, cfg=None, config_path=None, figure_path=None):
    """Keep what a calibration gives: an accepted model in ``cfg``'s ``[eccentricity]`` (and the file
    ``config_path``, written atomically), and the figure of the fit at ``figure_path`` (accepted or not).

    A rejected calibration leaves the configuration alone. Returns the figure's path, or None.
    """
    if cfg is not None and result.accepted:
        store_eccentricity(cfg, result.use, config_path)
    return plot_calibration(result, figure_path) if figure_path is not None else None


def make_commands(RE, devices, **kwargs) -> Commands:
    """:class:`Commands` for a RunEngine and its devices (``.namespace()`` for a session)."""
    return Commands(RE, devices, **kwargs)


def read_roi(detector) -> tuple[int, int, int, int]:
    """The ROI counter's window ``(row0, row1, col0, col1)`` as the detector has it now."""
    from braggscope.simulators.ioc_detector import roi_bounds

    roi = detector.roi1
    rows, cols = (int(n) for n in detector.frame_shape.get())
    return roi_bounds((rows, cols), roi.min_x.get(), roi.min_y.get(), roi.size_x.get(), roi.size_y.get(),
                      roi.enable_x.get(), roi.enable_y.get())


def set_roi(detector, row0, row1, col0, col1, *, timeout: float = 5.0) -> tuple[int, int, int, int]:
    """Set the ROI counter of ``detector`` to rows ``row0:row1``, columns ``col0:col1`` (half-open).

    Enables the ROI and ROIStat plugins (when the device has them) and region 1.
    Refuses bounds outside the frame (``<det>_frame_shape``) or empty, naming the argument.
    """
    rows, cols = (int(n) for n in detector.frame_shape.get())
    bounds = {}
    for name, value, n in (("row0", row0, rows), ("row1", row1, rows), ("col0", col0, cols), ("col1", col1, cols)):
        try:
            v = int(value)
        except (TypeError, ValueError, OverflowError):
            v = None
        if v is None or v != value or not 0 <= v <= n:
            raise ArgumentError(f"roi {name} must be an integer pixel in [0, {n}] of the {rows}x{cols} frame, "
                                f"got {value!r}")
        bounds[name] = v
    if bounds["row1"] <= bounds["row0"] or bounds["col1"] <= bounds["col0"]:
        raise ArgumentError(f"roi is empty: rows {bounds['row0']}:{bounds['row1']}, cols {bounds['col0']}:"
                            f"{bounds['col1']} (need row0 < row1 and col0 < col1)")
    roi, stat = detector.roi1, detector.roistat1
    puts = [(roi.min_x, bounds["col0"]), (roi.min_y, bounds["row0"]), (roi.size_x, bounds["col1"] - bounds["col0"]),
            (roi.size_y, bounds["row1"] - bounds["row0"]), (roi.enable_x, 1), (roi.enable_y, 1), (stat.use, 1)]
    for device in (roi, stat):
        if hasattr(device, "enable"):
            puts.append((device.enable, "Enable"))
    for signal, value in puts:
        signal.set(value).wait(timeout)
    return bounds["row0"], bounds["row1"], bounds["col0"], bounds["col1"]
