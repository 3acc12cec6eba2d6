"""End-to-end BCDI reduction: rocking scan -> phased, orthogonal strain map -> files.

:func:`reconstruct` chains :mod:`.bcdi_preprocess`, :func:`.bcdi.phase_retrieval`,
:mod:`.bcdi_orthogonal`, :mod:`.bcdi_strain` and :mod:`.bcdi_io`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .phasing import PhasingResult, Recipe, phase_retrieval
from .orthogonal import OrthoObject, detector_frame, orthogonalize, support_extent_shape
from .preprocess import BCDIData, prepare
from .strain import StrainResult, strain_analysis

__all__ = ["Reconstruction", "reconstruct", "export"]


@dataclass
class Reconstruction:
    """Everything :func:`reconstruct` produced (``files``: name -> path written)."""

    data: BCDIData
    phasing: PhasingResult
    ortho: OrthoObject
    strain: StrainResult
    files: dict = field(default_factory=dict)

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
            "best_run": {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in best.items()},
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
            "strain_microstrain": {
                "mean": float(np.nanmean(s.strain) * 1e6) if inner.any() else None,
                "std": float(np.nanstd(s.strain) * 1e6) if inner.any() else None,
            },
        }


def reconstruct(source, meta=None, *, n_runs: int = 4, seed: int = 0, recipe: Recipe | str | None = None,
                shape=(None, 128, 128), binning=(1, 1), voxel_nm: float | None = None,
                backend: str = "auto", progress: bool = True, out_dir=None, figures: bool = True) -> Reconstruction:
    """Reduce one BCDI rocking scan.

    Parameters
    ----------
    source, meta
        As :func:`~braggscope.analysis.bcdi.preprocess.prepare` (arrays + meta,
        a ``(frames, meta)`` pair, a run, or a BLISS HDF5 path).
    n_runs, seed, recipe, backend, progress
        As :func:`~braggscope.analysis.bcdi.phase_retrieval`.
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
    phasing = phase_retrieval(data.intensity, mask=data.mask, n_runs=n_runs, seed=seed, recipe=recipe,
                              backend=backend, progress=progress)
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
    rec = Reconstruction(data=data, phasing=phasing, ortho=ortho, strain=strain)
    if out_dir is not None:
        export(rec, out_dir, figures=figures)
    return rec


def export(rec: Reconstruction, out_dir, *, figures: bool = True, stem: str = "bcdi") -> dict:
    """Write CXI, npz, vti, summary JSON and (optionally) PNG figures to ``out_dir``."""
    from .files import plot_isosurface, plot_strain_slices, strain_fields, write_cxi, write_npz, write_vti

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = strain_fields(rec.strain)
    summary = rec.summary()
    params = {**{k: v for k, v in rec.data.meta.items() if k != "eta"}, "eta": rec.data.eta,
              "crop": [[s.start, s.stop] for s in rec.data.crop], **summary,
              "metrics": rec.phasing.metrics}
    files = {
        "cxi": write_cxi(out / f"{stem}.cxi", rec.phasing.obj, rec.phasing.support, params=params,
                         fields={**fields, "object_orthogonal": rec.ortho.obj}, modes=rec.phasing.runs,
                         intensity=rec.data.intensity, mask=rec.data.mask),
        "npz": write_npz(out / f"{stem}.npz", {**fields, "object_orthogonal": rec.ortho.obj,
                                               "object_detector_frame": rec.phasing.obj,
                                               "voxel_nm": np.float64(rec.ortho.voxel_nm),
                                               "q_bragg": rec.ortho.q_bragg}, **summary),
        "vti": write_vti(out / f"{stem}.vti", fields, voxel_nm=rec.ortho.voxel_nm, q_bragg=rec.ortho.q_bragg),
    }
    (out / f"{stem}_summary.json").write_text(json.dumps(summary, indent=2))
    files["summary"] = out / f"{stem}_summary.json"
    if figures:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig = plot_isosurface(rec.strain.amplitude, rec.strain.strain, voxel_nm=rec.ortho.voxel_nm,
                              title="amplitude iso-surface (0.3), strain along G")
        fig.savefig(out / f"{stem}_isosurface.png", dpi=110)
        plt.close(fig)
        fig = plot_strain_slices(rec.strain.strain, voxel_nm=rec.ortho.voxel_nm, title="strain along G")
        fig.savefig(out / f"{stem}_slices.png", dpi=110)
        plt.close(fig)
        files["isosurface"] = out / f"{stem}_isosurface.png"
        files["slices"] = out / f"{stem}_slices.png"
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
