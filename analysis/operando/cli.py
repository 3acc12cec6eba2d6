"""``braggscope reduce series CAMPAIGN --out series.h5 [--figures DIR]``: an operando campaign reduced.

Every checkpoint of the campaign ``CAMPAIGN`` in the catalog (opened with the configuration of
``braggscope --config``) is reduced and placed in one particle frame
(:func:`braggscope.analysis.operando.reduce_campaign`); the series is written as NeXus with a
``checkpoint`` dimension and the cell's state along it, the figures (voltage curve with the
checkpoints, d-spacing and strain against voltage and lithium, montage, movie) into ``DIR``.
"""

from __future__ import annotations

from pathlib import Path

from braggscope.core.errors import ArgumentError


def add_parser(subparsers) -> None:
    """Add ``series`` to ``braggscope reduce``."""
    p = subparsers.add_parser("series", help="an operando campaign's checkpoints as one series (NeXus + figures)")
    p.add_argument("campaign", help="the campaign id (the campaign_id its runs carry)")
    p.add_argument("--out", required=True, help="output series file (NeXus HDF5)")
    p.add_argument("--figures", default=None, metavar="DIR", help="write PNG figures and movie.gif into DIR")
    p.add_argument("--reference", type=int, default=0, help="position of the reference checkpoint (default 0)")
    p.add_argument("--no-register", dest="register", action="store_false",
                   help="place the maps by the particle centres found only (no registration of the maps)")
    p.add_argument("--threshold", type=float, default=0.2, help="intensity mask fraction (default 0.2)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args) -> int:
    """Check the options, open the catalog, reduce, write; expected errors are one-line UserErrors."""
    # here, not at the top: the command line imports this module to list its options, and these import tiled
    from braggscope.analysis.readers import open_catalog_checked
    from braggscope.core.config import load_config

    from .series import reduce_campaign

    campaign = str(args.campaign).strip()
    if not campaign:
        raise ArgumentError("CAMPAIGN must name a campaign (the campaign_id of its runs), got an empty string")
    if not 0.0 <= args.threshold < 1.0:
        raise ArgumentError(f"--threshold must be in [0, 1), got {args.threshold}")
    if args.reference < 0:
        raise ArgumentError(f"--reference must be >= 0, got {args.reference}")
    client = open_catalog_checked(load_config(getattr(args, "config", None)))
    series, paths = reduce_campaign(client, campaign, Path(args.out), figures=args.figures,
                                    reference=args.reference, register=args.register, threshold=args.threshold,
                                    progress=None if args.quiet else print)
    n = series.sizes["checkpoint"]
    volts = series["voltage"].values
    print(f"wrote {args.out}: campaign {campaign!r}, {n} checkpoints, {volts.min():.3f}-{volts.max():.3f} V, "
          f"lithium {series['lithium'].values.max():.3f} -> {series['lithium'].values.min():.3f}")
    if "d_mean" in series:
        print("checkpoint  voltage (V)  lithium  d_mean (A)  strain_mean (ue)")
        for k in range(n):
            print(f"{int(series.checkpoint[k]):>10}  {float(series['voltage'][k]):>11.4f}  "
                  f"{float(series['lithium'][k]):>7.4f}  {float(series['d_mean'][k]):>10.5f}  "
                  f"{float(series['strain_mean'][k]):>16.0f}")
    if args.figures:
        print(f"wrote {len(paths) - 1} figures to {args.figures}")
    return 0
