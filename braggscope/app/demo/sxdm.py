"""``braggscope demo sxdm``: calibrate the eccentricity, map the simulated NMC622 crystal (step or fly), reduce.

Live maps follow the map over Channel Access (the caproto simulator): they read the detector's HDF5
file while it is written, which only works across processes, not from the in-process detector's
own open file.
"""

from __future__ import annotations

import time

import bluesky.plan_stubs as bps
import numpy as np

from braggscope import storage
from braggscope.analysis.sxdm.figures import save_figures
from braggscope.analysis.sxdm.files import save_maps
from braggscope.analysis.sxdm.reduce import reduce_stack
from braggscope.app.beamline.runengine import subscribe_live_maps
from braggscope.app.commands import save_calibration
from braggscope.app.demo.beamline import XRF_CALIBRATION_HALF_SPAN_DEG, reflection_window, save_live_figure, say
from braggscope.core.eccentricity import EccentricityModel
from braggscope.core.setup import ScanSetup
from braggscope.devices.fly import make_flyer
from braggscope.plans import calibrate_eccentricity, dry_run, sxdm_fly, sxdm_map

__all__ = ["calibrate_sxdm", "demo_sxdm"]


def demo_sxdm(bl, out, *, quick, nx, ny, neta, reduce, fly=None) -> dict:
    """Calibrate, map (flown with ``fly`` = the dwell time, s) and reduce on ``bl``; the summary dict."""
    d, setup = bl.devices, bl.sim.bragg_setup()
    nx, ny = nx or (12 if quick else 24), ny or (10 if quick else 20)
    neta = neta or (6 if quick else 12)
    cx, cy = setup["center_um"]
    half = float(setup["extent_um"])
    etas = list(np.linspace(setup["eta_start"], setup["eta_stop"], neta))
    say(f"NMC622 {setup['reflection']}: eta {etas[0]:.3f}..{etas[-1]:.3f} deg, delta {setup['delta']:.3f} deg")
    bl.RE(bps.mv(d["delta"], setup["delta"], d["nu"], 0.0, d["phi"], 0.0, d["eta"], setup["eta"]))

    # 1. eccentricity: coarse fluorescence maps over a span wider than the rocking range
    configured = EccentricityModel.coerce(bl.cfg.get("eccentricity"), "[eccentricity]")
    calibration = calibrate_sxdm(bl, out, setup, etas, 2 * half / (nx - 1), configured, quick=quick)
    # 2. the 3D map, with live maps
    xr, yr = (cx - half, cx + half, nx), (cy - half, cy + half, ny)
    result = _map(bl, out, xr, yr, etas, calibration.use, fly)
    result.update(calibration=calibration.use.to_dict(), calibration_accepted=calibration.accepted,
                  calibration_verdict=calibration.verdict(), figures=[])
    # 3. reduction from the catalog
    if reduce:
        result.update(_reduce(bl, out, result["uid"]))
    return result


def _map(bl, out, x_range, y_range, etas, eccentricity, fly) -> dict:
    """The 3D map (its dry run first), with live maps over Channel Access; timings and the run uid."""
    d = bl.devices
    plan_args = dict(eccentricity=eccentricity, sample="nmc622")  # the devices and the baseline record the setup

    def plan():
        if fly is None:
            return sxdm_map([bl.detector], d["pix"], x_range, d["piy"], y_range, d["eta"], etas, **plan_args)
        # --fly: the same map flown (fast axis swept, detector hardware-triggered)
        return sxdm_fly([make_flyer(d, bl.cfg)], d["pix"], x_range, d["piy"], y_range, d["eta"], etas,
                        dwell_s=fly, snake=True, **plan_args)

    summary = dry_run(plan())
    say(f"dry run: {summary}")
    beam = ScanSetup.from_devices(bl.detector, energy=d.get("energy"), delta=d["delta"], nu=d["nu"], phi=d["phi"])
    window = reflection_window(beam.cch, beam.detector_shape)
    live, dispatcher, token = subscribe_live_maps(bl.RE, window) if not bl.inprocess else (None, None, None)
    t0 = time.monotonic()
    uid = bl.RE(plan()).run_start_uids[0]
    t_scan = time.monotonic() - t0
    if dispatcher is not None:
        dispatcher.wait()
        bl.RE.unsubscribe(token)
        save_live_figure(live, out / "live_maps.png")
    n_points = x_range[2] * y_range[2] * len(etas)
    say(f"map done: {n_points} points in {t_scan:.1f} s ({1e3 * t_scan / n_points:.1f} ms/point)")
    if fly is not None:
        say(f"fly scan: wall {t_scan:.1f} s for {n_points * fly:.1f} s of exposure "
            f"({t_scan / (n_points * fly):.2f}x the exposure time)")
    return {"uid": uid, "points": n_points, "scan_s": round(t_scan, 1),
            "ms_per_point": round(1e3 * t_scan / n_points, 1), "dry_run_estimate_s": round(summary.duration_s, 1)}


