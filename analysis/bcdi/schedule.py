"""The schedule of a random start, chosen per data set.

The default recipe's shrink-wrap is loose (a low threshold, a blur that
stays near a voxel wide) and it models partial coherence: partially coherent
and noisy data converge with it. On coherent data its support keeps a halo
of weak voxels which the object uses to fit noise, and its starts settle
less accurately than with a tight shrink-wrap (a higher threshold, a
narrower blur, as in the textbook recipe), which in turn loses starts on
noisy data and cannot fit partially coherent data at all.

:func:`run_scheduled` runs a start with the recipe, then decides:

* when the run's partial-coherence fit found a clear blur (a width of at
  least :data:`BLUR_PX` voxels), the data are partially coherent and the run
  is kept (a coherent object in a tight support cannot fit them: it never
  fitted them better on the benchmark's data, so it is not run);
* otherwise the same random start runs again with the tight schedule
  (:meth:`.recipe.Recipe.tight`), and the tight run is kept when it fits
  the counts at least as well (its Poisson log-likelihood per measured voxel
  no worse, :func:`prefer_tight`): it has fewer free voxels, so an equal or
  better fit means the loose run used its margin for noise, or settled in a
  worse minimum. (Akaike's criterion, which lets the tight run's deviance
  grow by four per voxel it removed, kept 4 tight runs of 10 in the hard
  case of ``bench_bcdi_speed``, less accurate on those noisy data, one of them
  failing.)
"""

from __future__ import annotations

import numpy as np

from .iterations import Start, StartResult
from .runs import run_metrics, to_physical_sign
from .support import Shrinkwrap

__all__ = ["run_scheduled", "BLUR_PX", "prefer_tight"]

#: A fitted partial-coherence width (voxels) from which the data count as partially coherent. The fit
#: moves in steps of 0.15 voxel: coherent data fit 0-0.15, a weak blur 0.3 (both schedules run and the
#: likelihood decides), the realistic blur of the quality benchmark 0.45-0.75.
BLUR_PX = 0.4


def prefer_tight(llk_recipe: float, llk_tight: float) -> bool:
    """True when the tight run fits the counts at least as well (``run_metrics``'s ``llk``, lower is better)."""
    return bool(llk_tight <= llk_recipe)


def run_scheduled(intensity, support, mask, recipe, seed, be, *, monitor=None, bar=None) -> StartResult:
    """One random start (``seed``: a ``numpy.random.SeedSequence``), its schedule chosen as the module says.

    Returns the kept run's :class:`.iterations.StartResult`, ``schedule``
    ``"recipe"`` or ``"tight"``, ``choice`` the figures compared
    (``coherence_px`` of the recipe's run, ``reason``: ``"partially
    coherent"`` or ``"likelihood"``, and when both ran ``llk`` and
    ``support`` size of each).
    """
    first = _run(intensity, support, mask, recipe, seed, be, monitor, bar, "")
    if not (recipe.choose_schedule and recipe.shrinkwrap_every):
        return first
    blur = first.coherence_px
    first.choice = {"coherence_px": None if blur is None else [float(s) for s in blur]}
    if blur is not None and max(blur) >= BLUR_PX:
        if bar is not None:
            bar.update(recipe.n_iterations)  # the tight run is not needed
        first.choice["reason"] = "partially coherent"
        return first
    second = _run(intensity, support, mask, recipe.tight(), seed, be, monitor, bar, "tight")
    figures = {}
    for name, r in (("recipe", first), ("tight", second)):
        m = run_metrics(to_physical_sign(r.obj), r.support, intensity, mask, coherence_px=r.coherence_px)
        figures[name] = (m["llk"], int(r.support.sum()))
    kept = second if prefer_tight(figures["recipe"][0], figures["tight"][0]) else first
    kept.schedule = "tight" if kept is second else "recipe"
    kept.choice = {**first.choice, "reason": "likelihood", "llk": {k: v[0] for k, v in figures.items()},
                   "support": {k: v[1] for k, v in figures.items()}}
    return kept


def _run(intensity, support, mask, recipe, seed, be, monitor, bar, label) -> StartResult:
    state = Start(intensity, support, mask, recipe, np.random.default_rng(seed), be, label=label)
    state.run(recipe.steps, Shrinkwrap.of(recipe), monitor=monitor, bar=bar)
    return state.result()
