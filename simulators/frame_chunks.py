"""Detector frames composed from pre-compressed background chunks (the simulated Maxipix's fast path).

In external-trigger mode (fly scans) the simulated Maxipix writes hundreds of
frames per second. Most of a SXDM frame is flat background (Poisson counts of
``background_rate * exposure``, under one count per pixel); drawing, compressing and
summing it afresh for every frame costs far more than the peak. Frames are therefore
stored in row-block chunks (``(1, chunk_rows, cols)``, as the areaDetector HDF5
plugin's ``NumRowChunks`` does) and composed from a pool of background chunks drawn
once per background mean and compressed once (Blosc LZ4 + bit-shuffle, the HDF5
filter 32001 of hdf5plugin, written with ``write_direct_chunk``); only the chunks the
signal reaches are copied, filled with their fresh counts and compressed. Each
chunk also carries its row and column sums and maximum, so the frame's statistics
(``Stats1:``) cost no pass over the frame.

Statistics: every pixel is an exact Poisson draw of its expected count (a pool chunk
is a Poisson draw of the background; the signal pixels are drawn afresh). Frames are
weakly correlated: two frames share the same background chunk at a given position
with probability ``1 / pool_chunks`` (the pool is redrawn with :meth:`ChunkPool.refresh`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

__all__ = ["BLOSC_OPTIONS", "ChunkedFrame", "ChunkPool", "blosc_compressor", "chunk_rows_for", "frame_stats"]

#: The compression of the fly-scan frames: Blosc LZ4, level 5, bit-shuffle (hdf5plugin's filter 32001).
BLOSC_OPTIONS = {"cname": "lz4", "clevel": 5}


def blosc_compressor():
    """A Blosc LZ4 bit-shuffle compressor (numcodecs, c-blosc 1: the chunk format of the HDF5 Blosc
    filter), or None when numcodecs is not installed (the detector then writes through h5py's filter)."""
    try:
        from numcodecs import Blosc
    except ImportError:  # pragma: no cover - numcodecs comes with zarr (tiled's server)
        return None
    return Blosc(cname=BLOSC_OPTIONS["cname"], clevel=BLOSC_OPTIONS["clevel"], shuffle=Blosc.BITSHUFFLE)


def hdf5_filter() -> dict:
    """h5py keywords of the same compression for ``create_dataset`` (hdf5plugin.Blosc)."""
    import hdf5plugin

    return dict(hdf5plugin.Blosc(cname=BLOSC_OPTIONS["cname"], clevel=BLOSC_OPTIONS["clevel"],
                                 shuffle=hdf5plugin.Blosc.BITSHUFFLE))


def chunk_rows_for(rows: int, cols: int, target_chunks: int = 6, min_rows: int = 16) -> int:
    """Rows per chunk: the largest divisor of ``rows`` not above ``max(min_rows, ceil(rows / target_chunks))``
    whose chunk holds a multiple of 8 pixels (516 x 516 -> 86, 512 x 512 -> 64, 128 x 128 -> 16).

    Every chunk is then whole, and bit-shuffle (which works on groups of 8 values)
    covers all of it: a 43-row chunk of 516 columns compresses 2.7 x instead of 15 x.
    """
    rows, cols = int(rows), int(cols)
    limit = min(rows, max(min_rows, math.ceil(rows / target_chunks)))
    divisors = [d for d in range(1, limit + 1) if rows % d == 0]
    whole = [d for d in divisors if (d * cols) % 8 == 0]
    return max(whole or divisors)


def frame_stats(frame: np.ndarray) -> dict[str, float]:
    """Total counts, intensity centroid (pixels; x = column, y = row) and maximum.

    The centroid of an empty frame is NaN.
    """
    data = np.asarray(frame)
    # centroids from the row and column profiles: no float64 copy of the frame and no index grids;
    # integer frames summed in 64-bit integers (exact, and half the time of float64 sums)
    acc = np.uint64 if data.dtype.kind == "u" else np.int64 if data.dtype.kind in "bi" else np.float64
    return _stats(data.sum(axis=1, dtype=acc).astype(np.float64), data.sum(axis=0, dtype=acc).astype(np.float64),
                  float(data.max(initial=0)))


def _stats(row_sums, col_sums, peak) -> dict[str, float]:
    total = float(row_sums.sum())
    if total > 0:
        cy = float(row_sums @ np.arange(row_sums.size)) / total
        cx = float(col_sums @ np.arange(col_sums.size)) / total
    else:
        cy = cx = float("nan")
    return {"total": total, "centroid_x": cx, "centroid_y": cy, "max": float(peak)}


@dataclass
class _Chunk:
    data: np.ndarray  # (chunk_rows, cols) uint32
    payload: bytes  # compressed
    row_sums: np.ndarray
    col_sums: np.ndarray
    peak: float

    @classmethod
    def of(cls, data, compressor):
        return cls(data, bytes(compressor.encode(data)), data.sum(axis=1, dtype=np.float64),
                   data.sum(axis=0, dtype=np.float64), float(data.max(initial=0)))


@dataclass
class ChunkedFrame:
    """One frame as compressed row-block chunks (in order) with its statistics."""

    chunks: list
    stats: dict

    @property
    def payloads(self) -> list:
        return [c.payload for c in self.chunks]

    def frame(self) -> np.ndarray:
        """The whole frame (uint32), assembled from the chunks."""
        return np.concatenate([c.data for c in self.chunks], axis=0)


class ChunkPool:
    """Pre-drawn, pre-compressed Poisson background chunks, and frames composed from them.

    Parameters
    ----------
    shape : (int, int)
        Frame shape (rows, cols).
    compressor : numcodecs codec
        Encodes a chunk (``encode(ndarray) -> bytes``), see :func:`blosc_compressor`.
    rng : numpy.random.Generator
    pool_chunks : int
        Background chunks drawn per background mean.
    chunk_rows : int, optional
        Default :func:`chunk_rows_for` of the rows.
    max_means : int
        Background means kept (one per exposure time in use).
    """

    def __init__(self, shape, compressor, rng, *, pool_chunks: int = 96, chunk_rows: int | None = None,
                 max_means: int = 2):
        self.shape = (int(shape[0]), int(shape[1]))
        self.chunk_rows = int(chunk_rows or chunk_rows_for(*self.shape))
        if self.shape[0] % self.chunk_rows:
            raise ValueError(f"chunk_rows {self.chunk_rows} must divide the frame's {self.shape[0]} rows")
        if int(pool_chunks) < 2:
            raise ValueError(f"pool_chunks must be >= 2, got {pool_chunks!r}")
        self.n_chunks = self.shape[0] // self.chunk_rows
        self.compressor, self.rng = compressor, rng
        self.pool_chunks, self.max_means = int(pool_chunks), int(max_means)
        self._pools: OrderedDict = OrderedDict()

    @property
    def chunk_shape(self) -> tuple[int, int, int]:
        """The HDF5 chunk shape ``(1, chunk_rows, cols)``."""
        return (1, self.chunk_rows, self.shape[1])

    def refresh(self) -> None:
        """Forget every pool (new draws on next use)."""
        self._pools.clear()

    def pool(self, mean: float) -> list:
        """The background chunks of a mean (drawn and compressed on first use)."""
        key = round(float(mean), 12)
        chunks = self._pools.get(key)
        if chunks is None:
            if not (mean >= 0 and np.isfinite(mean)):
                raise ValueError(f"background mean must be finite and >= 0, got {mean!r}")
            draws = self.rng.poisson(mean, (self.pool_chunks, self.chunk_rows, self.shape[1])).astype(np.uint32)
            chunks = [_Chunk.of(d, self.compressor) for d in draws]
            self._pools[key] = chunks
            while len(self._pools) > self.max_means:
                self._pools.popitem(last=False)
        else:
            self._pools.move_to_end(key)
        return chunks

    def compose(self, background: float, flat: np.ndarray, counts: np.ndarray) -> ChunkedFrame:
        """A frame: Poisson(``background``) everywhere but the pixels ``flat`` (flat indices), set to ``counts``."""
        pool = self.pool(background)
        picks = self.rng.integers(0, len(pool), self.n_chunks)
        chunks = [pool[i] for i in picks]
        if len(flat):
            per_chunk = self.chunk_rows * self.shape[1]
            owner = np.asarray(flat) // per_chunk
            bounds = np.searchsorted(owner, np.arange(self.n_chunks + 1))  # flat is sorted
            for c in np.flatnonzero(np.diff(bounds)):
                lo, hi = bounds[c], bounds[c + 1]
                chunks[c] = self._fill(chunks[c], flat[lo:hi] - c * per_chunk, counts[lo:hi])
        return ChunkedFrame(chunks, self._frame_stats(chunks))

    def _fill(self, base: _Chunk, index, counts) -> _Chunk:
        """``base`` with the pixels ``index`` (flat, in the chunk) set to ``counts``; sums updated from the
        changed pixels alone."""
        data = base.data.copy()
        flat = data.reshape(-1)
        change = counts.astype(np.float64) - flat[index]
        flat[index] = counts
        rows, cols = np.divmod(index, data.shape[1])
        row_sums = base.row_sums + np.bincount(rows, change, minlength=data.shape[0])
        col_sums = base.col_sums + np.bincount(cols, change, minlength=data.shape[1])
        return _Chunk(data, bytes(self.compressor.encode(data)), row_sums, col_sums, float(data.max()))

    def split(self, frame: np.ndarray) -> ChunkedFrame:
        """A whole frame (any renderer) cut into chunks and compressed."""
        frame = np.ascontiguousarray(frame, dtype=np.uint32)
        if frame.shape != self.shape:
            raise ValueError(f"frame shape {frame.shape}, expected {self.shape}")
        chunks = [_Chunk.of(frame[i * self.chunk_rows:(i + 1) * self.chunk_rows], self.compressor)
                  for i in range(self.n_chunks)]
        return ChunkedFrame(chunks, self._frame_stats(chunks))

    @staticmethod
    def _frame_stats(chunks) -> dict:
        col_sums = chunks[0].col_sums.copy()
        for c in chunks[1:]:
            col_sums += c.col_sums
        return _stats(np.concatenate([c.row_sums for c in chunks]), col_sums, max(c.peak for c in chunks))
