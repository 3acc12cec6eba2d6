"""``braggscope reduce bcdi <run id | file.h5> --out DIR``: reconstruct a BCDI rocking scan.

The source is either an ID01 BLISS HDF5 file (one rocking scan, ``--scan``
chooses the entry) or a run of the catalog (scan id or uid, opened with the
configuration given by ``braggscope --config``).
"""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    """Add ``bcdi`` to ``braggscope reduce``."""
    p = subparsers.add_parser("bcdi", help="phase retrieval, orthogonalisation and strain of a rocking scan")
    p.add_argument("source", help="BLISS HDF5 file, or a catalog run (scan id or uid)")
    p.add_argument("--out", required=True, help="output directory (CXI, npz, vti, PNG, summary JSON)")
    p.add_argument("--runs", type=int, default=4, help="random starts (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--recipe", default=None, help='e.g. "HIO:300,RAAR:500,ER:200" (default HIO:200,RAAR:400,ER:200)')
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
    path = Path(args.source)
    if path.suffix.lower() in (".h5", ".hdf5", ".nxs", ".cxi") or path.exists():
        if not path.exists():
            raise ValueError(f"source file {path} does not exist")
        from .preprocess import load_bliss

        return load_bliss(path, scan=args.scan)
    from braggscope.core.config import load_config
    from braggscope.core.storage import load_run_from_text, open_catalog, rocking_stack

    client = open_catalog(load_config(getattr(args, "config", None)))
    frames, meta = rocking_stack(load_run_from_text(client, args.source))
    return frames.compute() if hasattr(frames, "compute") else frames, meta


def run(args) -> int:
    """Run the reduction; returns the process exit status."""
    from .phasing import Recipe

    try:
        shape = _parse_ints(args.shape, 3, "shape", allow_none=True)
        binning = _parse_ints(args.binning, 2, "binning")
        recipe = Recipe.parse(args.recipe) if args.recipe else None
        if args.runs < 1:
            raise ValueError(f"--runs must be >= 1, got {args.runs}")
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a directory")
        source = _source(args)
    except (ValueError, KeyError) as exc:
        print(f"braggscope reduce bcdi: error: {exc}", file=sys.stderr)
        return 2
    from .pipeline import reconstruct

    rec = reconstruct(source, n_runs=args.runs, seed=args.seed, recipe=recipe, shape=shape, binning=binning,
                      voxel_nm=args.voxel_nm, backend=args.backend, progress=not args.quiet, out_dir=out,
                      figures=not args.no_figures)
    s = rec.summary()
    print(f"mode fraction {s['mode_fraction']:.3f}, voxel {s['voxel_nm']:.2f} nm, "
          f"resolution {', '.join(f'{r:.1f}' for r in s['resolution_nm'])} nm, "
          f"strain {s['strain_microstrain']['mean']:.1f} +- {s['strain_microstrain']['std']:.1f} microstrain")
    for name, path in rec.files.items():
        print(f"{name}: {path}")
    return 0
