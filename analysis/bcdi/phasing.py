"""BCDI phase retrieval: ER, HIO and RAAR with shrink-wrap, several runs, modes.

Entry point: :func:`phase_retrieval` (stable API, docs/conventions.md).

Data layout
-----------
``intensity`` is the far field with its centre at the array centre (as after
``numpy.fft.fftshift``). Internally the amplitude is ``ifftshift``-ed once so
that no shift is needed per iteration; the object lives centred in its array
(a centred object and an origin-centred one differ by a phase ramp in Fourier
space, to which the modulus constraint is blind).

Sign convention (the ONE place it is handled)
---------------------------------------------
The physical amplitude is ``A(q) = sum rho(r) exp(+i q.r)`` while the
iterations use forward FFTs (``exp(-i q.r)``). The object that the iterations
converge to is therefore ``conj(rho)`` (or its twin ``rho(-r)``): the phase
has the opposite sign of ``G.u`` (Carnis et al., Sci. Rep. 9, 17357, 2019).
:func:`to_physical_sign` conjugates each start's result once, as it ends
(:func:`.distributed.run_one`), so ``result.obj`` has the physical sign
(``phase = +G.u``, up to the unavoidable twin ambiguity ``rho -> conj(rho(-r))``
which keeps the sign of the strain).

References
----------
Fienup, Appl. Opt. 21, 2758 (1982) (ER/HIO); Luke, Inverse Problems 21, 37
(2005) (RAAR); Marchesini et al., PRB 68, 140101 (2003) (shrink-wrap);
Clark et al., Nat. Commun. 3, 993 (2012) (partial coherence, :mod:`.coherence`).

Modules
-------
This module is the driver (checks, then the starts, their ranking and
combination); the schedule is :mod:`.recipe`, one start through it
:mod:`.iterations` (its last step's shrink-wrap chosen by :mod:`.schedule`),
its elementwise steps :mod:`.projections`, the supports :mod:`.support`; the
starts run in this process or on a Dask cluster (:mod:`.distributed`), the
kept ones are registered and decomposed into modes by :mod:`.combine`, the
per-run metrics and alignment are in :mod:`.runs`, the live view in
:mod:`.live`. Their public names are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backend import Backend
from .combine import Combination, combine
from .distributed import iterations_per_start, run_starts
from .live import LiveView
from .metrics import prtf
from .recipe import SELECT, Recipe
from .runs import (
    align_to_reference,
    center_object,
    embed_centred,
    mode_decomposition,
    phase_ramp,
    remove_phase_ramp,
    run_metrics,
    to_physical_sign,
)
from .support import autocorrelation_support

__all__ = [
    "Recipe",
    "PhasingResult",
    "phase_retrieval",
    "autocorrelation_support",
    "to_physical_sign",
    "remove_phase_ramp",
    "center_object",
    "align_to_reference",
    "mode_decomposition",
    "run_metrics",
    "embed_centred",
]

@dataclass
class PhasingResult:
    """Output of :func:`phase_retrieval`.

    Attributes
    ----------
    obj : ndarray, complex64
        Reconstructed object: the first mode of the kept runs, same shape as
        the intensity, centred, physical sign (phase = +G.u), phase ramp
        and offset removed.
    support : ndarray, bool
        Final support of ``obj``.
    mode_fraction : float
        Weight of the first mode of the kept runs (1 = all identical).
    metrics : list of dict
        Per run, in seed order: ``run``, ``seed``, ``llk`` (Poisson
        log-likelihood per voxel), ``chi2`` (Fourier-amplitude error),
        ``sharpness``, ``mean_to_max``, ``support_size``, ``coherence_px``
        (Gaussian blur widths of the partial-coherence model,
        reciprocal-space voxels per axis; the errors compare the data with
        the blurred intensity), ``error`` (the last Fourier error of the
        iterations), ``schedule`` and ``choice`` (the last step's
        shrink-wrap, :mod:`.schedule`), ``seconds``.
    kept : list of int
        Indices of the runs combined (sorted best first by ``select``).
    runs : list of ndarray
        The kept runs registered to the best one (shift to a fraction of a
        voxel, twin, global phase; physical sign).
    recipe : Recipe
    select : str
    average : ndarray, complex64
        Mean of ``runs``, ramp and offset removed like ``obj``.
    mode_weights : ndarray
        Weight of every mode of the kept runs, descending (the first is ``mode_fraction``).
    history : list of (iterations, errors)
        Per kept run: the Fourier error every 10 iterations.
    ramp : tuple of float
        The phase ramp removed from ``obj`` and ``average`` (rad per voxel per axis).
    timing : dict
        Seconds: ``total``; on a cluster also ``cluster_start``, ``worker_seconds``, ``workers``.
    """

    obj: np.ndarray
    support: np.ndarray
    mode_fraction: float
    metrics: list
    kept: list
    runs: list = field(repr=False, default_factory=list)
    recipe: Recipe | None = None
    select: str = "sharpness"
    average: np.ndarray | None = field(repr=False, default=None)
    mode_weights: np.ndarray | None = None
    history: list = field(repr=False, default_factory=list)
    ramp: tuple = ()
    timing: dict = field(default_factory=dict)
    intensity: np.ndarray | None = field(repr=False, default=None)
    mask: np.ndarray | None = field(repr=False, default=None)

    def prtf(self, *, b=None, n_shells=None):
        """PRTF of the combined object against the data (:func:`.metrics.prtf`), with the best run's
        partial-coherence widths; ``b`` the ``dq`` per index (default: index units)."""
        return prtf(self.obj, self.intensity, mask=self.mask, b=b, n_shells=n_shells,
                    coherence_px=self.metrics[self.kept[0]].get("coherence_px"))


def phase_retrieval(
    intensity,
    *,
    support=None,
    seed: int = 0,
    recipe: Recipe | str | None = None,
    n_runs: int = 1,
    n_keep: int | None = None,
    select: str = "sharpness",
    mask=None,
    autocorrelation_threshold: float = 0.1,
    backend: str | Backend = "auto",
    support_threshold: float = 0.3,
    progress: bool = True,
    scheduler=None,
    n_workers: int | None = None,
    live: LiveView | str | None = None,
) -> PhasingResult:
    """Retrieve a complex BCDI object from a centred 3D (or 2D) intensity.

    Parameters
    ----------
    intensity : ndarray
        Measured far-field intensity (photons), centre at the array centre.
        Negative values are clipped to 0.
    support : ndarray of bool, optional
        Initial support (same shape). Default: autocorrelation thresholded at
        ``autocorrelation_threshold`` of its maximum.
    seed : int
        Seed of the random starts (reproducible results: start ``k`` uses
        the ``k``-th child of ``numpy.random.SeedSequence(seed)``, wherever it runs).
    recipe : Recipe or str, optional
        Schedule, e.g. ``"HIO:200,RAAR:400,ER:200"`` (default :class:`Recipe`).
    n_runs : int
        Independent random starts.
    n_keep : int, optional
        Best runs combined (default ``max(1, n_runs // 2)``).
    select : {"sharpness", "llk", "chi2", "mean_to_max", "error"}
        Metric ranking the runs (lower is better for all).
    mask : ndarray of bool, optional
        True where a pixel is NOT measured (gaps, hot pixels): it is left free.
    autocorrelation_threshold : float
        Threshold of the initial support.
    backend : str or Backend
        ``"auto"`` (CuPy if a GPU is usable, else scipy), ``"scipy"``, ``"cupy"``.
    support_threshold : float
        The returned support is ``|obj| >= support_threshold * max |obj|``
        (within the final shrink-wrap support).
    progress : bool
        Show a tqdm progress bar.
    scheduler : None, "local", str or distributed.Client
        Where the starts run: None in this process; ``"local"`` a local Dask
        cluster started for the call (in this process when ``n_runs`` is 1);
        an address such as ``"tcp://host:8786"`` or a Client (:mod:`.distributed`).
    n_workers : int, optional
        Workers of a local cluster (default: one per core, or per GPU).
    live : LiveView or path, optional
        Live view of the error curves and slices (a path: a PNG refreshed in place).

    Returns
    -------
    PhasingResult

    Examples
    --------
    >>> import numpy as np
    >>> rho = np.zeros((32, 32, 32)); rho[12:20, 12:20, 12:20] = 1
    >>> i = np.abs(np.fft.fftshift(np.fft.fftn(rho))) ** 2
    >>> r = phase_retrieval(i, recipe="HIO:50,ER:50", progress=False)
    >>> r.obj.shape
    (32, 32, 32)
    """
    intensity, mask, support, recipe, n_keep = _checked(intensity, mask, support, recipe, n_runs, n_keep, select,
                                                        support_threshold, autocorrelation_threshold)
    if isinstance(live, (str, bytes)) or hasattr(live, "__fspath__"):
        live = LiveView(live)
    if scheduler == "local" and int(n_runs) < 2:
        scheduler = None  # one start: a cluster would only add its start-up
    from tqdm.auto import tqdm  # slow to import

    seeds = np.random.SeedSequence(int(seed)).spawn(int(n_runs))
    with tqdm(total=int(n_runs) * iterations_per_start(recipe), desc="phase retrieval", unit="it",
              disable=not progress, mininterval=0.5) as bar:
        outcome = run_starts(intensity, support, mask, recipe, seeds, backend=backend, select=select,
                             n_keep=n_keep, scheduler=scheduler, n_workers=n_workers, live=live, bar=bar)
    if live is not None:
        live.close()
    return _combined(outcome, intensity, mask, recipe, select, support_threshold)


def _combined(outcome, intensity, mask, recipe, select, support_threshold) -> PhasingResult:
    """The kept starts registered, averaged and decomposed; ramp and offset removed."""
    res = outcome.results
    comb: Combination = combine([r.obj for r in res], [r.support for r in res])
    ref_sup = comb.support
    ramp = phase_ramp(comb.mode, ref_sup)
    mode = remove_phase_ramp(comb.mode, ref_sup)
    average = remove_phase_ramp(comb.average, ref_sup)
    final_sup = ref_sup & (np.abs(mode) >= support_threshold * np.abs(mode).max())
    return PhasingResult(obj=mode.astype(np.complex64), support=final_sup, mode_fraction=comb.first_mode_weight,
                         metrics=outcome.metrics, kept=outcome.kept, runs=comb.runs, recipe=recipe, select=select,
                         average=average.astype(np.complex64), mode_weights=comb.weights,
                         history=[r.history for r in res], ramp=ramp, timing=outcome.timing,
                         intensity=intensity, mask=mask)


def _checked(intensity, mask, support, recipe, n_runs, n_keep, select, support_threshold, ac_threshold):
    """Validated inputs (a one-line ValueError naming the argument), the starting support and recipe."""
    intensity = np.asarray(intensity)
    if intensity.ndim not in (2, 3) or min(intensity.shape) < 4:
        raise ValueError(f"intensity must be a 2D or 3D array (>= 4 per axis), got shape {intensity.shape}")
    if not np.all(np.isfinite(intensity)):
        raise ValueError("intensity must be finite (mask bad pixels with `mask` instead of NaN)")
    intensity = np.clip(intensity.astype(np.float32), 0, None)
    if not intensity.max() > 0:
        raise ValueError("intensity is all zero")
    if recipe is None:
        recipe = Recipe()
    elif isinstance(recipe, str):
        recipe = Recipe.parse(recipe)
    elif not isinstance(recipe, Recipe):
        raise ValueError(f"recipe must be a Recipe or a string like 'HIO:300,ER:100', got {recipe!r}")
    n_runs = int(n_runs)
    if n_runs < 1:
        raise ValueError(f"n_runs must be >= 1, got {n_runs}")
    n_keep = max(1, n_runs // 2) if n_keep is None else int(n_keep)
    if not 1 <= n_keep <= n_runs:
        raise ValueError(f"n_keep must be in [1, n_runs={n_runs}], got {n_keep}")
    if select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)}, got {select!r}")
    if not 0 < support_threshold < 1:
        raise ValueError(f"support_threshold must be in (0, 1), got {support_threshold!r}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != intensity.shape:
            raise ValueError(f"mask shape {mask.shape} differs from intensity shape {intensity.shape}")
    if support is None:
        support = autocorrelation_support(intensity, threshold=ac_threshold, mask=mask)
    else:
        support = np.asarray(support, dtype=bool)
        if support.shape != intensity.shape:
            raise ValueError(f"support shape {support.shape} differs from intensity shape {intensity.shape}")
        if not support.any():
            raise ValueError("support is empty")
    return intensity, mask, support, recipe, n_keep
