"""FFT / array back-ends for BCDI phase retrieval.

``scipy`` (default on CPU): ``scipy.fft`` on all cores (or :func:`set_threads`) with
``overwrite_x=True``, complex64 in and out; the elementwise steps as fused
numba kernels (:mod:`.fused`). ``cupy`` (chosen automatically by
``get_backend("auto")`` when CuPy imports and a CUDA device is present):
``cupy.fft`` and ``cupyx.scipy.ndimage`` on the GPU.

Every back-end exposes the same small surface: ``xp`` (the array module),
``fftn``/``ifftn`` (may work in place: always use the return value),
``gaussian_filter``, ``asarray`` (to the device), ``asnumpy`` (to host) and
``map_blocks(fn, *arrays)``, which applies an in-place elementwise function
to matching blocks of same-shaped arrays. On the CPU the blocks are cache
sized (about 0.5 MB of complex64) and spread over all cores with threads
(numpy releases the GIL), so a chain of in-place ufuncs runs from cache in
parallel instead of streaming each full array through memory once per ufunc.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Target number of elements per cache block of the CPU back-end.
BLOCK_ELEMENTS = 1 << 16
#: Arrays smaller than this are processed in one call (threads would not pay).
MIN_PARALLEL_ELEMENTS = 1 << 19

__all__ = ["Backend", "get_backend", "cupy_available", "set_threads", "threads"]


@dataclass(frozen=True)
class Backend:
    """A set of array functions phase retrieval runs on.

    Attributes
    ----------
    name : str
        ``"scipy"`` or ``"cupy"``.
    xp : module
        ``numpy`` or ``cupy``.
    fftn, ifftn : callable
        Unnormalised forward / ``1/N``-normalised inverse n-dimensional FFT;
        they may reuse the input buffer.
    gaussian_filter : callable
        ``gaussian_filter(real_array, sigma)`` in voxels.
    asarray, asnumpy : callable
        Move an array to / from the back-end's memory.
    map_blocks : callable
        ``map_blocks(fn, *arrays)``: an in-place elementwise ``fn`` over
        matching blocks (cache-sized, threaded on the CPU; whole arrays on a GPU).
    kernels : dict
        Fused replacements for phase retrieval's elementwise steps, by name
        (``modulus``, ``modulus_free``, ``update``, ``weights``), same signatures as the
        numpy versions in :mod:`braggscope.analysis.bcdi.projections`; missing names use
        those.
    """

    name: str
    xp: Any
    fftn: Callable
    ifftn: Callable
    gaussian_filter: Callable
    asarray: Callable
    asnumpy: Callable
    map_blocks: Callable = field(default=None)
    kernels: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.map_blocks is None:
            object.__setattr__(self, "map_blocks", _whole)


def _whole(fn, *arrays):
    fn(*arrays)


_POOL: ThreadPoolExecutor | None = None
_CPUS = os.cpu_count() or 1


def set_threads(n: int | None) -> None:
    """Threads the CPU back-end uses in this process (FFTs, blocks); None: all cores.

    A Dask worker runs its starts with its own thread count (one start per
    thread), so that W workers on W cores do not oversubscribe them. The
    results do not depend on it (the FFTs and kernels give the same bits).
    """
    global _CPUS, _POOL
    n = (os.cpu_count() or 1) if n is None else int(n)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    if n != _CPUS:
        _CPUS = n
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        _POOL = None


def threads() -> int:
    """Threads the CPU back-end uses (see :func:`set_threads`)."""
    return _CPUS


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_CPUS, thread_name_prefix="bcdi")
    return _POOL


def _cpu_map_blocks(fn, *arrays):
    """Apply ``fn`` to blocks (along axis 0) of same-shaped C-contiguous arrays, in threads.

    ``fn`` must work in place on its arguments (views) and touch nothing else.
    """
    a0 = arrays[0]
    if a0.size < MIN_PARALLEL_ELEMENTS or a0.ndim == 0:
        fn(*arrays)
        return
    n0 = a0.shape[0]
    per_row = max(1, a0.size // n0)
    step = max(1, BLOCK_ELEMENTS // per_row)
    workers = max(1, min(_CPUS, n0))
    bounds = [n0 * k // workers for k in range(workers + 1)]  # several calls per iteration: no numpy.linspace

    def work(lo, hi):
        for i in range(lo, hi, step):
            j = min(i + step, hi)
            fn(*(a[i:j] for a in arrays))

    futures = [_pool().submit(work, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    for f in futures:
        f.result()


def _scipy_backend() -> Backend:
    import scipy.fft as sfft
    from scipy.ndimage import gaussian_filter

    def fftn(a):
        return sfft.fftn(a, workers=_CPUS, overwrite_x=True)

    def ifftn(a):
        return sfft.ifftn(a, workers=_CPUS, overwrite_x=True)

    from .fused import kernels

    return Backend("scipy", np, fftn, ifftn, gaussian_filter, np.asarray, np.asarray, _cpu_map_blocks,
                   kernels=kernels())


def cupy_available() -> bool:
    """True when CuPy imports and at least one CUDA device answers."""
    try:
        import cupy  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError, missing driver ...
        return False


def _cupy_backend() -> Backend:
    import cupy
    from cupyx.scipy.ndimage import gaussian_filter

    def fftn(a):
        return cupy.fft.fftn(a)

    def ifftn(a):
        return cupy.fft.ifftn(a)

    return Backend("cupy", cupy, fftn, ifftn, gaussian_filter, cupy.asarray, cupy.asnumpy,
                   kernels=_cupy_kernels())


_CUPY_KERNELS: dict | None = None


def _cupy_kernels() -> dict:
    """One GPU pass per step instead of one per numpy ufunc (and no float32 temporaries)."""
    global _CUPY_KERNELS
    if _CUPY_KERNELS is None:
        import cupy

        modulus = cupy.ElementwiseKernel(
            "float32 amp, float32 eps", "complex64 psi",
            "psi = psi * (amp / fmaxf(abs(psi), eps))", "braggscope_modulus")
        modulus_free = cupy.ElementwiseKernel(
            "float32 amp, bool free, float32 eps", "complex64 psi",
            "if (!free) psi = psi * (amp / fmaxf(abs(psi), eps))", "braggscope_modulus_free")
        update = cupy.ElementwiseKernel(
            "float32 w_new, float32 w_prev", "complex64 psi, complex64 prev",
            "psi = psi * w_new + prev; prev = psi * w_prev", "braggscope_update")
        _CUPY_KERNELS = {
            "modulus": lambda psi, amp, eps: modulus(amp, np.float32(eps), psi),
            "modulus_free": lambda psi, amp, free, eps: modulus_free(amp, free, np.float32(eps), psi),
            "update": lambda psi, w_new, prev, w_prev: update(w_new, w_prev, psi, prev),
        }
    return _CUPY_KERNELS


def get_backend(name: str | Backend = "auto") -> Backend:
    """Return a back-end by name.

    Parameters
    ----------
    name : {"auto", "scipy", "numpy", "cupy"} or Backend
        ``"auto"`` picks CuPy when a GPU is usable, else scipy. ``"numpy"`` is
        an alias of ``"scipy"``.

    Raises
    ------
    ValueError
        Unknown ``name``, or ``"cupy"`` asked for without a usable GPU.
    """
    if isinstance(name, Backend):
        return name
    key = str(name).lower()
    if key == "auto":
        return _cupy_backend() if cupy_available() else _scipy_backend()
    if key in ("scipy", "numpy", "cpu"):
        return _scipy_backend()
    if key in ("cupy", "gpu"):
        if not cupy_available():
            raise ValueError("backend='cupy' needs CuPy and a CUDA device; none is usable here")
        return _cupy_backend()
    raise ValueError(f"backend must be 'auto', 'scipy' or 'cupy', got {name!r}")
