"""Scheduling of an SXDM reduction: blocks run in parallel with dask, then are put together.

Threads by default (the numba kernel and numpy release the GIL), or a
``dask.distributed`` client or scheduler address; a tqdm bar counts blocks.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from braggscope.analysis.sxdm.blocks import reduce_block

__all__ = ["LOCAL_SCHEDULERS", "check_scheduler", "run_blocks", "assemble"]

#: Scheduler names run in this process.
LOCAL_SCHEDULERS = ("threads", "sync", "synchronous", "single-threaded")


def check_scheduler(scheduler):
    """Refuse (ValueError, one line) a scheduler that is neither local, an address nor a client."""
    if isinstance(scheduler, str):
        if scheduler in LOCAL_SCHEDULERS:
            return
        if "://" not in scheduler:
            raise ValueError(f"scheduler must be one of {LOCAL_SCHEDULERS}, a distributed address "
                             f"('tcp://host:port') or a dask.distributed Client, got {scheduler!r}")
    elif not hasattr(scheduler, "compute"):
        raise ValueError(f"scheduler must be a name, an address or a dask.distributed Client, got {scheduler!r}")
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ValueError("scheduler: a distributed scheduler needs the 'distributed' package "
                         "(pip install distributed)") from None


def run_blocks(plan, blocks, scheduler, num_workers, progress):
    """:func:`~braggscope.analysis.sxdm.blocks.reduce_block` of every block, in the order of ``blocks``."""
    import dask  # heavy: imported when a reduction runs

    # one graph node holding the plan as it is: traversed, its dask ``frames`` would become a
    # dependency of every task and the whole stack would be computed into memory first
    plan_node = dask.delayed(plan, traverse=False)
    tasks = [dask.delayed(reduce_block, pure=False)(plan_node, ys, xs) for ys, xs in blocks]
    with tqdm(total=len(tasks), desc="sxdm reduce", unit="chunk", disable=not progress) as bar:
        if isinstance(scheduler, str) and scheduler in LOCAL_SCHEDULERS:
            return _run_local(tasks, scheduler, num_workers, bar)
        return _run_distributed(tasks, scheduler, bar)


def _run_local(tasks, scheduler, num_workers, bar):
    import dask
    from dask.callbacks import Callback

    names = {t.key for t in tasks}

    class _Bar(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if key in names:
                bar.update(1)

    kwargs = {"num_workers": num_workers} if num_workers and scheduler == "threads" else {}
    with _Bar():
        return list(dask.compute(*tasks, scheduler=scheduler, **kwargs))


def _run_distributed(tasks, scheduler, bar):
    from dask.distributed import Client, as_completed

    # an address: connect for this reduction only (and disconnect after); a Client: borrow it
    client = Client(scheduler) if isinstance(scheduler, str) else scheduler
    try:
        futures = client.compute(tasks)
        order = {f.key: i for i, f in enumerate(futures)}
        results = [None] * len(futures)
        for fut in as_completed(futures):
            results[order[fut.key]] = fut.result()
            bar.update(1)
        return results
    finally:
        if client is not scheduler:
            client.close()


def assemble(plan, blocks, results):
    """The blocks' sums as whole-map arrays (the input of ``derive_maps``)."""
    n_eta, ny, nx = plan.shape[:3]
    full = {
        "s0": np.zeros((ny, nx)), "s1": np.zeros((ny, nx, 3)), "s2": np.zeros((ny, nx, 6)),
        "intensity": np.zeros((ny, nx)), "eta_intensity": np.zeros((n_eta, ny, nx), np.float32),
        "background": np.zeros((ny, nx), np.float32),
    }
    if plan.bins is not None:
        full["gauss"] = np.full((ny, nx, 6), np.nan)
    for (ys, xs), r in zip(blocks, results):
        for k, v in r.items():
            if k == "eta_intensity":
                full[k][:, ys, xs] = v
            else:
                full[k][ys, xs] = v
    return full

