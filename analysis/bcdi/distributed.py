"""Running the random starts of a phase retrieval: in this process or on a Dask cluster.

A start depends only on the data, the recipe and its own seed (a child of
``numpy.random.SeedSequence(seed)``), and the CPU back-end gives the same
bits whatever its thread count, so a start gives the same object here, on a
local cluster and on a remote one. :func:`run_starts` runs them:

* ``scheduler=None``: one after another in this process, on all cores;
* ``"local"``: on a ``distributed.LocalCluster`` started for the call (one
  single-threaded worker process per core, or one per GPU when CuPy sees
  GPUs), closed at the end;
* an address (``"tcp://host:8786"``) or a ``distributed.Client``: on that
  cluster (workers must have braggscope installed).

On a cluster the data are sent to each worker once, a start's object stays
on its worker until the ranking asks for it (only the kept starts travel),
each worker runs with its own thread count (:func:`.backend.set_threads`)
and, with ``backend="auto"``, on its GPU when it has one. Progress (and the
live view's errors and slices, :mod:`.live`) comes back as worker events.
"""

from __future__ import annotations

import contextlib
import heapq
import importlib
import logging
import os
import time
import uuid
from dataclasses import dataclass

from . import backend as backends
from .iterations import StartResult
from .runs import run_metrics, to_physical_sign
from .schedule import run_scheduled

__all__ = ["run_starts", "open_client", "local_cluster", "StartsOutcome", "run_one", "iterations_per_start"]

#: Iterations between two progress events of a start on a cluster.
EVENT_EVERY = 50


@dataclass
class StartsOutcome:
    """The ranked starts: ``metrics`` of every start (in seed order), ``kept`` indices (best first) and
    their :class:`.iterations.StartResult` (physical sign) in ``results``; ``timing`` in seconds."""

    metrics: list
    kept: list
    results: list
    timing: dict


def run_one(intensity, support, mask, recipe, seed_seq, backend="auto", *, monitor=None, bar=None) -> StartResult:
    """One start, with its object in the physical sign and its ``metrics`` (``run_metrics`` + seed, schedule).

    What a worker runs; also the in-process path, so both give the same result.
    """
    t0 = time.perf_counter()
    be = backends.get_backend(backend)
    res = run_scheduled(intensity, support, mask, recipe, seed_seq, be, monitor=monitor, bar=bar)
    res.obj = to_physical_sign(res.obj)
    m = run_metrics(res.obj, res.support, intensity, mask, coherence_px=res.coherence_px)
    m.update(seed=int(seed_seq.generate_state(1)[0]), schedule=res.schedule, choice=res.choice,
             error=float(res.history[1][-1]) if res.history[1] else None, seconds=time.perf_counter() - t0)
    res.metrics = m
    return res


def run_starts(intensity, support, mask, recipe, seeds, *, backend="auto", select="sharpness", n_keep=1,
               scheduler=None, n_workers=None, live=None, bar=None) -> StartsOutcome:
    """Run one start per seed, rank them by ``select`` (lower is better) and return the best ``n_keep``.

    Parameters
    ----------
    intensity, support, mask, recipe
        As checked by :func:`.phasing.phase_retrieval`.
    seeds : list of numpy.random.SeedSequence
    scheduler : None, "local", str or distributed.Client
        Where the starts run (module docstring).
    n_workers : int, optional
        Workers of a local cluster (default: cores, or GPUs).
    live : :class:`.live.LiveView`, optional
        Receives each start's errors and slices while it runs.
    bar : tqdm-like, optional
        Advanced by iterations.
    """
    t0 = time.perf_counter()
    if scheduler is None:
        outcome = _run_here(intensity, support, mask, recipe, seeds, backend, select, n_keep, live, bar)
    else:
        with open_client(scheduler, n_workers=n_workers, gpu=_wants_gpu(backend)) as client:
            t1 = time.perf_counter()
            outcome = _run_on(client, intensity, support, mask, recipe, seeds, backend, select, n_keep, live, bar)
            outcome.timing["cluster_start"] = t1 - t0
    outcome.timing["total"] = time.perf_counter() - t0
    return outcome


