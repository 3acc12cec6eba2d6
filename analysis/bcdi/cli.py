"""``braggscope reduce bcdi <run id | file.h5> --out DIR``: reconstruct a BCDI rocking scan.

The source is either an ID01 BLISS HDF5 file (one rocking scan, ``--scan``
chooses the entry) or a run of the catalog (scan id or uid, opened with the
configuration given by ``braggscope --config``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from braggscope.core.atomic import staged_directory
from braggscope.core.errors import ArgumentError


def add_parser(subparsers) -> None:
    """Add ``bcdi`` to ``braggscope reduce``."""
    p = subparsers.add_parser("bcdi", help="phase retrieval, orthogonalisation and strain of a rocking scan")
    p.add_argument("source", help="BLISS HDF5 file, or a catalog run (scan id or uid)")
    p.add_argument("--out", required=True, help="output directory (CXI, npz, vti, PNG, summary JSON)")
    p.add_argument("--runs", type=int, default=4, help="random starts (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--recipe", default=None, help='e.g. "HIO:300,RAAR:500,ER:200" (default HIO:200,RAAR:100,ER:20,RAAR:100,ER:20,RAAR:80,ER:100)')
    p.add_argument("--scan", default=None, help="BLISS entry, e.g. 3.1 (default: the first)")
    p.add_argument("--shape", default="none,128,128",
                   help="crop around the peak: rocking,rows,cols ('none' keeps an axis; default none,128,128)")
    p.add_argument("--binning", default="1,1", help="detector binning rows,cols (default 1,1)")
    p.add_argument("--voxel-nm", type=float, default=None, help="orthogonal voxel size in nm")
    p.add_argument("--backend", default="auto", choices=("auto", "scipy", "cupy"))
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


def _source(args):
    """The :class:`~braggscope.core.stacks.RockingStack` of a BLISS file or a catalog run (the shared readers)."""
    from braggscope.analysis.readers import open_catalog_checked, read_bliss_rocking, read_catalog_run
    from braggscope.core.config import load_config

    path = Path(args.source)
    if path.suffix.lower() in (".h5", ".hdf5", ".nxs", ".cxi") or path.exists():
        return read_bliss_rocking(path, scan=args.scan)
    return read_catalog_run(open_catalog_checked(load_config(getattr(args, "config", None))), args.source,
                            kind="bcdi")


def _check_args(args):
    """Parsed options, or an ArgumentError naming the option; nothing is read or written."""
    from .phasing import Recipe

    try:
        shape = _parse_ints(args.shape, 3, "shape", allow_none=True)
        binning = _parse_ints(args.binning, 2, "binning")
        recipe = Recipe.parse(args.recipe) if args.recipe else None
    except ValueError as exc:
        raise ArgumentError(str(exc)) from None
    if args.runs < 1:
        raise ArgumentError(f"--runs must be >= 1, got {args.runs}")
    if min(binning) < 1:
        raise ArgumentError(f"--binning must be integers >= 1, got {args.binning!r}")
    if any(s is not None and s < 1 for s in shape):
        raise ArgumentError(f"--shape must be integers >= 1 or 'none', got {args.shape!r}")
    if args.voxel_nm is not None and not args.voxel_nm > 0:
        raise ArgumentError(f"--voxel-nm must be > 0 nm, got {args.voxel_nm}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ArgumentError(f"--out {out} exists and is not a directory")
    return shape, binning, recipe


def run(args) -> int:
    """Run the reduction; returns the process exit status.

    Order: options checked, the scan read (file and sources checked), the
    crop checked against it, frames checked (:func:`~braggscope.analysis.bcdi.preprocess.prepare`),
    the reconstruction run; only then are the outputs written, into a staged
    directory that becomes ``--out`` complete or not at all. Expected errors
    are :class:`~braggscope.core.errors.UserError` (the ``braggscope`` entry
    point prints them on one line and exits 2).
    """
    from .pipeline import export, reconstruct

    shape, binning, recipe = _check_args(args)
    stack = _source(args)
    for s, n, axis in zip(shape, np.shape(stack.frames), ("rocking", "rows", "cols")):
        if s is not None and s > n:
            raise ArgumentError(f"--shape {args.shape}: {s} {axis} is more than the scan's {n} "
                                f"(source {stack.source or args.source})")
    rec = reconstruct(stack, n_runs=args.runs, seed=args.seed, recipe=recipe, shape=shape,
                      binning=binning, voxel_nm=args.voxel_nm, backend=args.backend, progress=not args.quiet)
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
