"""Random starts on a Dask cluster: the same seeds give the same results here and on the cluster.

Each start depends only on the data, the recipe and its own child seed, and
the CPU back-end gives the same bits whatever its thread count, so a local
cluster of two single-threaded workers, a cluster reached by its address and
this process must agree bit for bit. The tests start their clusters and
close them (no worker process is left behind).
"""

from __future__ import annotations

import numpy as np
import pytest

from braggscope.analysis.bcdi import phase_retrieval
from braggscope.analysis.bcdi.distributed import local_cluster, open_client
from braggscope.analysis.bcdi.live import LiveView
from tests.test_bcdi_helpers import far_field, synthetic_crystal

pytest.importorskip("distributed")

RECIPE = "HIO:40,ER:20,HIO:30,ER:30"  # short: the schedule choice (two runs per start) included


@pytest.fixture(scope="module")
def intensity():
    rho, _, _ = synthetic_crystal(n=32, radius=5)
    return far_field(rho, seed=1)


@pytest.fixture(scope="module")
def here(intensity):
    return phase_retrieval(intensity, n_runs=4, seed=3, recipe=RECIPE, progress=False)


def _same(a, b):
    assert a.kept == b.kept
    assert np.array_equal(a.obj, b.obj) and np.array_equal(a.support, b.support)
    assert all(np.array_equal(x, y) for x, y in zip(a.runs, b.runs))
    for ma, mb in zip(a.metrics, b.metrics):
        for key in ("seed", "llk", "chi2", "sharpness", "schedule", "error", "coherence_px"):
            assert ma[key] == mb[key], key
    assert a.history == b.history
    assert a.mode_fraction == b.mode_fraction


def test_local_cluster_of_two_workers_gives_the_same_results(intensity, here, tmp_path):
    live = LiveView(tmp_path / "live.png", min_interval_s=0.0)
    got = phase_retrieval(intensity, n_runs=4, seed=3, recipe=RECIPE, progress=False, scheduler="local",
                          n_workers=2, live=live)
    _same(here, got)
    assert got.timing["workers"] == 2 and got.timing["worker_seconds"] > 0
    # the workers' events reached the live view: every start's error curve, slices, a PNG
    assert sorted(k for k in live.history if isinstance(k, int)) == [0, 1, 2, 3]
    assert live.planes is not None and (tmp_path / "live.png").stat().st_size > 1000


def test_cluster_by_address_gives_the_same_results(intensity, here):
    with local_cluster(2) as cluster:
        got = phase_retrieval(intensity, n_runs=4, seed=3, recipe=RECIPE, progress=False,
                              scheduler=cluster.scheduler_address)
        with open_client(cluster.scheduler_address) as client:  # a Client given is used and left open
            again = phase_retrieval(intensity, n_runs=4, seed=3, recipe=RECIPE, progress=False, scheduler=client)
            assert client.status == "running"
    _same(here, got)
    _same(here, again)


def test_other_seed_differs(intensity, here):
    other = phase_retrieval(intensity, n_runs=4, seed=4, recipe=RECIPE, progress=False)
    assert not np.array_equal(other.obj, here.obj)


def test_ranking_keeps_the_best_and_combines_them(here):
    assert len(here.metrics) == 4 and len(here.kept) == 2 and len(here.runs) == 2
    ranked = sorted(range(4), key=lambda k: here.metrics[k]["sharpness"])
    assert here.kept == ranked[:2]
    assert here.mode_weights[0] == pytest.approx(here.mode_fraction) and np.sum(here.mode_weights) == pytest.approx(1)
    assert here.average.shape == here.obj.shape
    its, errs = here.history[0]
    assert its[0] == 0 and its[1] == 10 and len(errs) == len(its) and errs[-1] < errs[0]
    curve = here.prtf()
    assert np.nanmax(curve.value[1:4]) > 0.5  # the combination explains the data at low q


@pytest.mark.parametrize("scheduler, match", [("tcp//nowhere", "scheduler"), (5, "scheduler")])
def test_bad_scheduler_is_refused(intensity, scheduler, match):
    with pytest.raises(ValueError, match=match):
        phase_retrieval(intensity, n_runs=2, recipe="ER:2", progress=False, scheduler=scheduler)


@pytest.mark.gpu
def test_gpu_worker_runs_the_starts_like_this_process(intensity):
    """A local cluster on a GPU host: one worker per GPU, CuPy there; the starts as in this process on the GPU."""
    pytest.importorskip("cupy")
    from braggscope.analysis.bcdi.backend import cupy_available

    if not cupy_available():
        pytest.skip("no CUDA device: the GPU workers are not tested here")
    here = phase_retrieval(intensity, n_runs=2, seed=3, recipe=RECIPE, progress=False, backend="cupy")
    got = phase_retrieval(intensity, n_runs=2, seed=3, recipe=RECIPE, progress=False, backend="auto",
                          scheduler="local")
    assert got.timing["workers"] >= 1
    assert got.kept == here.kept
    overlap = abs(np.vdot(got.obj, here.obj)) / (np.linalg.norm(got.obj) * np.linalg.norm(here.obj))
    assert overlap > 0.999
