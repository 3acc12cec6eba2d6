"""Supports of BCDI phase retrieval: the starting support and the shrink-wrap update.

* :func:`autocorrelation_support`: the autocorrelation of the object (the
  inverse FFT of the intensity) thresholded: twice the object's extent, a
  loose but safe start.
* :func:`shrinkwrap`: Marchesini et al., PRB 68, 140101 (2003): the blurred
  amplitude of the current iterate thresholded at a fraction of its maximum,
  with a blur narrowing geometrically over the run (:func:`shrinkwrap_sigma`).
  The blur is the periodic Gaussian of :func:`.coherence.blur` (a real-FFT
  product on all cores, or on the GPU), one code path for both back-ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy.ndimage import gaussian_filter

from . import backend
from .coherence import blur

__all__ = ["autocorrelation_support", "shrinkwrap", "shrinkwrap_sigma", "Shrinkwrap"]


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
    ac = np.abs(np.fft.fftshift(sfft.ifftn(np.fft.ifftshift(i), workers=backend.threads())))
    ac = gaussian_filter(ac, 1.0)
    return ac >= threshold * ac.max()


def shrinkwrap_sigma(recipe, it: int) -> float:
    """Blur width (voxels) of the shrink-wrap at iteration ``it``: ``sigma_start`` decaying
    geometrically to ``sigma_end`` over the first 80 % of the recipe's iterations."""
    return Shrinkwrap.of(recipe).sigma(it)


@dataclass(frozen=True)
class Shrinkwrap:
    """When and how a start's support is shrink-wrapped.

    Every ``every`` iterations (0: never), the support becomes the amplitude
    blurred by ``sigma(it)`` voxels, thresholded at ``threshold`` of its
    maximum; the width decays geometrically from ``sigma_start`` to
    ``sigma_end`` until iteration ``decay_until``, then stays.
    """

    every: int
    threshold: float
    sigma_start: float
    sigma_end: float
    decay_until: int = 1

    @classmethod
    def of(cls, recipe) -> Shrinkwrap:
        """The recipe's own shrink-wrap (its width decays over the first 80 % of the iterations)."""
        return cls(recipe.shrinkwrap_every, recipe.shrinkwrap_threshold, recipe.sigma_start, recipe.sigma_end,
                   max(int(0.8 * recipe.n_iterations), 1))

    def sigma(self, it: int) -> float:
        """Blur width (voxels) at iteration ``it``."""
        frac = min(1.0, it / max(self.decay_until, 1))
        return self.sigma_start * (self.sigma_end / self.sigma_start) ** frac


def shrinkwrap(psi, sigma: float, threshold: float, be):
    """New support: ``G_sigma * |psi| >= threshold * max`` (``psi`` in real space, any back-end)."""
    a = be.xp.empty(psi.shape, dtype=np.float32)
    be.map_blocks(_abs, psi, a)  # on all cores
    a = blur(a, (float(sigma),) * psi.ndim, be.xp)
    return a >= threshold * a.max()


def _abs(psi, out):
    """``out = |psi|`` (in place, on blocks)."""
    np.abs(psi, out=out)
