"""End-to-end BCDI reduction: rocking scan -> phased, orthogonal strain map -> files.

:func:`reconstruct` chains :mod:`.preprocess`, :func:`.phase_retrieval`,
:mod:`.orthogonal`, :mod:`.strain` and :mod:`.metrics` (PRTF, FSC between the
two best runs); :func:`export` writes :mod:`.files` and :mod:`.figures`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from braggscope.core.atomic import atomic_path

from .figures import figure_diffraction, figure_isosurface, figure_resolution, figure_slices, save_figure
from .files import vti_fields, write_cxi, write_npz, write_vti
from .metrics import Curve, calculated_intensity, curves_dataset, fsc, prtf
from .orthogonal import DetectorFrame, OrthoObject, detector_frame, orthogonalize, support_extent_shape
from .phasing import PhasingResult, Recipe, phase_retrieval
from .preprocess import BCDIData, prepare
from .result import to_dataset
from .strain import StrainResult, strain_analysis

__all__ = ["Reconstruction", "reconstruct", "export"]


@dataclass
class Reconstruction:
    """Everything :func:`reconstruct` produced (``files``: name -> path written).

    ``frame`` is the detector-conjugate grid of the phasing; ``prtf`` and
    ``fsc`` the resolution curves (``fsc`` is None with fewer than two kept
    runs); :attr:`result` the labelled ``xarray.Dataset``.
    """

    data: BCDIData
    phasing: PhasingResult
    ortho: OrthoObject
    strain: StrainResult
    files: dict = field(default_factory=dict)
    frame: DetectorFrame | None = None
    prtf: Curve | None = None
    fsc: Curve | None = None

    @property
    def result(self):
        """The orthogonal result as an ``xarray.Dataset`` (coordinates z, y, x in nm)."""
        return to_dataset(self.strain, q_bragg=self.ortho.q_bragg)

    @property
    def coherence_px(self):
        """Partial-coherence widths fitted by the best kept run (None: coherent model)."""
        return self.phasing.metrics[self.phasing.kept[0]].get("coherence_px")

    def calculated_intensity(self):
        """Intensity the reconstruction predicts on the data's grid (blurred by :attr:`coherence_px`)."""
        return calculated_intensity(self.phasing.obj, self.data.intensity, self.data.mask, self.coherence_px)

    def assess(self) -> None:
        """Compute the PRTF against the data and the FSC between the two best kept runs.

        The PRTF compares the data with the intensity the phasing's model
        predicts: blurred by the fitted partial-coherence widths, if any.
        """
        b = None if self.frame is None else self.frame.b
        mask = self.data.mask
        self.prtf = prtf(self.phasing.obj, self.data.intensity, mask=mask, b=b, coherence_px=self.coherence_px)
        runs = self.phasing.runs
        self.fsc = fsc(runs[0], runs[1], b=b, mask=mask) if len(runs) >= 2 else None

    def summary(self) -> dict:
        """JSON-able summary (figures of merit, voxel size, resolution, strain statistics)."""
        s = self.strain
        inner = np.isfinite(s.strain)
        best = self.phasing.metrics[self.phasing.kept[0]]
        return {
            "recipe": str(self.phasing.recipe),
            "n_runs": len(self.phasing.metrics),
            "kept": [int(k) for k in self.phasing.kept],
            "select": self.phasing.select,
            "mode_fraction": float(self.phasing.mode_fraction),
            "mode_weights": [float(w) for w in self.phasing.mode_weights],
            "schedule": best.get("schedule"),
            "error_history": {"iteration": [int(i) for i in self.phasing.history[0][0]],
                              "error": [float(e) for e in self.phasing.history[0][1]]},
            "best_run": {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in best.items()},
            "timing_s": {k: float(v) for k, v in self.phasing.timing.items()},
            "shape_detector_frame": list(self.data.intensity.shape),
            "oversampling_data": list(self.data.oversampling_data),
            "oversampling_geometry": None if self.data.oversampling_geometry is None
            else list(self.data.oversampling_geometry),
            "voxel_nm": float(self.ortho.voxel_nm),
            "axes": self.ortho.axes,
            "q_bragg": [float(q) for q in self.ortho.q_bragg],
            "d_spacing_A": float(2 * np.pi / np.linalg.norm(self.ortho.q_bragg)),
            "support_voxels": int(s.support.sum()),
            "resolution_nm": [float(r) for r in s.resolution_nm],
            "resolution_note": "resolution_nm: amplitude edge width along z, y, x; prtf/fsc: half period pi/q_c",
            "prtf": None if self.prtf is None else self.prtf.summary(),
            "fsc": None if self.fsc is None else {**self.fsc.summary(), "runs": "two best kept runs"},
            "strain_microstrain": {
                "mean": float(np.nanmean(s.strain) * 1e6) if inner.any() else None,
                "std": float(np.nanstd(s.strain) * 1e6) if inner.any() else None,
            },
        }


