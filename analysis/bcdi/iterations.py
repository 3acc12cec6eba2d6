"""One random start of a phase retrieval through a whole :class:`.recipe.Recipe`.

Arrays live on the back-end (numpy or CuPy) in the origin-centred layout (the
measured amplitudes ``ifftshift``-ed once, see :mod:`.phasing`). Per
iteration: forward FFT, modulus projection onto the amplitudes of
:class:`.coherence.PartialCoherence` (the measured ones, or the partially
coherent model's), inverse FFT, support update (:mod:`.projections`); every
``shrinkwrap_every`` iterations a new support (:mod:`.support`). The same
code runs on both back-ends; only the elementwise kernels may be fused ones.
"""

from __future__ import annotations

import numpy as np

from . import projections
from .coherence import PartialCoherence
from .support import shrinkwrap, shrinkwrap_sigma

__all__ = ["single_run"]


def single_run(intensity, support, mask, recipe, rng, be, bar):
    """One random start through the whole recipe.

    Parameters
    ----------
    intensity : ndarray, float32
        Centred measured intensity (validated by the caller).
    support : ndarray of bool
        Starting support.
    mask : ndarray of bool or None
        Unmeasured voxels (left free).
    recipe : Recipe
    rng : numpy.random.Generator
        Source of the random starting phases.
    be : Backend
    bar : object with ``update(n)``
        Progress (tqdm), advanced every 10 iterations.

    Returns
    -------
    obj, support, coherence_px
        On the host; ``coherence_px`` is None unless the recipe's
        partial-coherence model was fitted.
    """
    xp = be.xp
    amp = xp.asarray(np.fft.ifftshift(np.sqrt(intensity)).astype(np.float32))
    free = xp.asarray(np.fft.ifftshift(mask)) if mask is not None and mask.any() else None
    sup = xp.asarray(support)
    eps = np.float32(1e-6 * float(amp.max()))
    # random start: measured amplitudes with random phases, back to real space, inside support
    phase = rng.uniform(0, 2 * np.pi, intensity.shape).astype(np.float32)
    psi = be.ifftn(amp * xp.asarray(np.exp(1j * phase).astype(np.complex64))).astype(np.complex64)
    psi *= sup
    prev = xp.empty_like(psi)
    update = be.kernels.get("update", projections.update)
    weights = be.kernels.get("weights", projections.weights)
    coherence = PartialCoherence(recipe, amp, free, eps, be)
    n_total, it = recipe.n_iterations, 0
    for algo, n in recipe.steps:
        w_new, w_prev = weights(algo, sup, recipe.beta, xp)
        if w_prev is not None:  # weighted previous iterate, kept up to date by update()
            be.map_blocks(_weigh, psi, w_prev, prev)
        for j in range(n):
            psi = be.fftn(psi)
            target = coherence.amplitudes(psi, it, algo, j, n)
            _modulus(be, psi, target, free, eps)
            psi = be.ifftn(psi)
            # support update: new = w_new P_M(psi) + w_prev psi_prev; then prev = w_prev new
            if w_prev is None:
                be.map_blocks(projections.update_er, psi, w_new)
            else:
                be.map_blocks(update, psi, w_new, prev, w_prev)
            it += 1
            if recipe.shrinkwrap_every and it % recipe.shrinkwrap_every == 0 and it < n_total:
                new_sup = shrinkwrap(psi, shrinkwrap_sigma(recipe, it), recipe.shrinkwrap_threshold, be)
                if int(new_sup.sum()) >= 8:
                    sup = new_sup
                    w_new, w_prev = weights(algo, sup, recipe.beta, xp)
                    if w_prev is not None:
                        be.map_blocks(_weigh, psi, w_prev, prev)
            if it % 10 == 0:
                bar.update(10)
    bar.update(it % 10)
    psi = psi * sup
    return be.asnumpy(psi).astype(np.complex64), be.asnumpy(sup).astype(bool), coherence.sigma


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
