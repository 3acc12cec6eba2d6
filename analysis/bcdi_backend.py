"""FFT / array back-ends for BCDI phase retrieval.

``scipy`` (default on CPU): ``scipy.fft`` on all cores (``workers=-1``) with
``overwrite_x=True``, complex64 in and out. ``cupy`` (chosen automatically by
``get_backend("auto")`` when CuPy imports and a CUDA device is present):
``cupy.fft`` and ``cupyx.scipy.ndimage`` on the GPU.

Every back-end exposes the same small surface: ``xp`` (the array module),
``fftn``/``ifftn`` (may work in place: always use the return value),
``gaussian_filter``, ``asarray`` (to the device) and ``asnumpy`` (to host).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["Backend", "get_backend", "cupy_available"]


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
    """

    name: str
    xp: Any
    fftn: Callable
    ifftn: Callable
    gaussian_filter: Callable
    asarray: Callable
    asnumpy: Callable


def _scipy_backend() -> Backend:
    import scipy.fft as sfft
    from scipy.ndimage import gaussian_filter

    def fftn(a):
        return sfft.fftn(a, workers=-1, overwrite_x=True)

    def ifftn(a):
        return sfft.ifftn(a, workers=-1, overwrite_x=True)

    return Backend("scipy", np, fftn, ifftn, gaussian_filter, np.asarray, np.asarray)


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

    return Backend("cupy", cupy, fftn, ifftn, gaussian_filter, cupy.asarray, cupy.asnumpy)


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
