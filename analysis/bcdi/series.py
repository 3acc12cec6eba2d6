"""A series of rocking scans (operando checkpoints, or any set of runs) reconstructed in one call.

Strain is compared from one scan to the next, so every scan is reduced with
the same conventions:

* the same crop, binning, recipe, seed, number of starts and support
  threshold;
* one orthogonal frame: the same voxel and the same grid for every scan,
  large enough for each one's support;
* phases referred to one Bragg vector, the reference scan's ``Q_ref`` (the Q
  of its crop centre). Each scan is cropped around its own peak and phased
  relative to its own crop centre ``Q_k``; its phase ramp (the peak's offset
  from that centre, which is strain) is put back, and the object is
  multiplied by ``exp(i (Q_ref - Q_k).r)``, so that a peak that moved from
  one scan to the next (a homogeneous strain change) shows in the strain.
  The reference scan's mean ramp is then removed from every scan (the
  strain is relative to the reference's mean lattice), and each scan's
  mean phase in its support is set to 0;
* every scan registered to the reference (shift to a fraction of a voxel,
  twin), decided on the objects without their ramps.

On a cluster (``scheduler``) the scans are phased side by side: all their
starts are on the cluster at once. The result is one ``xarray.Dataset`` with
a ``scan`` dimension (:attr:`SeriesReconstruction.dataset`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from braggscope.core.atomic import atomic_path

from .combine import registration, shifted
from .distributed import open_client
from .orthogonal import OrthoObject, detector_frame, orthogonalize, support_extent_shape
from .phasing import phase_retrieval
from .pipeline import Reconstruction, export
from .preprocess import prepare
from .result import to_dataset
from .runs import _twin, apply_phase_ramp, phase_ramp
from .strain import strain_analysis

__all__ = ["SeriesReconstruction", "reconstruct_series"]


@dataclass
class SeriesReconstruction:
    """Every scan of a series, reduced with one set of conventions (module docstring).

    Attributes
    ----------
    scans : list of :class:`.pipeline.Reconstruction`
        Per scan, with the series' orthogonal object and strain.
    reference : int
        Index of the reference scan.
    labels : list of str
    files : dict
        Name -> path written by :meth:`export`.
    """

    scans: list
    reference: int
    labels: list
    files: dict = field(default_factory=dict)

    @property
    def dataset(self):
        """The scans' results as one ``xarray.Dataset`` with dimensions ``(scan, z, y, x)``."""
        import xarray as xr

        ref = self.scans[self.reference].ortho
        parts = [to_dataset(rec.strain, q_bragg=ref.q_bragg) for rec in self.scans]
        ds = xr.concat(parts, dim="scan", combine_attrs="override")
        ds = ds.assign_coords(scan=("scan", list(self.labels), {"long_name": "scan"}))
        ds.attrs.update(reference_scan=str(self.labels[self.reference]),
                        phase_reference="Q of the reference scan's crop centre; its mean ramp removed from all",
                        mode_fraction=[float(r.phasing.mode_fraction) for r in self.scans])
        return ds

    def export(self, out_dir, *, figures: bool = False) -> dict:
        """Each scan's files in ``out_dir/<label>/`` and the series in ``out_dir/series.nxs`` (NeXus: the
        dataset's variables under ``entry/series``, the scan labels as byte strings)."""
        import h5py

        from braggscope.analysis.nexus import set_default, write_nxdata

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {}
        for label, rec in zip(self.labels, self.scans):
            files[label] = export(rec, out / str(label), figures=figures)
        with atomic_path(out / "series.nxs") as tmp, h5py.File(tmp, "w") as f:
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            ds = self.dataset
            ds = ds.assign_coords(scan=("scan", np.array(self.labels, dtype="S"), ds.scan.attrs))  # HDF5: bytes
            write_nxdata(entry, "series", ds, signal="strain")
            set_default(f, "entry/series")
        files["series"] = out / "series.nxs"
        self.files = files
        return files


