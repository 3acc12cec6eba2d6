"""``braggscope demo sxdm|bcdi|operando``: the whole chain on the simulated beamline (:mod:`braggscope.app.demo`)."""

from __future__ import annotations

from braggscope.app.demo.run import run_demo
from braggscope.core.config import load_config

__all__ = ["configure"]


def configure(parser) -> None:
    """Add the options of ``braggscope demo``."""
    parser.add_argument("kind", choices=("sxdm", "bcdi", "operando"), help="which demonstration")
    parser.add_argument("--quick", action="store_true", help="small version (tests, first look)")
    parser.add_argument("--inprocess", action="store_true",
                        help="in-process devices instead of the caproto simulator (no EPICS)")
    parser.add_argument("--out", help="output directory (default: <storage.data_dir>/demo-<kind>-<time>)")
    parser.add_argument("--nx", type=int, help="map points along x (default 24, quick 12)")
    parser.add_argument("--ny", type=int, help="map points along y (default 20, quick 10)")
    parser.add_argument("--neta", type=int, help="rocking angles (default 12, quick 6)")
    parser.add_argument("--no-reduce", action="store_true", help="skip the reduction / reconstruction")
    parser.add_argument("--fly", action="store_true",
                        help="sxdm: take the map as a fly scan (sxdm_fly; simulator over CA, docs/fly.md)")
    parser.add_argument("--dwell", type=float, default=0.005, help="fly scan: time per point, s (default 0.005)")
    parser.add_argument("--runs", type=int, help="bcdi: random starts of the phasing (default 4, quick 2)")
    parser.add_argument("--checkpoints", type=int, help="operando: checkpoints of the campaign (default 8, quick 6)")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    summary = run_demo(load_config(args.config), args.kind, quick=args.quick, inprocess=args.inprocess,
                       out=args.out, nx=args.nx, ny=args.ny, neta=args.neta, reduce=not args.no_reduce,
                       fly=args.fly, dwell_s=args.dwell, checkpoints=args.checkpoints, runs=args.runs)
    print(f"demo {args.kind}: {summary['wall_s']} s wall", flush=True)  # the rest is in summary.json
    return 0
