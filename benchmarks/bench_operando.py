"""An operando checkpoint's time: re-finding the peak and re-centring the particle against measuring.

Runs the campaign of ``braggscope demo operando`` (the caproto simulator with its cell, in real time
on loopback, the catalog written; its settings: ``--quick`` or the full demo's) without the series
reduction, then reads from the catalog, for every checkpoint, the wall time of its tracking run
(``operando_role="track"``: fluorescence line scans, radial and rocking scans) and of its measurement
(the fly map), and prints them side by side with the share of the checkpoint spent tracking (goal:
at most 10 %) and the dry run's estimate (:func:`braggscope.plans.operando.estimate_campaign`).

Usage::

    python benchmarks/bench_operando.py             # the full demo's settings (8 checkpoints, 16 x 16 x 5)
    python benchmarks/bench_operando.py --quick     # the quick demo's (6 checkpoints, 10 x 10 x 3)
    python benchmarks/bench_operando.py --quick --checkpoints 3
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("EPICS_CA_AUTO_ADDR_LIST", "NO")
os.environ.setdefault("BRAGGSCOPE_CATALOG_SERVER", "off")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick demo's settings")
    parser.add_argument("--checkpoints", type=int, default=None, help="checkpoints (default: the demo's)")
    parser.add_argument("--frame", type=int, default=128, help="detector frame size (default 128)")
    args = parser.parse_args(argv)

    from braggscope import storage
    from braggscope.app.demo.run import run_demo
    from braggscope.core.config import load_config

    root = Path(tempfile.mkdtemp(prefix="bench_operando_"))
    cfg = load_config()
    for key, value in (("storage.data_dir", root / "data"), ("detector.write_path", root / "data" / "detector"),
                       ("detector.read_path", root / "data" / "detector")):
        cfg.set(key, str(value))
    cfg.set("detector.shape", [args.frame, args.frame])
    cfg.set("detector.cch", [args.frame / 2, args.frame / 2])
    summary = run_demo(cfg, "operando", quick=args.quick, out=root / "out", reduce=False,
                       checkpoints=args.checkpoints)
    client = storage.open_catalog(cfg)
    rows = {}
    for run in storage.find_runs(client, campaign_id=summary["campaign_id"]):
        start, stop = run.metadata["start"], run.metadata.get("stop") or {}
        role = start.get("operando_role")
        rows.setdefault(int(start["checkpoint"]), {})[role] = float(stop.get("time", start["time"])) - start["time"]
    estimate = summary["estimate"]
    print(f"\noperando checkpoint timing ({'quick' if args.quick else 'full'} demo settings, {args.frame}x{args.frame}"
          f" frames, {estimate['measure_points']} flown points per map, {estimate['track_points']} tracking points)")
    print(f"{'checkpoint':>10}  {'tracking (s)':>12}  {'measuring (s)':>13}  {'tracking share':>14}")
    total_t = total_m = 0.0
    for k in sorted(rows):
        t, m = rows[k].get("track", float("nan")), rows[k].get("measure", float("nan"))
        total_t, total_m = total_t + t, total_m + m
        print(f"{k:>10}  {t:>12.2f}  {m:>13.2f}  {100 * t / (t + m):>13.0f} %")
    share = 100 * total_t / (total_t + total_m)
    print(f"{'all':>10}  {total_t:>12.2f}  {total_m:>13.2f}  {share:>13.0f} %   (goal <= 10 %: "
          f"{'met' if share <= 10 else 'NOT met'})")
    print(f"{'dry run':>10}  {estimate['track_s']:>12.2f}  {estimate['measure_s']:>13.2f}  "
          f"{100 * estimate['track_s'] / estimate['beam_s']:>13.0f} %   (estimate per checkpoint)")
    print(f"campaign wall {summary['campaign_s']:.1f} s for {summary['checkpoints']} checkpoints")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
