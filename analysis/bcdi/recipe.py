"""The schedule of a phase retrieval: algorithms, shrink-wrap and partial-coherence options.

:class:`Recipe` is validated when built (a one-line error names the option
to change) and prints as the ``"HIO:200,RAAR:100,ER:20"`` text it parses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["Recipe", "ALGORITHMS", "SELECT"]

#: Algorithms a recipe step may name.
ALGORITHMS = ("ER", "HIO", "RAAR")
#: Metrics that may rank the random starts (lower is better; :func:`.phasing.phase_retrieval`).
SELECT = ("sharpness", "llk", "chi2", "mean_to_max", "error")


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
    coherence_refresh : int
        Iterations between two updates of the blurred intensity (1: every
        iteration). In between, the modulus projection is the coherent one
        onto the measured amplitudes scaled by the last ratio
        ``sqrt(|F|^2 / (G * |F|^2))`` (:func:`.coherence.effective_amplitude`):
        the same fixed points at a coherent iteration's cost.
    choose_schedule : bool
        Choose the schedule per data set (:mod:`.schedule`): after the run
        above, unless its partial-coherence fit found a blur, run the same
        random start again with the tight shrink-wrap below and no
        partial-coherence model, and keep the run the data prefer (a coherent
        beam gets the tight support, a partially coherent or noisy data set
        keeps this one).
    tight_threshold, tight_sigma_end, tight_every : float, float, int
        The tight shrink-wrap: threshold (fraction of the maximum), final blur
        width (voxels; from ``sigma_start``) and period (iterations).
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
    coherence_refresh: int = 4
    choose_schedule: bool = True
    tight_threshold: float = 0.2
    tight_sigma_end: float = 0.5
    tight_every: int = 20

    def __post_init__(self):
        steps = tuple((str(a).upper(), int(n)) for a, n in self.steps)
        if not steps:
            raise ValueError("recipe steps must not be empty")
        for algo, n in steps:
            if algo not in ALGORITHMS:
                raise ValueError(f"recipe step algorithm must be one of {ALGORITHMS}, got {algo!r}")
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
        if self.coherence_refresh < 1:
            raise ValueError(f"coherence_refresh must be >= 1, got {self.coherence_refresh!r}")
        if not 0 < self.tight_threshold < 1:
            raise ValueError(f"tight_threshold must be in (0, 1), got {self.tight_threshold!r}")
        if not self.tight_sigma_end > 0:
            raise ValueError(f"tight_sigma_end must be > 0 voxels, got {self.tight_sigma_end!r}")
        if self.tight_every < 1:
            raise ValueError(f"tight_every must be >= 1, got {self.tight_every!r}")

    @property
    def n_iterations(self) -> int:
        """Total number of iterations."""
        return sum(n for _, n in self.steps)

    def tight(self) -> Recipe:
        """The tight schedule: these steps with the tight shrink-wrap, coherent, no further choice."""
        return replace(self, shrinkwrap_every=self.tight_every, shrinkwrap_threshold=self.tight_threshold,
                       sigma_end=self.tight_sigma_end, partial_coherence=False, choose_schedule=False)

    @classmethod
    def parse(cls, text: str, **options) -> Recipe:
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
