"""``braggscope demo sxdm|bcdi``: the whole chain on the simulated beamline.

``demo sxdm``: start the simulator (if none runs), calibrate the eccentricity,
measure a 3D-SXDM map of the simulated NMC622 crystal with live maps, store
it in the catalog, reduce it (``braggscope.analysis.sxdm.reduce``) and write the
figures. ``demo bcdi``: the same for the LMNO particle with an oversampled,
drift-following rocking scan and the BCDI reconstruction.

``--inprocess`` runs the same plans on in-process devices (no EPICS) around
the same simulator physics; ``--quick`` is a small version for tests.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from braggscope.app.beamline.connect import Beamline, reflection_window, save_live_figure, subscribe_live_maps
from braggscope.core.eccentricity import EccentricityModel
from braggscope.core.setup import ScanSetup
from braggscope.core.atomic import atomic_path
from braggscope.core.errors import ArgumentError

__all__ = ["run_demo"]


def run_demo(cfg, kind, *, quick=False, inprocess=False, out=None, nx=None, ny=None, neta=None,
             reduce=True, fly=False, dwell_s=0.005) -> dict:
    """Run ``demo sxdm`` or ``demo bcdi``; returns a summary dict (paths, timings)."""
    if kind not in ("sxdm", "bcdi"):
        raise ValueError(f"kind must be 'sxdm' or 'bcdi', got {kind!r}")
    for name, v in (("nx", nx), ("ny", ny), ("neta", neta)):
        if v is not None and int(v) < (3 if name == "neta" else 2):
            raise ArgumentError(f"--{name} must be >= {3 if name == 'neta' else 2}, got {v!r}")
    if fly and (kind != "sxdm" or inprocess):
        raise ArgumentError("--fly runs the SXDM demo on the caproto simulator: use `demo sxdm --fly` "
                            "without --inprocess")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(out).expanduser() if out else cfg.expand_path("storage.data_dir") / f"demo-{kind}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    sample = "nmc622" if kind == "sxdm" else "lmno_bcdi"
    with Beamline(cfg, inprocess=inprocess, sample=sample, out=out, purpose=f"braggscope demo {kind}") as bl:
        if kind == "sxdm":
            summary = _demo_sxdm(bl, out, quick=quick, nx=nx, ny=ny, neta=neta, reduce=reduce,
                                 fly=dwell_s if fly else None)
        else:
            summary = _demo_bcdi(bl, out, quick=quick, neta=neta, reduce=reduce)
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    summary["out"] = str(out)
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps({k: v for k, v in summary.items() if k != "maps"}, indent=1, default=str))
    print(f"\nresults in {out} (summary.json); run uid {summary.get('uid')}", flush=True)
    return summary


def _say(msg):
    print(f"[demo] {msg}", flush=True)


def _demo_sxdm(bl, out, *, quick, nx, ny, neta, reduce, fly=None):
    import bluesky.plan_stubs as bps

    from braggscope import storage
    from braggscope.plans import dry_run, sxdm_map

    d, cfg, setup = bl.devices, bl.cfg, bl.sim.bragg_setup()
    nx, ny = nx or (12 if quick else 24), ny or (10 if quick else 20)
    neta = neta or (6 if quick else 12)
    cx, cy = setup["center_um"]
    half = float(setup["extent_um"])
    etas = list(np.linspace(setup["eta_start"], setup["eta_stop"], neta))
    _say(f"NMC622 {setup['reflection']}: eta {etas[0]:.3f}..{etas[-1]:.3f} deg, delta {setup['delta']:.3f} deg")
    bl.RE(bps.mv(d["delta"], setup["delta"], d["nu"], 0.0, d["phi"], 0.0, d["eta"], setup["eta"]))

    # 1. eccentricity: coarse fluorescence maps over a span wider than the rocking range
    pixel = 2 * half / (nx - 1)
    configured = EccentricityModel.coerce(cfg.get("eccentricity"), "[eccentricity]")
    calibration = _calibrate_sxdm(bl, out, setup, etas, pixel, configured, quick=quick)
    use = calibration.use

    # 2. the 3D map, with live maps when the live-analysis callback is available
    plan_args = dict(eccentricity=use, sample="nmc622")  # the devices and the baseline record the setup
    xr, yr = (cx - half, cx + half, nx), (cy - half, cy + half, ny)
    plan = lambda: sxdm_map([bl.detector], d["pix"], xr, d["piy"], yr, d["eta"], etas, **plan_args)  # noqa: E731
    if fly is not None:  # --fly: the same map flown (fast axis swept, detector hardware-triggered)
        from braggscope.devices.fly import make_flyer
        from braggscope.plans.fly import sxdm_fly

        flyer = make_flyer(d, cfg)
        plan = lambda: sxdm_fly([flyer], d["pix"], xr, d["piy"], yr, d["eta"], etas, dwell_s=fly,  # noqa: E731
                                snake=True, **plan_args)
    summary = dry_run(plan())
    _say(f"dry run: {summary}")
    # live maps read the detector's HDF5 file while it is written: only across processes
    # (the caproto simulator), not from the in-process detector's own open file
    beam = ScanSetup.from_devices(bl.detector, energy=d.get("energy"), delta=d["delta"], nu=d["nu"], phi=d["phi"])
    window = reflection_window(beam.cch, beam.detector_shape)
    live, dispatcher, token = subscribe_live_maps(bl.RE, window) if not bl.inprocess else (None, None, None)
    t0 = time.monotonic()
    uid = bl.RE(plan()).run_start_uids[0]
    t_scan = time.monotonic() - t0
    if dispatcher is not None:
        dispatcher.wait() if hasattr(dispatcher, "wait") else None
        bl.RE.unsubscribe(token)
        save_live_figure(live, out / "live_maps.png")
    n_points = nx * ny * neta
    _say(f"map done: {n_points} points in {t_scan:.1f} s ({1e3 * t_scan / n_points:.1f} ms/point)")
    if fly is not None:
        _say(f"fly scan: wall {t_scan:.1f} s for {n_points * fly:.1f} s of exposure "
             f"({t_scan / (n_points * fly):.2f}x the exposure time)")
    result = {"uid": uid, "points": n_points, "scan_s": round(t_scan, 1),
              "ms_per_point": round(1e3 * t_scan / n_points, 1), "calibration": use.to_dict(),
              "calibration_accepted": calibration.accepted, "calibration_verdict": calibration.verdict(), "dry_run_estimate_s": round(summary.duration_s, 1),
              "figures": []}

    # 3. reduction from the catalog
    if reduce:
        try:
            from braggscope.analysis.sxdm.figures import save_figures
            from braggscope.analysis.sxdm.reduce import reduce_stack
        except ImportError as exc:  # the reduction is optional for the acquisition demo
            _say(f"SXDM reduction not available ({exc}); data are in the catalog")
            return result
        stack = storage.sxdm_stack(storage.load_run(bl.client, uid))
        scan = stack.require_setup()  # the ScanSetup the run recorded
        _say("reducing the map (braggscope.analysis.sxdm.reduce_stack)")
        t0 = time.monotonic()
        window = reflection_window(scan.cch, scan.detector_shape)
        maps = reduce_stack(stack.frames, stack.eta, scan.geometry(), *stack.angles(),
                            x=stack.x, y=stack.y, detector_roi=window, progress=True)
        result["detector_roi"] = list(window)
        result["reduce_s"] = round(time.monotonic() - t0, 1)
        result["figures"] = [str(p) for p in save_figures(maps, out)]
        try:
            maps.to_netcdf(out / "sxdm_maps.nc")
            result["maps_file"] = str(out / "sxdm_maps.nc")
        except Exception as exc:  # noqa: BLE001 - netCDF back-end optional
            _say(f"maps not saved as netCDF ({exc})")
        strain = np.asarray(maps["strain"])
        result["strain_microstrain_range"] = [float(np.nanmin(strain)), float(np.nanmax(strain))] \
            if np.isfinite(strain).any() else None
        result["maps"] = maps
    return result


def _demo_bcdi(bl, out, *, quick, neta, reduce):
    import bluesky.plan_stubs as bps

    from braggscope import storage
    from braggscope.plans import bcdi_rocking, calibrate_eccentricity, dry_run
    from braggscope.app.commands import save_calibration

    d, cfg, setup = bl.devices, bl.cfg, bl.sim.bragg_setup()
    from braggscope.core.geometry import oversampling_detector

    beam = ScanSetup.from_devices(bl.detector, energy=d.get("energy"), delta=setup["delta"])
    distance = beam.distance_m
    sigma = oversampling_detector(beam.energy_kev, distance, beam.pixel_m, setup["size_m"])
    _say(f"LMNO {setup['reflection']}: {setup['size_m'] * 1e9:.0f} nm particle, eta {setup['eta']:.3f} deg, "
         f"detector oversampling {sigma:.2f} at {distance} m")
    bl.RE(bps.mv(d["delta"], setup["delta"], d["nu"], 0.0, d["phi"], 0.0, d["eta"], setup["eta"]))
    cx, cy = bl.sim.apparent_center(setup["eta"])  # where the particle was mounted, seen at this eta
    if bl.xrf is not None:
        # fluorescence sees the particle at any eta: a +-3 deg lever arm on the drift, instead of
        # the +-0.04 deg over which the weak reflection is bright enough to locate it
        span = XRF_CALIBRATION_HALF_SPAN_DEG
        detector, field, n_map, half = bl.xrf, "xrf_counts", 11, 2.0
        cal_etas = list(np.linspace(setup["eta"] - span, setup["eta"] + span, 7))
        what = "fluorescence"
    else:
        detector, field, n_map, half = bl.detector, None, 9, 3.0
        cal_etas = list(np.linspace(setup["eta"] - 0.04, setup["eta"] + 0.04, 5))
        what = "diffraction"
    _say(f"calibrating the eccentricity ({len(cal_etas)} coarse {n_map}x{n_map} {what} maps, "
         f"eta {cal_etas[0]:.3f}..{cal_etas[-1]:.3f} deg)")
    calibration = bl.RE(calibrate_eccentricity([detector], d["pix"], (cx - half, cx + half, n_map), d["piy"],
                                               (cy - half, cy + half, n_map), d["eta"], cal_etas, quadratic=False,
                                               intensity_field=field, md={"sample": "lmno_bcdi"})).plan_result
    save_calibration(calibration, figure_path=out / "eccentricity_fit.png")
    _say(str(calibration))
    x_um, y_um = calibration.position_um
    model = calibration.use
    n_fringes = 8.0 if quick else 30.0  # oversampling 2: two steps per fringe (61 frames by default)
    if neta:
        n_fringes = (neta - 1) * 0.5  # oversampling 2: two steps per fringe
    plan = lambda: bcdi_rocking([bl.detector], d["eta"], setup["eta"], size_m=setup["size_m"],  # noqa: E731
                                d_spacing=setup["d_spacing"], energy=d.get("energy"), oversampling=2.0,
                                n_fringes=n_fringes, x_motor=d["pix"], y_motor=d["piy"], x_um=x_um, y_um=y_um,
                                eccentricity=model, reflection=[int(c) for c in str(setup["reflection"])],
                                sample="lmno_bcdi")
    summary = dry_run(plan())
    _say(f"dry run: {summary}")
    t0 = time.monotonic()
    uid = bl.RE(plan()).run_start_uids[0]
    t_scan = time.monotonic() - t0
    result = {"uid": uid, "points": summary.points, "scan_s": round(t_scan, 1),
              "calibration": model.to_dict(), "dry_run_estimate_s": round(summary.duration_s, 1)}
    if reduce:
        try:
            from braggscope.analysis.bcdi.pipeline import reconstruct
        except ImportError as exc:
            _say(f"BCDI reconstruction not available ({exc}); data are in the catalog")
            return result
        stack = storage.rocking_stack(storage.load_run(bl.client, uid))
        _say("reconstructing (braggscope.analysis.bcdi.pipeline.reconstruct)")
        t0 = time.monotonic()
        rec = reconstruct(replace(stack, frames=np.asarray(stack.frames)), n_runs=2 if quick else 4,
                          shape=(None, 64, 64) if quick else (None, 128, 128), out_dir=out / "bcdi")
        result["reconstruct_s"] = round(time.monotonic() - t0, 1)
        result["reconstruction"] = rec.summary() if hasattr(rec, "summary") else None
        if getattr(bl.sim, "forward", None) is not None:
            corr = _strain_vs_truth(rec, bl.sim.forward)
            result["strain_correlation_with_truth"] = corr
            _say(f"strain vs the simulator's truth: correlation {corr:.2f}")
    return result


def _strain_vs_truth(rec, forward) -> float:
    """Correlation of the reconstructed strain with the simulated particle's true strain.

    Only a demo can do this: it knows the simulator's displacement field. The
    reconstruction (orthogonal sample frame, axes z, y, x) is resampled to the
    simulator's voxel grid (axes x, y, z there), registered (shift, twin, phase
    offset) and both strains are computed by the same ``strain_analysis``.
    """
    from scipy import ndimage

    from braggscope.analysis.bcdi.phasing import align_to_reference, embed_centred
    from braggscope.analysis.bcdi.strain import strain_analysis

    voxel_truth_nm = forward.voxel / 10.0
    g_norm = float(np.linalg.norm(forward.g))
    truth = np.transpose(forward.rho * np.exp(1j * g_norm * forward.u), (2, 1, 0))
    zoom = float(rec.ortho.voxel_nm) / voxel_truth_nm
    obj = rec.ortho.obj
    obj = ndimage.zoom(obj.real, zoom, order=1) + 1j * ndimage.zoom(obj.imag, zoom, order=1)
    shape = tuple(max(a, b) for a, b in zip(obj.shape, truth.shape))
    truth, obj = embed_centred(truth, shape), embed_centred(obj, shape)
    g_unit = np.asarray(rec.ortho.q_bragg, float)[::-1] / np.linalg.norm(rec.ortho.q_bragg)  # (z, y, x)
    ref = strain_analysis(truth, q_bragg_norm=g_norm, voxel_nm=voxel_truth_nm, g_unit=(1, 0, 0),
                          support=np.abs(truth) > 0.5)
    got = strain_analysis(align_to_reference(obj, truth), q_bragg_norm=g_norm, voxel_nm=voxel_truth_nm,
                          g_unit=tuple(g_unit))
    ok = np.isfinite(ref.strain) & np.isfinite(got.strain)
    a, b = ref.strain[ok] - ref.strain[ok].mean(), got.strain[ok] - got.strain[ok].mean()
    return float(np.corrcoef(a, b)[0, 1])



#: Half-width (deg) of the fluorescence calibration's eta span around the Bragg angle: wider
#: than the rocking range (the particle's fluorescence does not need the Bragg condition), so
#: the drift has a longer lever arm than over the +-0.7 deg where NMC622 diffracts.
XRF_CALIBRATION_HALF_SPAN_DEG = 3.0


def _calibrate_sxdm(bl, out, setup, etas, pixel, configured, *, quick):
    """Calibrate the eccentricity for ``demo sxdm``: the :class:`~braggscope.core.calibration.CalibrationResult`.

    With a fluorescence detector (``bl.xrf``): coarse 11 x 11 fluorescence
    maps at 9 (quick) or 13 angles over the Bragg angle +-
    :data:`XRF_CALIBRATION_HALF_SPAN_DEG`, following the configured model,
    located by centre of mass: the whole particle at every angle, so the
    mosaic NMC622 crystal does not bias the drift. Without one (``pv.fluorescence``
    empty): 9 x 9 diffraction maps over the rocking range, located by
    registration, which the mosaic crystal's sweep defeats (the verdict says so).
    ``etas``, ``pixel``: the main map's angles and pixel (um), over which the
    drift must be known to half a pixel.
    """
    from braggscope.plans import calibrate_eccentricity
    from braggscope.app.commands import save_calibration

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
    _say(f"calibrating the eccentricity ({n_cal} coarse {n_map}x{n_map} {what} maps, "
         f"eta {cal_etas[0]:.3f}..{cal_etas[-1]:.3f} deg)")
    result = bl.RE(calibrate_eccentricity([detector], d["pix"], (cx - half - 1, cx + half + 1, n_map), d["piy"],
                                          (cy - half - 1, cy + half + 1, n_map), d["eta"], cal_etas,
                                          intensity_field=field, initial=configured, quadratic=False,
                                          locate=locate, map_pixel_um=pixel, map_etas=etas,
                                          md={"sample": "nmc622"})).plan_result
    save_calibration(result, figure_path=out / "eccentricity_fit.png")
    _say(str(result))
    return result