def reconstruct(source, meta=None, *, n_runs: int = 4, n_keep: int | None = None, select: str = "sharpness",
                seed: int = 0, recipe: Recipe | str | None = None, shape=(None, 128, 128), binning=(1, 1),
                voxel_nm: float | None = None, backend: str = "auto", scheduler=None, n_workers: int | None = None,
                live=None, progress: bool = True, out_dir=None, figures: bool = True) -> Reconstruction:
    """Reduce one BCDI rocking scan.

    Parameters
    ----------
    source, meta
        As :func:`~braggscope.analysis.bcdi.preprocess.prepare` (arrays + meta,
        a ``(frames, meta)`` pair, a ``RockingStack``, a run, or a BLISS HDF5 path).
    n_runs, n_keep, select, seed, recipe, backend, scheduler, n_workers, live, progress
        As :func:`~braggscope.analysis.bcdi.phase_retrieval` (``scheduler="local"``:
        the starts on a local Dask cluster).
    shape, binning
        Crop (rocking, rows, cols) and detector binning before phasing.
    voxel_nm : float, optional
        Voxel of the orthogonal grid (default: the finest detector-frame spacing).
    out_dir : path-like, optional
        When given, :func:`export` writes the files there.
    figures : bool
        Also write the PNG figures.
    """
    data = prepare(source, meta, shape=shape, binning=binning)
    phasing = phase_retrieval(data.intensity, mask=data.mask, n_runs=n_runs, n_keep=n_keep, select=select, seed=seed,
                              recipe=recipe, backend=backend, scheduler=scheduler, n_workers=n_workers, live=live,
                              progress=progress)
    m = data.meta
    setup = m["setup"]  # the ScanSetup of the cropped, binned frames (preprocess.prepare)
    geometry = setup.geometry()
    step = float(m["eta_step"])
    n_eta = data.intensity.shape[0]
    frame = detector_frame(data.intensity.shape, geometry, float(data.eta[n_eta // 2]), step,
                           setup.delta, setup.nu, setup.phi)
    v = float(np.min(frame.plane_spacing_nm)) if voxel_nm is None else float(voxel_nm)
    out_shape = support_extent_shape(phasing.support, frame, v)  # only the particle's neighbourhood
    ortho = orthogonalize(phasing.obj, frame, voxel_nm=v, shape=out_shape)
    sup = orthogonalize(phasing.support.astype(np.float32), frame, voxel_nm=v, shape=out_shape).obj >= 0.5
    ortho = _crop_to(ortho, sup, margin=4)
    sup = _crop_box(sup, sup, margin=4)
    strain = strain_analysis(ortho.obj, q_bragg_norm=float(np.linalg.norm(ortho.q_bragg)),
                             voxel_nm=ortho.voxel_nm, g_unit=ortho.g_unit_zyx, support=sup)
    rec = Reconstruction(data=data, phasing=phasing, ortho=ortho, strain=strain, frame=frame)
    rec.assess()
    if out_dir is not None:
        export(rec, out_dir, figures=figures)
    return rec


def export(rec: Reconstruction, out_dir, *, figures: bool = True, stem: str = "bcdi") -> dict:
    """Write CXI, npz, vti, summary JSON and (optionally) PNG figures to ``out_dir``.

    Every file is written atomically; returns (and sets ``rec.files``) name -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = rec.result
    summary = rec.summary()
    m = rec.data.meta
    params = {**{k: v for k, v in m.items() if k != "eta"}, "eta": rec.data.eta,
              "crop": [[s.start, s.stop] for s in rec.data.crop], **summary, "metrics": rec.phasing.metrics}
    calc = rec.calculated_intensity()
    quality = curves_dataset(rec.prtf, rec.fsc) if rec.prtf is not None else None
    instrument = {k: m[k] for k in ("energy_kev", "distance_m", "pixel_m") if k in m}
    files = {
        "cxi": write_cxi(out / f"{stem}.cxi", result, obj=rec.ortho.obj, params=params,
                         obj_detector=rec.phasing.obj, support_detector=rec.phasing.support,
                         modes=rec.phasing.runs, mode_fraction=rec.phasing.mode_fraction,
                         basis_nm=None if rec.frame is None else rec.frame.t / 10.0,
                         intensity=rec.data.intensity, mask=rec.data.mask, calculated=calc, quality=quality,
                         instrument=instrument),
        "npz": write_npz(out / f"{stem}.npz", {**vti_fields(result), "object_orthogonal": rec.ortho.obj,
                                               "object_detector_frame": rec.phasing.obj,
                                               "voxel_nm": np.float64(rec.ortho.voxel_nm),
                                               "q_bragg": rec.ortho.q_bragg}, **summary),
        "vti": write_vti(out / f"{stem}.vti", vti_fields(result), voxel_nm=rec.ortho.voxel_nm,
                         q_bragg=rec.ortho.q_bragg),
    }
    with atomic_path(out / f"{stem}_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    files["summary"] = out / f"{stem}_summary.json"
    if figures:
        figs = {"slices": figure_slices(result, title="orthogonal sample frame, central planes"),
                "isosurface": figure_isosurface(result),
                "diffraction": figure_diffraction(rec.data.intensity, calc, mask=rec.data.mask,
                                                  title="measured and calculated intensity (detector grid)")}
        if rec.prtf is not None:
            figs["resolution"] = figure_resolution(rec.prtf, rec.fsc)
        for name, fig in figs.items():
            files[name] = save_figure(fig, out / f"{stem}_{name}.png")
    rec.files = files
    return files


def _crop_box(a, support, margin):
    idx = np.nonzero(support)
    if not idx[0].size:
        return a
    sl = tuple(slice(max(int(i.min()) - margin, 0), min(int(i.max()) + margin + 1, n))
               for i, n in zip(idx, support.shape))
    return a[sl]


def _crop_to(ortho: OrthoObject, support, margin) -> OrthoObject:
    return OrthoObject(obj=_crop_box(ortho.obj, support, margin), voxel_nm=ortho.voxel_nm,
                       q_bragg=ortho.q_bragg, axes=ortho.axes)
