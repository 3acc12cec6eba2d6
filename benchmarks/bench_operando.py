"""An operando checkpoint's time: re-finding the peak and re-centring the particle against measuring.

Runs the campaign of ``braggscope demo operando`` (the caproto simulator with its cell, in real time
on loopback, the catalog written; its settings: ``--quick`` or the full demo's) without the series
reduction and prints, for every checkpoint, side by side:

* **tracking**: from when the checkpoint came due (``operando.due_time``) until the measurement's run
  starts: holding the cell, staging, the tracking run (``operando_role="track"``: fluorescence line scans,
  a rocking scan), the catalog storing it where its stop waits for that, reading the cell;
* **measuring**: from the measurement's start (the fly map) until the catalog holds it;

with the share of the checkpoint spent tracking (goal: at most 10 %), the runs' own spans (start to
stop document, the catalog's wait left out: what this benchmark printed before 2026-12-07) and the dry
run's estimate (:func:`braggscope.plans.operando.estimate_campaign`). The times come from the demo's
:class:`~braggscope.app.demo.operando.RunTimeline`; every tracking run is checked to be in the catalog
with its campaign id and checkpoint.

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
    rows = checkpoint_times(summary["timeline"])
    client = storage.open_catalog(cfg)
    recorded = {}
    for run in storage.find_runs(client, campaign_id=summary["campaign_id"]):
        start = run.metadata["start"]
        recorded.setdefault((start.get("operando_role"), int(start["checkpoint"])), []).append(start["uid"])
    missing = [(r["role"], r["checkpoint"]) for r in summary["timeline"]
               if r["uid"] not in recorded.get((r["role"], r["checkpoint"]), [])]
    estimate = summary["estimate"]
    print(f"\noperando checkpoint timing ({'quick' if args.quick else 'full'} demo settings, {args.frame}x{args.frame}"
          f" frames, {estimate['measure_points']} flown points per map, {estimate['track_points']} tracking points)")
    print(f"{'checkpoint':>10}  {'tracking (s)':>12}  {'measuring (s)':>13}  {'tracking share':>14}  "
          f"{'runs alone: track, measure (s)':>30}")
    total_t = total_m = 0.0
    for k in sorted(rows):
        r = rows[k]
        total_t, total_m = total_t + r["tracking"], total_m + r["measuring"]
        print(f"{k:>10}  {r['tracking']:>12.2f}  {r['measuring']:>13.2f}  "
              f"{100 * r['tracking'] / (r['tracking'] + r['measuring']):>13.0f} %  "
              f"{r['track_run']:>20.2f}, {r['measure_run']:.2f}")
    share = 100 * total_t / (total_t + total_m)
    print(f"{'all':>10}  {total_t:>12.2f}  {total_m:>13.2f}  {share:>13.0f} %   (goal <= 10 %: "
          f"{'met' if share <= 10 else 'NOT met'})")
    print(f"{'dry run':>10}  {estimate['track_s']:>12.2f}  {estimate['measure_s']:>13.2f}  "
          f"{100 * estimate['track_s'] / estimate['beam_s']:>13.0f} %   (estimate per checkpoint)")
    print(f"campaign wall {summary['campaign_s']:.1f} s for {summary['checkpoints']} checkpoints; "
          f"{sum(r['role'] == 'track' for r in summary['timeline'])} tracking runs, "
          f"{'all in the catalog with their checkpoint' if not missing else f'NOT in the catalog: {missing}'}")
    return 0 if not missing else 1


def checkpoint_times(timeline) -> dict:
    """Per checkpoint: ``tracking`` (from when it came due to the measurement's start), ``measuring`` (the
    measurement's start until the catalog holds it), and the runs' own spans ``track_run`` and
    ``measure_run`` (start to stop document)."""
    rows = {}
    for run in timeline:
        if run.get("role") in ("track", "measure") and "recorded" in run:
            rows.setdefault(int(run["checkpoint"]), {})[run["role"]] = run  # the last of each role
    out = {}
    for k, runs in rows.items():
        if "track" not in runs or "measure" not in runs:
            continue
        track, measure = runs["track"], runs["measure"]
        due = track["due"] if track.get("due") is not None else track["opened"]
        out[k] = {"tracking": measure["opened"] - due, "measuring": measure["recorded"] - measure["opened"],
                  "track_run": track["stopped"] - track["opened"],
                  "measure_run": measure["stopped"] - measure["opened"]}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
