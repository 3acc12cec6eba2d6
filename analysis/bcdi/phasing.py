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
:func:`to_physical_sign` conjugates the result once, at the end of
:func:`phase_retrieval`, so ``result.obj`` has the physical sign
(``phase = +G.u``, up to the unavoidable twin ambiguity ``rho -> conj(rho(-r))``
which keeps the sign of the strain).

References
----------
Fienup, Appl. Opt. 21, 2758 (1982) (ER/HIO); Luke, Inverse Problems 21, 37
(2005) (RAAR); Marchesini et al., PRB 68, 140101 (2003) (shrink-wrap);
Clark et al., Nat. Commun. 3, 993 (2012) (partial coherence, :mod:`.coherence`).

Modules
-------
This module is the driver (checks, random starts, selection, modes); the
schedule is :mod:`.recipe`, one run through it :mod:`.iterations`, its
elementwise steps :mod:`.projections`, the supports :mod:`.support`, the
per-run metrics and alignment :mod:`.runs`. Their public names are
re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backend import Backend, get_backend
from .iterations import single_run
from .recipe import Recipe
from .runs import align_to_reference, center_object, embed_centred, mode_decomposition, remove_phase_ramp, run_metrics
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
        Reconstructed object, same shape as the intensity, centred, physical
        sign (phase = +G.u), phase ramp and offset removed.
    support : ndarray, bool
        Final support of ``obj``.
    mode_fraction : float
        Weight of the first SVD mode of the kept runs (1 = all identical).
    metrics : list of dict
        Per run: ``seed``, ``llk`` (Poisson log-likelihood per voxel),
        ``chi2`` (Fourier-amplitude error), ``sharpness``, ``mean_to_max``,
        ``support_size``, ``coherence_px`` (Gaussian blur widths of the
        partial-coherence model, reciprocal-space voxels per axis; the
        errors compare the data with the blurred intensity).
    kept : list of int
        Indices of the runs combined (sorted best first by ``select``).
    runs : list of ndarray
        Aligned objects of the kept runs (physical sign).
    recipe : Recipe
    """

    obj: np.ndarray
    support: np.ndarray
    mode_fraction: float
    metrics: list
    kept: list
    runs: list = field(repr=False, default_factory=list)
    recipe: Recipe | None = None
    select: str = "sharpness"


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
        Seed of the random starts (reproducible results).
    recipe : Recipe or str, optional
        Schedule, e.g. ``"HIO:200,RAAR:400,ER:200"`` (default :class:`Recipe`).
    n_runs : int
        Independent random starts.
    n_keep : int, optional
        Runs kept for the mode decomposition (default ``max(1, n_runs // 2)``).
    select : {"sharpness", "llk", "chi2", "mean_to_max"}
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
    if select not in ("sharpness", "llk", "chi2", "mean_to_max"):
        raise ValueError(f"select must be 'sharpness', 'llk', 'chi2' or 'mean_to_max', got {select!r}")
    if not 0 < support_threshold < 1:
        raise ValueError(f"support_threshold must be in (0, 1), got {support_threshold!r}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != intensity.shape:
            raise ValueError(f"mask shape {mask.shape} differs from intensity shape {intensity.shape}")
    if support is None:
        support = autocorrelation_support(intensity, threshold=autocorrelation_threshold, mask=mask)
    else:
        support = np.asarray(support, dtype=bool)
        if support.shape != intensity.shape:
            raise ValueError(f"support shape {support.shape} differs from intensity shape {intensity.shape}")
        if not support.any():
            raise ValueError("support is empty")
    be = get_backend(backend)

    from tqdm.auto import tqdm

    seeds = np.random.SeedSequence(int(seed)).spawn(n_runs)
    objs, metrics = [], []
    with tqdm(total=n_runs * recipe.n_iterations, desc="phase retrieval", unit="it",
              disable=not progress, mininterval=0.5) as bar:
        for k in range(n_runs):
            obj, sup, sigma = single_run(intensity, support, mask, recipe, np.random.default_rng(seeds[k]), be, bar)
            obj = to_physical_sign(obj)
            m = run_metrics(obj, sup, intensity, mask, coherence_px=sigma)
            m["seed"] = int(seeds[k].generate_state(1)[0])
            m["run"] = k
            objs.append((obj, sup))
            metrics.append(m)
    order = sorted(range(n_runs), key=lambda i: metrics[i][select])
    kept = order[:n_keep]
    ref_obj, ref_sup = objs[kept[0]]
    ref_obj, ref_sup = center_object(ref_obj, ref_sup)
    aligned = [ref_obj]
    for i in kept[1:]:
        aligned.append(align_to_reference(objs[i][0], ref_obj))
    mode, fraction = mode_decomposition(aligned)
    mode = remove_phase_ramp(mode, ref_sup)
    final_sup = ref_sup & (np.abs(mode) >= support_threshold * np.abs(mode).max())
    return PhasingResult(obj=mode.astype(np.complex64), support=final_sup, mode_fraction=fraction,
                         metrics=metrics, kept=kept, runs=aligned, recipe=recipe, select=select)


# -- building blocks ---------------------------------------------------------
def to_physical_sign(obj: np.ndarray) -> np.ndarray:
    """Convert an FFT-retrieved object to the physical sign convention.

    The single place where braggscope flips the sign (see module docstring):
    returns ``conj(obj)``.
    """
    return np.conj(obj)
