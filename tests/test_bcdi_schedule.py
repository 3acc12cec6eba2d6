"""The schedule chosen per data set (analysis/bcdi/schedule.py).

Coherent data: both schedules run from the same random start and the tight
run is kept when its Poisson log-likelihood is no worse (checked against the
two runs made separately). Partially coherent data (a known
Gaussian blur of the intensity): the recipe's run is kept and the tight one
never runs. The accuracy of the choice on the synthetic crystals is measured
by benchmarks/bench_bcdi_speed.py (ten starts per case: too slow for a test).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from braggscope.analysis.bcdi import Recipe, autocorrelation_support
from braggscope.analysis.bcdi.backend import get_backend
from braggscope.analysis.bcdi.runs import run_metrics
from braggscope.analysis.bcdi.schedule import prefer_tight, run_scheduled
from tests.test_bcdi_helpers import far_field, synthetic_crystal


def test_likelihood_rule():
    assert prefer_tight(0.50, 0.49) and prefer_tight(0.50, 0.50)
    assert not prefer_tight(0.50, 0.5001)


def _data(blur=None):
    rho, _, _ = synthetic_crystal(n=32, radius=5)
    if blur is None:
        return far_field(rho, peak_photons=1e5, seed=2).astype(np.float32)
    a = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(rho))) * rho.size
    i = gaussian_filter(np.abs(a) ** 2, blur, mode="wrap")
    return np.random.default_rng(2).poisson(i * 1e5 / i.max()).astype(np.float32)


def _run(intensity, recipe, seed):
    sup = autocorrelation_support(intensity)
    return run_scheduled(intensity, sup, None, recipe, np.random.SeedSequence(seed), get_backend("scipy"))


@pytest.mark.parametrize("seed", [0, 1])
def test_coherent_data_keep_the_run_the_likelihood_prefers(seed):
    intensity = _data()
    kept = _run(intensity, Recipe(), seed)
    assert kept.choice["reason"] == "likelihood" and max(kept.choice["coherence_px"]) < 0.4
    alone = {"recipe": _run(intensity, Recipe(choose_schedule=False), seed),
             "tight": _run(intensity, Recipe().tight(), seed)}
    figures = {}
    for name, r in alone.items():
        m = run_metrics(np.conj(r.obj), r.support, intensity, coherence_px=r.coherence_px)
        figures[name] = (m["llk"], int(r.support.sum()))
        assert kept.choice["llk"][name] == m["llk"] and kept.choice["support"][name] == figures[name][1]
    want = "tight" if prefer_tight(figures["recipe"][0], figures["tight"][0]) else "recipe"
    assert kept.schedule == want
    assert np.array_equal(kept.obj, alone[want].obj)


def test_partially_coherent_data_keep_the_recipe_without_a_tight_run():
    kept = _run(_data(blur=(0.5, 0.9, 0.9)), Recipe(), 0)
    assert kept.schedule == "recipe" and kept.choice["reason"] == "partially coherent"
    assert max(kept.choice["coherence_px"]) >= 0.4 and "llk" not in kept.choice


def test_recipe_tight_is_the_textbook_shrinkwrap():
    r = Recipe().tight()
    assert (r.shrinkwrap_every, r.shrinkwrap_threshold, r.sigma_end) == (20, 0.2, 0.5)
    assert not r.partial_coherence and not r.choose_schedule and r.steps == Recipe().steps
    with pytest.raises(ValueError, match="tight_threshold"):
        Recipe(tight_threshold=1.2)