def _rank_key(select):
    return lambda m: (m[select], m["run"])


def _run_here(intensity, support, mask, recipe, seeds, backend, select, n_keep, live, bar) -> StartsOutcome:
    """One start after another; only the best ``n_keep`` objects are held."""
    metrics, best = [], []  # best: heap of (-key, run, result), the worst kept on top
    key = _rank_key(select)
    for k, seed in enumerate(seeds):
        monitor = None if live is None else live.monitor(k)
        res = run_one(intensity, support, mask, recipe, seed, backend, monitor=monitor, bar=bar)
        res.metrics["run"] = k
        metrics.append(res.metrics)
        if live is not None:
            live.finished(k, res)
        entry = (_negated(key(res.metrics)), k, res)
        if len(best) < n_keep:
            heapq.heappush(best, entry)
        elif entry > best[0]:
            heapq.heapreplace(best, entry)
    kept = sorted(best, key=lambda e: key(e[2].metrics))
    return StartsOutcome(metrics=metrics, kept=[e[1] for e in kept], results=[e[2] for e in kept], timing={})


def _negated(k):
    value, run = k
    return (-value, -run)


def _run_on(client, intensity, support, mask, recipe, seeds, backend, select, n_keep, live, bar) -> StartsOutcome:
    """Starts as cluster tasks; only the metrics come back until the ranking picks the kept starts."""
    from distributed import as_completed

    topic = f"braggscope-bcdi-{uuid.uuid4().hex[:12]}"
    events = _Events(live, bar, iterations_per_start(recipe))
    client.subscribe_topic(topic, events)
    try:
        [data] = client.scatter([(intensity, support, mask)], broadcast=True, hash=False)
        slices = live is not None and live.wants_slices
        backend = getattr(backend, "name", backend)  # a name travels; a Backend's functions need not
        futures = [client.submit(_task, data, recipe, seed, backend, k, topic, slices, pure=False,
                                 key=f"{topic}-start-{k}") for k, seed in enumerate(seeds)]
        summaries = [client.submit(_metrics_of, f, pure=False, key=f"{topic}-metrics-{k}")
                     for k, f in enumerate(futures)]
        metrics = [None] * len(seeds)
        index = {f.key: k for k, f in enumerate(summaries)}
        pending = as_completed(summaries, with_results=True)
        for future, m in _with_ticks(pending, events):
            k = index[future.key]
            metrics[k] = m
            events.finished(k, m)
        order = sorted(range(len(seeds)), key=lambda i: _rank_key(select)(metrics[i]))
        kept = order[:n_keep]
        results = client.gather([futures[i] for i in kept])
        timing = {"worker_seconds": float(sum(m["seconds"] for m in metrics)), "workers": len(client.nthreads())}
    finally:
        client.unsubscribe_topic(topic)
    events.flush()
    return StartsOutcome(metrics=metrics, kept=kept, results=results, timing=timing)


def _with_ticks(pending, events):
    """Results of ``as_completed``; between them the live view is drawn in this thread (it throttles itself)."""
    while True:
        batch = pending.next_batch(block=False)
        if batch:
            yield from batch
            continue
        if pending.is_empty():
            return
        events.flush()
        time.sleep(0.2)


def _task(data, recipe, seed, backend, k, topic, slices):
    """A start on a worker: its thread count, its GPU, events to the client."""
    from distributed import get_worker

    worker = get_worker()
    backends.set_threads(worker.state.nthreads)  # one start per worker thread: no oversubscription
    be = backends.get_backend(backend)
    if be.name == "cupy":
        _use_worker_gpu(worker)
    intensity, support, mask = data
    monitor = _WorkerMonitor(worker, topic, k, slices)
    res = run_one(intensity, support, mask, recipe, seed, be, monitor=monitor)
    res.metrics["run"] = k
    monitor.send(final_it=recipe.n_iterations)
    return res


def _metrics_of(res: StartResult) -> dict:
    return res.metrics


def _use_worker_gpu(worker) -> None:
    """Worker ``i`` of a local cluster uses GPU ``i mod count`` (others keep their default device)."""
    import cupy

    try:
        index = int(worker.name)
    except (TypeError, ValueError):
        return
    cupy.cuda.Device(index % cupy.cuda.runtime.getDeviceCount()).use()


