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
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from . import coherence
from .backend import Backend, get_backend
from .runs import align_to_reference, center_object, embed_centred, mode_decomposition, remove_phase_ramp, run_metrics

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

_ALGORITHMS = ("ER", "HIO", "RAAR")
#: ER iterations after an HIO/RAAR phase before the partial-coherence widths are fitted.
_PC_SETTLE = 15


@dataclass(frozen=True)
class Recipe:
    """A phase-retrieval schedule.

    Parameters
    ----------
    steps : sequence of (str, int)
        Algorithms and iteration counts run in order, e.g.
        ``(("HIO", 200), ("RAAR", 400), ("ER", 200))``. Algorithms: ER, HIO,
        RAAR.
    beta : float
        Feedback parameter of HIO and RAAR (0 < beta <= 1).
    shrinkwrap_every : int
        Shrink-wrap period in iterations (0 disables shrink-wrap).
    shrinkwrap_threshold : float
        Support = blurred amplitude >= threshold x its maximum.
    sigma_start, sigma_end : float
        Gaussian blur width (voxels) of the shrink-wrap, decaying
        geometrically from start to end over the first 80 % of iterations.
    partial_coherence : bool
        Model a partially coherent beam (:mod:`.coherence`): from the first
        ER iteration after ``coherence_start`` x the iterations on, the
        modulus projection compares the data with the coherent intensity
        blurred by a Gaussian whose widths are fitted on ER iterates (at most
        every ``coherence_every`` iterations; HIO and RAAR iterates are not
        consistent with their support and would bias the fit).
    coherence_start : float
        Fraction of the iterations (0-1) after which the blur is fitted.
    coherence_every : int
        Minimum number of iterations between two fits of the blur widths.
    """

    steps: tuple = (("HIO", 200), ("RAAR", 100), ("ER", 20), ("RAAR", 100), ("ER", 20), ("RAAR", 80), ("ER", 100))
    beta: float = 0.9
    shrinkwrap_every: int = 10
    shrinkwrap_threshold: float = 0.15
    sigma_start: float = 2.0
    sigma_end: float = 0.7
    partial_coherence: bool = True
    coherence_start: float = 0.4
    coherence_every: int = 50

    def __post_init__(self):
        steps = tuple((str(a).upper(), int(n)) for a, n in self.steps)
        if not steps:
            raise ValueError("recipe steps must not be empty")
        for algo, n in steps:
            if algo not in _ALGORITHMS:
                raise ValueError(f"recipe step algorithm must be one of {_ALGORITHMS}, got {algo!r}")
            if n < 0:
                raise ValueError(f"recipe step iterations must be >= 0, got {n} for {algo}")
        object.__setattr__(self, "steps", steps)
        if not 0 < self.beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {self.beta!r}")
        if not 0 < self.shrinkwrap_threshold < 1:
            raise ValueError(f"shrinkwrap_threshold must be in (0, 1), got {self.shrinkwrap_threshold!r}")
        if self.shrinkwrap_every < 0:
            raise ValueError(f"shrinkwrap_every must be >= 0, got {self.shrinkwrap_every!r}")
        if not (self.sigma_start > 0 and self.sigma_end > 0):
            raise ValueError("sigma_start and sigma_end must be > 0 voxels")
        if not 0 <= self.coherence_start <= 1:
            raise ValueError(f"coherence_start must be in [0, 1], got {self.coherence_start!r}")
        if self.coherence_every < 1:
            raise ValueError(f"coherence_every must be >= 1, got {self.coherence_every!r}")

    @property
    def n_iterations(self) -> int:
        """Total number of iterations."""
        return sum(n for _, n in self.steps)

    @classmethod
    def parse(cls, text: str, **options) -> "Recipe":
        """Recipe from ``"HIO:300,RAAR:500,ER:200"`` (options as keywords)."""
        steps = []
        for item in str(text).split(","):
            item = item.strip()
            if not item:
                continue
            try:
                algo, n = item.split(":")
                steps.append((algo.strip().upper(), int(n)))
            except ValueError:
                raise ValueError(f"recipe item must look like 'HIO:300', got {item!r}") from None
        return cls(steps=tuple(steps), **options)

    def __str__(self) -> str:
        return ",".join(f"{a}:{n}" for a, n in self.steps)


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
            obj, sup, sigma = _single_run(intensity, support, mask, recipe, np.random.default_rng(seeds[k]), be, bar)
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


