"""Session start on a catalog of many runs: the largest scan id by query vs by walking every run.

Builds an embedded catalog of ``--runs`` runs (default 300; one-point ``count`` runs, scan ids
1..N), then times, side by side in interleaved rounds (best of ``--repeats``):

1. the walk (the baseline, what ``storage.scan_ids.max_scan_id`` did before): every run's start
   document read, the largest ``scan_id`` kept;
2. ``storage.scan_ids.max_scan_id``: count queries (``start.scan_id > k``), no run read;
3. what a new session asks when its persisted counter is current: one count query;
4. ``storage.recovery.close_dead_writer_runs``: the query every ``open_catalog`` makes for runs
   left open by dead writers (none here).

Run: ``python benchmarks/bench_catalog_queries.py [--runs 300 --repeats 3]``. The catalog is
embedded (in-process Tiled app); a catalog server adds one HTTP round trip per request to (2)-(4)
and per page of runs to (1). Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time


def _build(path, n_runs):
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import det

    from braggscope import storage
    from braggscope.core.config import load_config

    cfg = load_config()
    cfg.set("storage.data_dir", str(path / "data"))
    cfg.set("storage.catalog_server", "off")
    cfg.set("detector.read_path", str(path / "det"))
    client = storage.open_catalog(cfg)
    RE = RunEngine()
    storage.subscribe_writer(RE, client, background=False)
    RE.md["scan_id"] = 0
    for _ in range(n_runs):
        RE(count([det]))
    return client


def _walk(client) -> int:
    best = 0
    for run in client.values():
        value = run.metadata["start"].get("scan_id")
        if isinstance(value, int):
            best = max(best, value)
    return best


def main(argv=None) -> int:
    from braggscope.storage.recovery import close_dead_writer_runs
    from braggscope.storage.scan_ids import any_scan_id_above, max_scan_id

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-catalog-")
    try:
        from pathlib import Path

        t0 = time.perf_counter()
        client = _build(Path(tmp), args.runs)
        print(f"catalog of {len(client)} runs built in {time.perf_counter() - t0:.1f} s")
        cases = {"walk every run (baseline)": lambda: _walk(client),
                 "max_scan_id (count queries)": lambda: max_scan_id(client),
                 "session start, counter current (1 query)": lambda: any_scan_id_above(client, args.runs),
                 "open_catalog's dead-writer query": lambda: close_dead_writer_runs(client)}
        best = {name: float("inf") for name in cases}
        results = {}
        for _ in range(args.repeats):
            for name, case in cases.items():
                t = time.perf_counter()
                results[name] = case()
                best[name] = min(best[name], time.perf_counter() - t)
        assert results["walk every run (baseline)"] == results["max_scan_id (count queries)"] == args.runs
        base = best["walk every run (baseline)"]
        print(f"{'case':44s} {'best (ms)':>10s} {'vs walk':>9s}")
        for name in cases:
            print(f"{name:44s} {best[name] * 1e3:10.1f} {base / best[name]:8.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