def reconstruct_series(sources, metas=None, *, labels=None, reference: int = 0, n_runs: int = 4,
                       n_keep: int | None = None, seed: int = 0, recipe=None, shape=(None, 128, 128),
                       binning=(1, 1), voxel_nm: float | None = None, support_threshold: float = 0.3,
                       backend: str = "auto", scheduler=None, n_workers: int | None = None, live=None,
                       progress: bool = True, out_dir=None, figures: bool = False) -> SeriesReconstruction:
    """Reconstruct a series of rocking scans with consistent conventions (module docstring).

    Parameters
    ----------
    sources : sequence
        One source per scan, as :func:`.preprocess.prepare` takes them (arrays
        with ``metas``, ``(frames, meta)`` pairs, ``RockingStack`` objects, runs
        or BLISS files).
    metas : sequence of dict, optional
        Metadata of array sources.
    labels : sequence of str, optional
        Names of the scans (default ``"0"``, ``"1"``, ...).
    reference : int
        The scan the others are referred to.
    n_runs, n_keep, seed, recipe, backend, support_threshold
        As :func:`.phasing.phase_retrieval`, the same for every scan.
    shape, binning, voxel_nm
        As :func:`.pipeline.reconstruct`; the voxel defaults to the finest
        plane spacing of the reference scan.
    scheduler, n_workers
        Where the starts run (:mod:`.distributed`); one cluster serves all scans.
    live : path-like, optional
        A live view per scan (:class:`.live.LiveView`): ``live.png`` becomes
        ``live_<label>.png``.
    out_dir : path-like, optional
        When given, :meth:`SeriesReconstruction.export` writes there.
    """
    sources = list(sources)
    if len(sources) < 1:
        raise ValueError("sources must hold at least one rocking scan")
    metas = [None] * len(sources) if metas is None else list(metas)
    labels = [str(k) for k in range(len(sources))] if labels is None else [str(x) for x in labels]
    if len(metas) != len(sources) or len(labels) != len(sources):
        raise ValueError(f"metas and labels must have one entry per scan ({len(sources)}), "
                         f"got {len(metas)} and {len(labels)}")
    if not 0 <= int(reference) < len(sources):
        raise ValueError(f"reference must be a scan index in [0, {len(sources)}), got {reference!r}")
    data = [prepare(s, m, shape=shape, binning=binning) for s, m in zip(sources, metas)]
    kw = dict(n_runs=n_runs, n_keep=n_keep, seed=seed, recipe=recipe, backend=backend,
              support_threshold=support_threshold, progress=progress)
    views = [None if live is None else Path(live).with_name(f"{Path(live).stem}_{label}{Path(live).suffix}")
             for label in labels]
    if scheduler is None:
        phased = [phase_retrieval(d.intensity, mask=d.mask, live=v, **kw) for d, v in zip(data, views)]
    else:
        with open_client(scheduler, n_workers=n_workers) as client, ThreadPoolExecutor(len(data)) as pool:
            # one thread per scan: every scan's starts are on the cluster at once
            phased = list(pool.map(lambda d, v: phase_retrieval(d.intensity, mask=d.mask, scheduler=client, live=v,
                                                                **kw), data, views))
    scans = _referred(data, phased, int(reference), voxel_nm, support_threshold)
    result = SeriesReconstruction(scans=scans, reference=int(reference), labels=labels)
    if out_dir is not None:
        result.export(out_dir, figures=figures)
    return result


def _frame(d):
    setup = d.meta["setup"]
    n_eta = d.intensity.shape[0]
    return detector_frame(d.intensity.shape, setup.geometry(), float(d.eta[n_eta // 2]), float(d.meta["eta_step"]),
                          setup.delta, setup.nu, setup.phi)


def _referred(data, phased, ref, voxel_nm, threshold) -> list:
    """Every scan on one orthogonal grid, phases referred to the reference's Q, registered to it; strain."""
    frames = [_frame(d) for d in data]
    v = float(np.min(frames[ref].plane_spacing_nm)) if voxel_nm is None else float(voxel_nm)
    shape = tuple(np.max([support_extent_shape(p.support, f, v) for p, f in zip(phased, frames)], axis=0))
    q_ref = frames[ref].q_center
    objs = []
    for p, f in zip(phased, frames):
        o = orthogonalize(apply_phase_ramp(p.obj, p.ramp), f, voxel_nm=v, shape=shape).obj  # its ramp back
        objs.append(o * _plane_wave(q_ref - f.q_center, shape, v))
    support_of = [np.abs(o) >= threshold * np.abs(o).max() for o in objs]
    ref_ramp = phase_ramp(objs[ref], support_of[ref])
    objs = [apply_phase_ramp(o, [-s for s in ref_ramp]) for o in objs]
    target = _flat(objs[ref], support_of[ref])
    g = q_ref / np.linalg.norm(q_ref)
    scans = []
    for k, (o, d, p, f) in enumerate(zip(objs, data, phased, frames)):
        if k != ref:
            twin, shift = registration(_flat(o, support_of[k]), target)
            o = shifted(_twin(o) if twin else o, shift)
        sup = np.abs(o) >= threshold * np.abs(o).max()
        o = o * np.exp(-1j * np.angle(np.sum(o[sup])))
        ortho = OrthoObject(obj=o.astype(np.complex64), voxel_nm=v, q_bragg=q_ref.copy())
        strain = strain_analysis(o, q_bragg_norm=float(np.linalg.norm(q_ref)), voxel_nm=v, g_unit=g[::-1],
                                 support=sup)
        rec = Reconstruction(data=d, phasing=p, ortho=ortho, strain=strain, frame=f)
        rec.assess()
        scans.append(rec)
    return scans


def _flat(obj, support):
    """``obj`` without its own linear phase ramp (for registration decisions only)."""
    return apply_phase_ramp(obj, [-s for s in phase_ramp(obj, support)])


def _plane_wave(dq, shape, voxel_nm):
    """``exp(i dq.r)`` on the orthogonal grid (``dq`` sample frame (x, y, z), 1/Angstrom; r from the centre)."""
    nz, ny, nx = shape
    step = voxel_nm * 10.0  # Angstrom
    z = (np.arange(nz) - nz // 2)[:, None, None] * step
    y = (np.arange(ny) - ny // 2)[None, :, None] * step
    x = (np.arange(nx) - nx // 2)[None, None, :] * step
    return np.exp(1j * (dq[0] * x + dq[1] * y + dq[2] * z)).astype(np.complex64)
