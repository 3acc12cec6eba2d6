"""``braggscope demo bcdi``: calibrate the eccentricity, rock the simulated LMNO particle, reconstruct it.

The rocking scan is oversampled (two steps per fringe) and follows the drift the calibration
measured; the reconstruction's strain is compared with the simulator's true one, which only a demo
knows.
"""

from __future__ import annotations

import time
from dataclasses import replace

import bluesky.plan_stubs as bps
import numpy as np
from scipy import ndimage

from braggscope import storage
from braggscope.analysis.bcdi.phasing import align_to_reference, embed_centred
from braggscope.analysis.bcdi.pipeline import reconstruct
from braggscope.analysis.bcdi.strain import strain_analysis
from braggscope.app.commands import save_calibration
from braggscope.app.demo.beamline import XRF_CALIBRATION_HALF_SPAN_DEG, say
from braggscope.core.geometry import oversampling_detector
from braggscope.core.setup import ScanSetup
from braggscope.plans import bcdi_rocking, calibrate_eccentricity, dry_run

__all__ = ["demo_bcdi", "strain_vs_truth"]


def demo_bcdi(bl, out, *, quick, neta, reduce, runs=None) -> dict:
    """Calibrate, rock (``neta`` angles, default 17 quick or 61) and reconstruct on ``bl`` (``runs`` random
    starts, default 2 quick or 4); the summary dict."""
    d, setup = bl.devices, bl.sim.bragg_setup()
    beam = ScanSetup.from_devices(bl.detector, energy=d.get("energy"), delta=setup["delta"])
    sigma = oversampling_detector(beam.energy_kev, beam.distance_m, beam.pixel_m, setup["size_m"])
    say(f"LMNO {setup['reflection']}: {setup['size_m'] * 1e9:.0f} nm particle, eta {setup['eta']:.3f} deg, "
        f"detector oversampling {sigma:.2f} at {beam.distance_m} m")
    bl.RE(bps.mv(d["delta"], setup["delta"], d["nu"], 0.0, d["phi"], 0.0, d["eta"], setup["eta"]))
    calibration = _calibrate(bl, out, setup)
    x_um, y_um = calibration.position_um
    model = calibration.use
    n_fringes = (neta - 1) * 0.5 if neta else (8.0 if quick else 30.0)  # oversampling 2: two steps per fringe

    def plan():
        return bcdi_rocking([bl.detector], d["eta"], setup["eta"], size_m=setup["size_m"],
                            d_spacing=setup["d_spacing"], energy=d.get("energy"), oversampling=2.0,
                            n_fringes=n_fringes, x_motor=d["pix"], y_motor=d["piy"], x_um=x_um, y_um=y_um,
                            eccentricity=model, reflection=[int(c) for c in str(setup["reflection"])],
                            sample="lmno_bcdi")

    summary = dry_run(plan())
    say(f"dry run: {summary}")
    t0 = time.monotonic()
    uid = bl.RE(plan()).run_start_uids[0]
    result = {"uid": uid, "points": summary.points, "scan_s": round(time.monotonic() - t0, 1),
              "calibration": model.to_dict(), "dry_run_estimate_s": round(summary.duration_s, 1)}
    if reduce:
        result.update(_reconstruct(bl, out, uid, quick=quick, runs=runs))
    return result


def _calibrate(bl, out, setup):
    """The eccentricity, from coarse fluorescence maps over +-3 deg (or diffraction maps over +-0.04 deg)."""
    d = bl.devices
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
    say(f"calibrating the eccentricity ({len(cal_etas)} coarse {n_map}x{n_map} {what} maps, "
        f"eta {cal_etas[0]:.3f}..{cal_etas[-1]:.3f} deg)")
    calibration = bl.RE(calibrate_eccentricity([detector], d["pix"], (cx - half, cx + half, n_map), d["piy"],
                                               (cy - half, cy + half, n_map), d["eta"], cal_etas, quadratic=False,
                                               intensity_field=field, md={"sample": "lmno_bcdi"})).plan_result
    save_calibration(calibration, figure_path=out / "eccentricity_fit.png")
    say(str(calibration))
    return calibration


def _reconstruct(bl, out, uid, *, quick, runs=None) -> dict:
    """Phase the rocking scan from the catalog (``out/bcdi``); its strain against the simulator's truth."""
    stack = storage.rocking_stack(storage.load_run(bl.client, uid))
    say("reconstructing (braggscope.analysis.bcdi.pipeline.reconstruct)")
    t0 = time.monotonic()
    rec = reconstruct(replace(stack, frames=np.asarray(stack.frames)), n_runs=runs or (2 if quick else 4),
                      shape=(None, 64, 64) if quick else (None, 128, 128), out_dir=out / "bcdi")
    result = {"reconstruct_s": round(time.monotonic() - t0, 1),
              "reconstruction": rec.summary() if hasattr(rec, "summary") else None}
    if getattr(bl.sim, "forward", None) is not None:
        corr = strain_vs_truth(rec, bl.sim.forward)
        result["strain_correlation_with_truth"] = corr
        say(f"strain vs the simulator's truth: correlation {corr:.2f}")
    return result


def strain_vs_truth(rec, forward) -> float:
    """Correlation of the reconstructed strain with the simulated particle's true strain.

    Only a demo can do this: it knows the simulator's displacement field. The
    reconstruction (orthogonal sample frame, axes z, y, x) is resampled to the
    simulator's voxel grid (axes x, y, z there), registered (shift, twin, phase
    offset) and both strains are computed by the same ``strain_analysis``.
    """
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
