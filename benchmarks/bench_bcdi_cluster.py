"""BCDI random starts on a local Dask cluster beside the same starts one after another, in one run.

The data are the realistic partially coherent, gapped measurement of the
quality comparison (``tests/test_bcdi_quality.py: realistic_measurement``)
at ``--size``^3, phased with the default recipe (on such data one run per
start: the schedule choice keeps the recipe's). Printed side by side:

1. the N starts one after another in this process on all cores (how
   ``phase_retrieval`` ran them before), and one after another on one
   thread (the resources of one worker);
2. the same N starts on a ``LocalCluster`` of W single-threaded worker
   processes: wall time of the starts (``run_starts``: the starts, their
   ranking, fetching the kept ones; cluster start-up printed apart) and of
   the whole call (with the combination in this process), the speed-up over
   both baselines (goal >= 0.8 W over the starts one after another with a
   worker's resources), and the cluster's overhead per start: ``(W x the
   starts' wall - the starts' own seconds on the workers) / N``
   (scheduling, sending the data, the ranking, fetching the kept starts,
   idle workers), as a fraction of a start's time (goal <= 5 %);
3. whether the cluster's results are bit for bit those of this process.

Usage: ``python benchmarks/bench_bcdi_cluster.py [--size 128] [--starts 4] [--workers 2] [--recipe TEXT]
[--no-threads-baseline]``. At 128^3 with 4 starts on 2 shared cores: about 10 minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from braggscope.analysis.bcdi import phase_retrieval  # noqa: E402
from braggscope.analysis.bcdi.backend import set_threads  # noqa: E402
from braggscope.analysis.bcdi.distributed import open_client  # noqa: E402
from tests.test_bcdi_quality import realistic_measurement  # noqa: E402


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def timed(intensity, mask, n, recipe, **kw):
    """(result, wall seconds of the starts, wall seconds of the whole call, process CPU seconds).

    The starts' wall is ``run_starts``'s (``timing["total"]``): the starts, their ranking and the
    transfer of the kept ones; the whole call adds the checks and the combination in this process.
    """
    w0, c0 = time.perf_counter(), time.process_time()
    r = phase_retrieval(intensity, mask=mask, n_runs=n, seed=0, recipe=recipe, backend="scipy",
                        progress=False, **kw)
    return r, r.timing["total"], time.perf_counter() - w0, time.process_time() - c0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--starts", type=int, default=4)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--recipe", default=None, help="phasing recipe (default: the default recipe)")
    p.add_argument("--no-threads-baseline", action="store_true",
                   help="skip the one-thread baseline (the starts one after another on one thread)")
    args = p.parse_args(argv)
    m = realistic_measurement(args.size, peak_counts=1e6, seed=0)
    intensity, mask = m["intensity"], m["mask"]
    n, w = args.starts, args.workers
    print(f"== {n} random starts at {args.size}^3 (realistic gapped, partially coherent data), "
          f"recipe {args.recipe or 'default'}; {os.cpu_count()} cores; load average at start {_load()} ==")

    here, t_here, call_here, cpu_here = timed(intensity, mask, n, args.recipe)
    print(f"one after another, all cores     starts {t_here:7.1f} s wall ({t_here / n:5.1f} s per start), whole call "
          f"{call_here:7.1f} s; process CPU {cpu_here:6.1f} s   load {_load()}")
    t_one = None
    if not args.no_threads_baseline:
        set_threads(1)
        try:
            _, t_one, call_one, cpu_one = timed(intensity, mask, n, args.recipe)
        finally:
            set_threads(None)
        print(f"one after another, one thread    starts {t_one:7.1f} s wall ({t_one / n:5.1f} s per start), whole call "
              f"{call_one:7.1f} s; process CPU {cpu_one:6.1f} s   load {_load()}")

    t0 = time.perf_counter()
    with open_client("local", n_workers=w) as client:  # workers started and their imports done
        t_start = time.perf_counter() - t0
        got, t_cluster, call_cluster, _ = timed(intensity, mask, n, args.recipe, scheduler=client)
    worker_s = got.timing["worker_seconds"]
    overhead = (w * t_cluster - worker_s) / n
    start_s = worker_s / n
    print(f"local cluster, {w} workers x 1 thread  starts {t_cluster:7.1f} s wall ({start_s:5.1f} s per start on a "
          f"worker), whole call {call_cluster:7.1f} s; cluster start-up {t_start:.1f} s apart   load {_load()}")
    line = f"speed-up of the starts {t_here / t_cluster:4.2f}x over all cores one after another"
    if t_one is not None:
        line += f", {t_one / t_cluster:4.2f}x over one thread one after another (a worker's resources)"
    print(f"{line} (goal >= {0.8 * w:.1f}x = 0.8 W); whole calls {call_here / call_cluster:4.2f}x")
    print(f"cluster overhead per start {overhead:6.2f} s = {100 * overhead / start_s:4.1f} % of a start "
          f"(goal <= 5 %): W x starts' wall - the starts' own seconds on the workers, per start")
    same = (here.kept == got.kept and np.array_equal(here.obj, got.obj)
            and all(a["llk"] == b["llk"] for a, b in zip(here.metrics, got.metrics)))
    print(f"results identical to this process's: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