def _reduce(bl, out, uid) -> dict:
    """Reduce the map from the catalog around the reflection; figures, maps file and strain range."""
    stack = storage.sxdm_stack(storage.load_run(bl.client, uid))
    scan = stack.require_setup()  # the ScanSetup the run recorded
    say("reducing the map (braggscope.analysis.sxdm.reduce_stack)")
    t0 = time.monotonic()
    window = reflection_window(scan.cch, scan.detector_shape)
    maps = reduce_stack(stack.frames, stack.eta, scan.geometry(), *stack.angles(),
                        x=stack.x, y=stack.y, detector_roi=window, progress=True)
    result = {"detector_roi": list(window), "reduce_s": round(time.monotonic() - t0, 1),
              "figures": [str(p) for p in save_figures(maps, out)], "maps": maps}
    result["maps_file"] = str(save_maps(maps, out / "sxdm_maps.h5"))  # the NeXus maps of `reduce sxdm`
    strain = np.asarray(maps["strain"])
    result["strain_microstrain_range"] = ([float(np.nanmin(strain)), float(np.nanmax(strain))]
                                          if np.isfinite(strain).any() else None)
    return result


def calibrate_sxdm(bl, out, setup, etas, pixel, configured, *, quick):
    """Calibrate the eccentricity for ``demo sxdm``: the :class:`~braggscope.core.calibration.CalibrationResult`.

    With a fluorescence detector (``bl.xrf``): coarse 11 x 11 fluorescence
    maps at 9 (quick) or 13 angles over the Bragg angle +-
    :data:`~braggscope.app.demo.beamline.XRF_CALIBRATION_HALF_SPAN_DEG`, following the configured
    model, located by centre of mass: the whole particle at every angle, so the
    mosaic NMC622 crystal does not bias the drift. Without one (``pv.fluorescence``
    empty): 9 x 9 diffraction maps over the rocking range, located by
    registration, which the mosaic crystal's sweep defeats (the verdict says so).
    ``etas``, ``pixel``: the main map's angles and pixel (um), over which the
    drift must be known to half a pixel. The fit's figure is ``out/eccentricity_fit.png``.
    """
    d = bl.devices
    cx, cy = setup["center_um"]
    half = float(setup["extent_um"])
    n_cal = 9 if quick else 13
    if bl.xrf is not None:
        detector, field, locate, n_map = bl.xrf, "xrf_counts", "com", 11
        theta, span = setup["eta"], XRF_CALIBRATION_HALF_SPAN_DEG
        cal_etas = list(np.linspace(theta - span, theta + span, n_cal))
        what = "fluorescence"
    else:
        detector, field, locate, n_map = bl.detector, None, "register", 9
        cal_etas = list(np.linspace(setup["eta_start"], setup["eta_stop"], n_cal))
        what = "diffraction"
    say(f"calibrating the eccentricity ({n_cal} coarse {n_map}x{n_map} {what} maps, "
        f"eta {cal_etas[0]:.3f}..{cal_etas[-1]:.3f} deg)")
    result = bl.RE(calibrate_eccentricity([detector], d["pix"], (cx - half - 1, cx + half + 1, n_map), d["piy"],
                                          (cy - half - 1, cy + half + 1, n_map), d["eta"], cal_etas,
                                          intensity_field=field, initial=configured, quadratic=False,
                                          locate=locate, map_pixel_um=pixel, map_etas=etas,
                                          md={"sample": "nmc622"})).plan_result
    save_calibration(result, figure_path=out / "eccentricity_fit.png")
    say(str(result))
    return result
