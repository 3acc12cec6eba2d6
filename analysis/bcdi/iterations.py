"""One random start of a phase retrieval through a :class:`.recipe.Recipe`.

Arrays live on the back-end (numpy or CuPy) in the origin-centred layout (the
measured amplitudes ``ifftshift``-ed once, see :mod:`.phasing`). Per
iteration: forward FFT, modulus projection onto the amplitudes of
:class:`.coherence.PartialCoherence` (the measured ones, or the partially
coherent model's), inverse FFT, support update (:mod:`.projections`); every
``shrinkwrap_every`` iterations a new support (:mod:`.support`). The same
code runs on both back-ends; only the elementwise kernels may be fused ones.

A :class:`Start` keeps the state between steps, so that its Fourier error
and a view of the object can be reported while it runs (``monitor``);
:mod:`.schedule` runs a start with the recipe's schedule and maybe a tight
one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import projections
from .coherence import PartialCoherence
from .support import Shrinkwrap, shrinkwrap

__all__ = ["Start", "StartResult", "single_run", "fourier_error"]

#: Iterations between two Fourier errors kept in a start's history.
ERROR_EVERY = 10


@dataclass
class StartResult:
    """What one random start returns (host arrays; the object as the iterations give it, FFT sign).

    ``history`` is ``(iterations, errors)``: the Fourier error
    ``sum(|F| - a)^2 / sum(a^2)`` over the measured voxels, ``a`` the
    amplitudes the modulus projection imposes, every :data:`ERROR_EVERY`
    iterations. ``schedule`` names the schedule of the run kept
    (``"recipe"`` or ``"tight"``, see :mod:`.schedule`), ``choice`` the
    figures the choice compared; ``metrics`` is filled by the driver
    (:func:`.distributed.run_one`).
    """

    obj: np.ndarray
    support: np.ndarray
    coherence_px: tuple | None
    history: tuple = ((), ())
    schedule: str = "recipe"
    choice: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


class Start:
    """The state of one random start: the iterate, its support and partial-coherence model.

    ``label`` names the schedule for a monitor (``""`` the recipe's, ``"tight"``).
    """

    def __init__(self, intensity, support, mask, recipe, rng, be, *, label: str = ""):
        xp = be.xp
        self.be, self.recipe, self.label = be, recipe, label
        self.amp = xp.asarray(np.fft.ifftshift(np.sqrt(intensity)).astype(np.float32))
        self.free = xp.asarray(np.fft.ifftshift(mask)) if mask is not None and mask.any() else None
        self.sup = xp.asarray(support)
        self.eps = np.float32(1e-6 * float(self.amp.max()))
        # random start: measured amplitudes with random phases, back to real space, inside support
        phase = rng.uniform(0, 2 * np.pi, intensity.shape).astype(np.float32)
        psi = be.ifftn(self.amp * xp.asarray(np.exp(1j * phase).astype(np.complex64))).astype(np.complex64)
        psi *= self.sup
        self.psi = psi
        self.coherence = PartialCoherence(recipe, self.amp, self.free, self.eps, be)
        self.it = 0
        self.iterations, self.errors = [], []
        measured = self.amp if self.free is None else self.amp * ~self.free
        self._norm = float(be.xp.sum(measured.astype(np.float64) ** 2)) or 1.0

    def run(self, steps, sw: Shrinkwrap, *, monitor=None, bar=None) -> None:
        """Iterate through ``steps`` (``(algorithm, n)`` pairs), shrink-wrapping as ``sw`` says.

        ``monitor(start, it)``, when given, is called every
        :data:`ERROR_EVERY` iterations after the error is recorded (read only:
        it must not change the state); ``bar.update(n)`` advances a progress
        bar every 10 iterations.
        """
        be, xp, recipe = self.be, self.be.xp, self.recipe
        update = be.kernels.get("update", projections.update)
        weights = be.kernels.get("weights", projections.weights)
        n_total = recipe.n_iterations
        psi, sup, done = self.psi, self.sup, 0
        prev = xp.empty_like(psi)
        for algo, n in steps:
            w_new, w_prev = weights(algo, sup, recipe.beta, xp)
            if w_prev is not None:  # weighted previous iterate, kept up to date by update()
                be.map_blocks(_weigh, psi, w_prev, prev)
            for j in range(n):
                psi = be.fftn(psi)
                target = self.coherence.amplitudes(psi, self.it, algo, j, n)
                if self.it % ERROR_EVERY == 0:
                    self.iterations.append(self.it)
                    self.errors.append(fourier_error(be, psi, target, self.free) / self._norm)
                _modulus(be, psi, target, self.free, self.eps)
                psi = be.ifftn(psi)
                # support update: new = w_new P_M(psi) + w_prev psi_prev; then prev = w_prev new
                if w_prev is None:
                    be.map_blocks(projections.update_er, psi, w_new)
                else:
                    be.map_blocks(update, psi, w_new, prev, w_prev)
                self.it += 1
                done += 1
                if sw.every and self.it % sw.every == 0 and self.it < n_total:
                    new_sup = shrinkwrap(psi, sw.sigma(self.it), sw.threshold, be)
                    if int(new_sup.sum()) >= 8:
                        sup = new_sup
                        w_new, w_prev = weights(algo, sup, recipe.beta, xp)
                        if w_prev is not None:
                            be.map_blocks(_weigh, psi, w_prev, prev)
                if monitor is not None and (self.it - 1) % ERROR_EVERY == 0:
                    self.psi, self.sup = psi, sup
                    monitor(self, self.it - 1)
                if bar is not None and done % 10 == 0:
                    bar.update(10)
        if bar is not None:
            bar.update(done % 10)
        self.psi, self.sup = psi, sup

    def result(self) -> StartResult:
        """The object inside its support, on the host."""
        psi = self.psi * self.sup
        return StartResult(obj=self.be.asnumpy(psi).astype(np.complex64),
                           support=self.be.asnumpy(self.sup).astype(bool), coherence_px=self.coherence.sigma,
                           history=(tuple(self.iterations), tuple(self.errors)))


def single_run(intensity, support, mask, recipe, rng, be, bar):
    """One random start through the whole recipe (no choice of schedule).

    Returns ``(obj, support, coherence_px)`` on the host (FFT sign); kept for
    the benchmarks that time the iterations alone.
    """
    state = Start(intensity, support, mask, recipe, rng, be)
    state.run(recipe.steps, Shrinkwrap.of(recipe), bar=bar)
    r = state.result()
    return r.obj, r.support, r.coherence_px


def fourier_error(be, psi, target, free) -> float:
    """``sum (|psi| - target)^2`` over the measured voxels (``free`` left out), one sequential pass."""
    fn = be.kernels.get("fourier_error")
    if fn is not None:
        return fn(psi, target, free)
    d = (be.xp.abs(psi) - target) ** 2
    if free is not None:
        d = d * ~free
    return float(be.xp.sum(d.astype(np.float64)))


def _weigh(psi, w_prev, prev):
    """``prev = w_prev psi`` (in place, on blocks)."""
    np.multiply(psi, w_prev, out=prev)


def _modulus(be, psi, amp, free, eps):
    """In place: the modulus projection onto ``amp`` (``free`` voxels unchanged), fused where the back-end can."""
    if free is None:
        fn = be.kernels.get("modulus", projections.modulus)
        be.map_blocks(lambda p, a: fn(p, a, eps), psi, amp)
    else:
        fn = be.kernels.get("modulus_free", projections.modulus_free)
        be.map_blocks(lambda p, a, f: fn(p, a, f, eps), psi, amp, free)
