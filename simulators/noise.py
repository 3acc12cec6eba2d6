"""Fast Poisson counting noise for detector frames.

Drawing ``np.random.poisson`` on all 262144 pixels of a Maxipix frame costs
several milliseconds, more than the whole rest of a frame. The flat
background of a frame is instead taken from a cached pool of Poisson draws of
that mean (a contiguous slice at a random offset of a pool four frames long),
and only the pixels where signal was added get fresh draws. Each frame is
exactly Poisson-distributed pixel by pixel; frames are weakly correlated
(two frames share a background value in a given pixel with probability ~1/pool
length in frames); regenerate the pool with :meth:`PoissonPool.refresh`.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = ["PoissonPool"]


class PoissonPool:
    """Cached Poisson(mean) values used as frame backgrounds.

    Parameters
    ----------
    rng : numpy.random.Generator
    pool_frames : int
        Pool length in frames.
    max_means : int
        Number of distinct background means kept.
    """

    def __init__(self, rng: np.random.Generator, pool_frames: int = 4, max_means: int = 8):
        if pool_frames < 2:
            raise ValueError(f"pool_frames must be >= 2, got {pool_frames!r}")
        self.rng = rng
        self.pool_frames = int(pool_frames)
        self.max_means = int(max_means)
        self._pools: OrderedDict = OrderedDict()

    def refresh(self) -> None:
        """Forget every pool (new draws on next use)."""
        self._pools.clear()

    def _pool(self, mean: float, size: int) -> np.ndarray:
        key = (round(float(mean), 9), int(size))
        pool = self._pools.get(key)
        if pool is None:
            pool = self.rng.poisson(mean, size * self.pool_frames).astype(np.uint32)
            self._pools[key] = pool
            while len(self._pools) > self.max_means:
                self._pools.popitem(last=False)
        else:
            self._pools.move_to_end(key)
        return pool

    def background(self, mean: float, shape) -> np.ndarray:
        """A uint32 frame of Poisson(``mean``) counts (a fresh writable copy).

        Parameters
        ----------
        mean : float
            Expected counts per pixel (>= 0).
        shape : (int, int)
        """
        mean = float(mean)
        if not mean >= 0 or not np.isfinite(mean):
            raise ValueError(f"background mean must be finite and >= 0, got {mean!r}")
        size = int(np.prod(shape))
        if mean == 0:
            return np.zeros(shape, dtype=np.uint32)
        pool = self._pool(mean, size)
        off = int(self.rng.integers(0, pool.size - size + 1))
        return pool[off : off + size].reshape(shape).copy()