def autocorrelation_support(intensity, *, threshold: float = 0.1, mask=None) -> np.ndarray:
    """Support from the autocorrelation of the object (inverse FFT of the intensity).

    The autocorrelation of an object of extent ``a`` spans ``2a``: a loose
    but safe starting support, centred in the array.

    Parameters
    ----------
    intensity : ndarray
        Centred far-field intensity.
    threshold : float
        Fraction of the autocorrelation maximum.
    mask : ndarray of bool, optional
        Unmeasured pixels (set to 0 before the transform).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    i = np.array(intensity, dtype=np.float32)
    if mask is not None:
        i[mask] = 0
    ac = np.abs(np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(i))))
    from scipy.ndimage import gaussian_filter

    ac = gaussian_filter(ac, 1.0)
    return ac >= threshold * ac.max()


def _single_run(intensity, support, mask, recipe, rng, be, bar):
    """One random start through the whole recipe.

    Returns ``(obj, support, coherence_px)`` on the host; ``coherence_px`` is
    None unless the recipe's partial-coherence model was used.
    """
    xp = be.xp
    amp = xp.asarray(np.fft.ifftshift(np.sqrt(intensity)).astype(np.float32))
    free = None
    if mask is not None and mask.any():
        free = xp.asarray(np.fft.ifftshift(mask))
    sup = xp.asarray(support)
    eps = np.float32(1e-6 * float(amp.max()))
    # random start: measured amplitudes with random phases, back to real space, inside support
    phase = rng.uniform(0, 2 * np.pi, intensity.shape).astype(np.float32)
    psi = amp * xp.asarray(np.exp(1j * phase).astype(np.complex64))
    psi = be.ifftn(psi).astype(np.complex64)
    psi *= sup
    prev = xp.empty_like(psi)
    n_total = recipe.n_iterations
    sw_stop = int(0.8 * n_total)
    it = 0
    modulus = be.kernels.get("modulus_free", _modulus_free) if free is not None else \
        be.kernels.get("modulus", _modulus)
    update = be.kernels.get("update", _update)
    mod_args = (amp, free) if free is not None else (amp,)
    pc_from = int(recipe.coherence_start * n_total) if recipe.partial_coherence else n_total + 1
    pc_sigma, pc_fitted = None, 0
    window = coherence.peak_window(intensity.shape)
    for algo, n in recipe.steps:
        w_new, w_prev = _weights(algo, sup, recipe.beta, xp)
        if w_prev is not None:  # weighted previous iterate, kept up to date by _update
            xp.multiply(psi, w_prev, out=prev)
        for j in range(n):
            psi = be.fftn(psi)
            if (it >= pc_from and algo == "ER" and j >= min(n - 1, _PC_SETTLE)
                    and (pc_sigma is None or it - pc_fitted >= recipe.coherence_every)):
                # fitted on settled ER iterates only: an HIO/RAAR iterate is no object consistent with its support
                pc_sigma, pc_fitted = coherence.fit_in_fourier_space(psi, amp, free, window, pc_sigma, be), it
            if pc_sigma is not None:
                coherence.modulus_partial(psi, amp, free, pc_sigma, eps, be)
            else:
                # modulus projection in place: psi *= amp / max(|psi|, eps) where measured
                be.map_blocks(lambda p, *a: modulus(p, *a, eps), psi, *mod_args)
            psi = be.ifftn(psi)
            # support update: new = w_new P_M(psi) + w_prev psi_prev; then prev = w_prev new
            if w_prev is None:
                be.map_blocks(_update_er, psi, w_new)
            else:
                be.map_blocks(update, psi, w_new, prev, w_prev)
            it += 1
            if recipe.shrinkwrap_every and it % recipe.shrinkwrap_every == 0 and it < n_total:
                frac = min(1.0, it / max(sw_stop, 1))
                sigma = recipe.sigma_start * (recipe.sigma_end / recipe.sigma_start) ** frac
                new_sup = _shrinkwrap(psi, sigma, recipe.shrinkwrap_threshold, be)
                if int(new_sup.sum()) >= 8:
                    sup = new_sup
                    w_new, w_prev = _weights(algo, sup, recipe.beta, xp)
                    if w_prev is not None:
                        xp.multiply(psi, w_prev, out=prev)
            if it % 10 == 0:
                bar.update(10)
    bar.update(it % 10)
    psi = psi * sup
    return be.asnumpy(psi).astype(np.complex64), be.asnumpy(sup).astype(bool), pc_sigma


# Elementwise kernels: in place, on whole arrays or on matching blocks (Backend.map_blocks).
# numpy ufuncs dispatch to CuPy through __array_ufunc__ / __array_function__ on the GPU.
_LOCAL = threading.local()


def _scratch(psi):
    """A float32 work array shaped like ``psi``: thread-local and reused for numpy blocks
    (stays in cache, never written back as a full array), freshly allocated on a GPU."""
    if not isinstance(psi, np.ndarray):
        return _xp_empty_like_real(psi)
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or buf.size < psi.size:
        buf = _LOCAL.buf = np.empty(psi.size, np.float32)
    return buf[: psi.size].reshape(psi.shape)


def _xp_empty_like_real(psi):
    import cupy

    return cupy.empty(psi.shape, dtype=np.float32)


def _modulus(psi, amp, eps):
    """In place: ``psi *= amp / max(|psi|, eps)``."""
    tmp = _scratch(psi)
    np.abs(psi, out=tmp)
    np.maximum(tmp, eps, out=tmp)
    np.divide(amp, tmp, out=tmp)
    np.multiply(psi, tmp, out=psi)


def _modulus_free(psi, amp, free, eps):
    """As :func:`_modulus`, leaving unmeasured voxels (``free``) unchanged."""
    tmp = _scratch(psi)
    np.abs(psi, out=tmp)
    np.maximum(tmp, eps, out=tmp)
    np.divide(amp, tmp, out=tmp)
    np.copyto(tmp, np.float32(1.0), where=free)
    np.multiply(psi, tmp, out=psi)


def _update_er(psi, w_new):
    """ER: ``psi *= support``."""
    np.multiply(psi, w_new, out=psi)


def _update(psi, w_new, prev, w_prev):
    """HIO/RAAR: ``psi = w_new psi + prev`` then ``prev = w_prev psi`` (prev holds the weighted iterate)."""
    np.multiply(psi, w_new, out=psi)
    np.add(psi, prev, out=psi)
    np.multiply(psi, w_prev, out=prev)


def _weights(algo, sup, beta, xp):
    """Weights of the projected and previous objects: new = w_new P_M(x) + w_prev x.

    ER: P_S P_M x. HIO: P_M x in S, x - beta P_M x outside. RAAR (Luke 2005):
    P_M x in S, beta x + (1 - 2 beta) P_M x outside.
    """
    s = sup.astype(np.float32)
    if algo == "ER":
        return s, None
    ns = np.float32(1) - s
    if algo == "HIO":
        return s - np.float32(beta) * ns, ns
    return s + np.float32(1 - 2 * beta) * ns, np.float32(beta) * ns


def _shrinkwrap(psi, sigma, threshold, be):
    a = be.gaussian_filter(be.xp.abs(psi), sigma)
    return a >= threshold * a.max()