class _WorkerMonitor:
    """Collects a start's errors on a worker and sends the new ones (with slices, if asked) every
    EVENT_EVERY iterations."""

    def __init__(self, worker, topic, k, slices):
        self.worker, self.topic, self.k, self.slices = worker, topic, k, slices
        self.sent_it, self.n_sent, self.last = 0, 0, None

    def __call__(self, state, it):
        if state is not self.last:  # the tight schedule's run: a new curve
            self.send()
            self.last, self.sent_it, self.n_sent = state, 0, 0
        if it - self.sent_it >= EVENT_EVERY:
            self.send()

    def send(self, final_it=None):
        state = self.last
        if state is None:
            return
        msg = {"run": self.k, "label": state.label, "it": state.it if final_it is None else int(final_it),
               "iterations": [int(i) for i in state.iterations[self.n_sent:]],
               "errors": [float(e) for e in state.errors[self.n_sent:]], "final": final_it is not None}
        if self.slices and final_it is None:
            from .live import encode_slices  # matplotlib-free, but only needed with a live view

            msg["slices"] = encode_slices(state)
        self.worker.log_event(self.topic, msg)
        self.sent_it, self.n_sent = state.it, len(state.errors)


class _Events:
    """Client side of the workers' events: progress bar and live view (drawn from the caller's thread)."""

    def __init__(self, live, bar, per_start):
        self.live, self.bar, self.per_start, self.done = live, bar, per_start, {}

    def __call__(self, event):
        _, msg = event
        key, it = (msg["run"], msg.get("label", "")), int(msg["it"])
        if self.bar is not None:
            self.bar.update(max(it - self.done.get(key, 0), 0))
        self.done[key] = max(it, self.done.get(key, 0))
        if self.live is not None:
            self.live.receive(msg)

    def finished(self, k, metrics):
        if self.bar is not None:  # a schedule not run, or iterations after the last event
            self.bar.update(max(self.per_start - sum(v for (run, _), v in self.done.items() if run == k), 0))
            self.done[(k, "end")] = self.per_start
        if self.live is not None:
            self.live.finished_metrics(k, metrics)

    def flush(self):
        if self.live is not None:
            self.live.draw()


def iterations_per_start(recipe) -> int:
    """Iterations a start counts on the progress bar: the recipe's, twice when a schedule is chosen."""
    return recipe.n_iterations * (2 if recipe.choose_schedule and recipe.shrinkwrap_every else 1)


def _wants_gpu(backend) -> bool:
    return str(getattr(backend, "name", backend)).lower() in ("auto", "cupy", "gpu") and backends.cupy_available()


def local_cluster(n_workers: int | None = None, *, gpu: bool = False):
    """A ``distributed.LocalCluster`` on 127.0.0.1: single-threaded worker processes, one per core or GPU."""
    from distributed import LocalCluster

    if n_workers is None:
        if gpu:
            import cupy

            n_workers = cupy.cuda.runtime.getDeviceCount()
        else:
            n_workers = os.cpu_count() or 1
    if int(n_workers) < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    return LocalCluster(n_workers=int(n_workers), threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=None, silence_logs=logging.ERROR)


@contextlib.contextmanager
def open_client(scheduler, *, n_workers=None, gpu=False):
    """A ``distributed.Client`` for ``scheduler`` ("local", an address, or a Client, which is left open)."""
    from distributed import Client

    if not isinstance(scheduler, str):
        if not hasattr(scheduler, "submit"):
            raise ValueError(f"scheduler must be None, 'local', an address or a distributed.Client, "
                             f"got {scheduler!r}")
        yield scheduler
        return
    if scheduler == "local":
        with local_cluster(n_workers, gpu=gpu) as cluster, Client(cluster) as client:
            client.run(importlib.import_module, __name__)  # imports and kernels loaded at start-up, not by a start
            yield client
        return
    if "://" not in scheduler:
        raise ValueError(f"scheduler must be 'local' or an address like 'tcp://host:8786', got {scheduler!r}")
    with Client(scheduler, timeout="30s") as client:
        yield client
