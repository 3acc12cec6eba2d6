"""``braggscope reduce bcdi <run id | file.h5> ... --out DIR``: reconstruct BCDI rocking scans.

A source is either an ID01 BLISS HDF5 file (``--scan`` chooses the entry, or
several: ``--scan 1.1,2.1,3.1``) or a run of the catalog (scan id or uid,
opened with the configuration given by ``braggscope --config``). One scan
gives one reconstruction; several give a series
(:func:`~braggscope.analysis.bcdi.series.reconstruct_series`). The random
starts run on a local Dask cluster, or on the scheduler of ``--scheduler``
or ``[analysis] dask_scheduler`` (``none``: in this process; also the default
without dask.distributed, which comes with the ``[facility]`` extra).
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np

from braggscope.core.atomic import staged_directory
from braggscope.core.errors import ArgumentError
from braggscope.core.extras import require_extra

from .recipe import SELECT, Recipe


def add_parser(subparsers) -> None:
    """Add ``bcdi`` to ``braggscope reduce``."""
    p = subparsers.add_parser("bcdi", help="phase retrieval, orthogonalisation and strain of rocking scans")
    p.add_argument("source", nargs="+",
                   help="BLISS HDF5 file or catalog run (scan id or uid); several: a series with a scan dimension")
    p.add_argument("--out", required=True, help="output directory (CXI, npz, vti, PNG, summary JSON)")
    p.add_argument("--runs", type=int, default=4, help="random starts per scan (default 4)")
    p.add_argument("--keep", type=int, default=None, help="best starts combined (default: half of --runs)")
    p.add_argument("--select", default="sharpness", choices=SELECT, help="metric ranking the starts")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--recipe", default=None,
                   help='e.g. "HIO:300,RAAR:500,ER:200" (default HIO:200,RAAR:100,ER:20,RAAR:100,ER:20,RAAR:80,ER:100)')
    p.add_argument("--scan", default=None,
                   help="BLISS entry, e.g. 3.1 (default: the first); several entries of one file: 1.1,2.1,3.1")
    p.add_argument("--reference", type=int, default=0, help="series: the scan the others are referred to")
    p.add_argument("--shape", default="none,128,128",
                   help="crop around the peak: rocking,rows,cols ('none' keeps an axis; default none,128,128)")
    p.add_argument("--binning", default="1,1", help="detector binning rows,cols (default 1,1)")
    p.add_argument("--voxel-nm", type=float, default=None, help="orthogonal voxel size in nm")
    p.add_argument("--backend", default="auto", choices=("auto", "scipy", "cupy"))
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler of the starts, e.g. tcp://host:8786; 'local': a cluster on this computer; "
                        "'none': in this process (default: [analysis] dask_scheduler, empty = local)")
    p.add_argument("--workers", type=int, default=None, help="workers of the local cluster (default: one per core)")
    p.add_argument("--live", default=None, metavar="PNG",
                   help="live view while phasing: error curves and central slices, refreshed in place "
                        "(a series: one PNG per scan, PNG stem + _<scan>)")
    monitor = p.add_mutually_exclusive_group()
    monitor.add_argument("--monitor", default="auto", metavar="COUNTER",
                         help="normalise every frame by this counter (default: the scan's monitor, mon1 when "
                              "recorded); frames where it reads 0 (no beam) are masked")
    monitor.add_argument("--no-monitor", dest="monitor", action="store_const", const=None,
                         help="no monitor normalisation")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _parse_ints(text, n, name, allow_none=False):
    parts = [t.strip().lower() for t in str(text).split(",")]
    if len(parts) != n:
        raise ValueError(f"--{name} needs {n} comma-separated values, got {text!r}")
    out = []
    for t in parts:
        if allow_none and t in ("none", ""):
            out.append(None)
            continue
        try:
            out.append(int(t))
        except ValueError:
            raise ValueError(f"--{name}: {t!r} is not an integer") from None
    return tuple(out)


def _sources(args) -> list:
    """The :class:`~braggscope.core.stacks.RockingStack` of each scan (the shared readers) and its label."""
    from braggscope.analysis.readers import open_catalog_checked, read_bliss_rocking, read_catalog_run
    from braggscope.core.config import load_config

    entries = [e.strip() for e in args.scan.split(",")] if args.scan else [None]
    out, catalog = [], None
    for source in args.source:
        path = Path(source)
        if path.suffix.lower() in (".h5", ".hdf5", ".nxs", ".cxi") or path.exists():
            for entry in entries:
                label = path.stem if len(entries) == 1 else f"{path.stem}_{entry}"
                out.append((read_bliss_rocking(path, scan=entry), label))
            continue
        if catalog is None:
            catalog = open_catalog_checked(load_config(getattr(args, "config", None)))
        out.append((read_catalog_run(catalog, source, kind="bcdi"), str(source)))
    return out


def _with_monitor(stack, wanted):
    """The stack normalised by ``--monitor`` (``"auto"``: its own monitor; None: none); says which in one line."""
    if wanted not in ("auto", None) and wanted not in stack.counters:
        raise ArgumentError(f"--monitor {wanted}: {stack.source} records no such counter "
                            f"(counters: {', '.join(sorted(stack.counters)) or 'none'})")
    name = stack.monitor if wanted == "auto" else wanted
    print(f"monitor: {'frames normalised by ' + name if name else 'none'} ({stack.source})")
    return replace(stack, monitor=name)


def _scheduler(args):
    """Where the starts run: ``--scheduler``, else ``[analysis] dask_scheduler``; "" and "local": a local cluster
    ("": in this process when dask.distributed, of the ``[facility]`` extra, is not installed)."""
    from braggscope.core.config import load_config

    text = args.scheduler if args.scheduler is not None else \
        load_config(getattr(args, "config", None)).get("analysis.dask_scheduler", "")
    text = str(text).strip()
    if text.lower() == "none" or (text == "" and importlib.util.find_spec("distributed") is None):
        return None
    require_extra(f"--scheduler {text or 'local'}", "distributed")
    if text in ("", "local"):
        return "local"
    if "://" not in text:
        raise ArgumentError(f"dask scheduler must be 'local', 'none' or an address such as tcp://host:8786, "
                            f"got {text!r} (--scheduler or [analysis] dask_scheduler)")
    return text


def _check_args(args):
    """Parsed options, or an ArgumentError naming the option; nothing is read or written."""
    try:
        shape = _parse_ints(args.shape, 3, "shape", allow_none=True)
        binning = _parse_ints(args.binning, 2, "binning")
        recipe = Recipe.parse(args.recipe) if args.recipe else None
    except ValueError as exc:
        raise ArgumentError(str(exc)) from None
    if args.runs < 1:
        raise ArgumentError(f"--runs must be >= 1, got {args.runs}")
    if args.keep is not None and not 1 <= args.keep <= args.runs:
        raise ArgumentError(f"--keep must be in [1, --runs={args.runs}], got {args.keep}")
    if args.workers is not None and args.workers < 1:
        raise ArgumentError(f"--workers must be >= 1, got {args.workers}")
    if min(binning) < 1:
        raise ArgumentError(f"--binning must be integers >= 1, got {args.binning!r}")
    if any(s is not None and s < 1 for s in shape):
        raise ArgumentError(f"--shape must be integers >= 1 or 'none', got {args.shape!r}")
    if args.voxel_nm is not None and not args.voxel_nm > 0:
        raise ArgumentError(f"--voxel-nm must be > 0 nm, got {args.voxel_nm}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ArgumentError(f"--out {out} exists and is not a directory")
    if args.live is not None and (Path(args.live).is_dir() or not Path(args.live).resolve().parent.is_dir()):
        raise ArgumentError(f"--live {args.live}: give a PNG file name in an existing directory")
    return shape, binning, recipe, _scheduler(args)


def run(args) -> int:
    """Run the reduction; returns the process exit status.

    Order: options checked, the scans read (files and sources checked), the
    crop checked against them, frames checked (:func:`~braggscope.analysis.bcdi.preprocess.prepare`),
    the reconstruction run; only then are the outputs written, into a staged
    directory that becomes ``--out`` complete or not at all. Expected errors
    are :class:`~braggscope.core.errors.UserError` (the ``braggscope`` entry
    point prints them on one line and exits 2).
    """
    from .pipeline import export, reconstruct  # slow to import (scipy, scikit-image, matplotlib): not for --help

    shape, binning, recipe, scheduler = _check_args(args)
    scans = [(_with_monitor(stack, args.monitor), label) for stack, label in _sources(args)]
    if not 0 <= args.reference < len(scans):
        raise ArgumentError(f"--reference must be a scan index in [0, {len(scans)}), got {args.reference}")
    for stack, _ in scans:
        for s, n, axis in zip(shape, np.shape(stack.frames), ("rocking", "rows", "cols")):
            if s is not None and s > n:
                raise ArgumentError(f"--shape {args.shape}: {s} {axis} is more than the scan's {n} "
                                    f"(source {stack.source or args.source})")
    kw = dict(n_runs=args.runs, n_keep=args.keep, seed=args.seed, recipe=recipe, shape=shape, binning=binning,
              voxel_nm=args.voxel_nm, backend=args.backend, scheduler=scheduler, n_workers=args.workers,
              progress=not args.quiet)
    if len(scans) > 1:
        return _run_series(args, scans, {**kw, "live": args.live})
    rec = reconstruct(scans[0][0], select=args.select, live=args.live, **kw)
    out = Path(args.out)
    with staged_directory(out) as stage:
        files = export(rec, stage, figures=not args.no_figures)
    rec.files = {name: out / Path(path).name for name, path in files.items()}
    s = rec.summary()
    strain = s["strain_microstrain"]
    print(f"mode fraction {s['mode_fraction']:.3f}, voxel {s['voxel_nm']:.2f} nm, "
          f"resolution {', '.join(f'{r:.1f}' for r in s['resolution_nm'])} nm, "
          + (f"strain {strain['mean']:.1f} +- {strain['std']:.1f} microstrain" if strain["mean"] is not None
             else "no strain inside the support"))
    print(f"wrote {len(rec.files)} files to {out} (summary: {rec.files.get('summary', out)})")
    return 0


def _run_series(args, scans, kw) -> int:
    """Several scans: one series, ``--out/series.nxs`` and a directory per scan."""
    from .series import reconstruct_series  # slow to import, as the pipeline

    labels = _unique([label for _, label in scans])
    rec = reconstruct_series([stack for stack, _ in scans], labels=labels, reference=args.reference, **kw)
    out = Path(args.out)
    with staged_directory(out) as stage:
        rec.export(stage, figures=not args.no_figures)
    for label, scan in zip(labels, rec.scans):
        strain = scan.strain.strain
        mean = float(np.nanmean(strain) * 1e6) if np.isfinite(strain).any() else float("nan")
        print(f"scan {label}: mode fraction {scan.phasing.mode_fraction:.3f}, mean strain {mean:.1f} microstrain")
    print(f"wrote the series of {len(labels)} scans to {out} (series.nxs, one directory per scan)")
    return 0


def _unique(labels) -> list:
    """Labels made unique by their position where two scans share one."""
    return [f"{k}_{x}" if labels.count(x) > 1 else x for k, x in enumerate(labels)]
