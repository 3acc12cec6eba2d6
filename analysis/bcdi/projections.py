"""Elementwise steps of ER, HIO and RAAR: the modulus projection and the support update.

Every step works in place, on whole arrays or on matching blocks
(:meth:`.backend.Backend.map_blocks`): numpy ufuncs, which dispatch to CuPy
through ``__array_ufunc__`` on a GPU, where the back-end may replace them by
fused kernels of the same signature (``Backend.kernels``).

One iteration is ``x -> w_new P_M(x) + w_prev x`` in real space, with
``P_M`` the modulus projection (:func:`modulus`) and the weights of
:func:`weights`; :func:`update` applies it and keeps ``prev = w_prev x`` for
the next iteration, so no full-array temporary is made per iteration.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["modulus", "modulus_free", "update", "update_er", "weights", "weight_values"]

_LOCAL = threading.local()


def _scratch(psi):
    """A float32 work array shaped like ``psi``: thread-local and reused for numpy blocks
    (stays in cache, never written back as a full array), freshly allocated on a GPU."""
    if not isinstance(psi, np.ndarray):
        import cupy

        return cupy.empty(psi.shape, dtype=np.float32)
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or buf.size < psi.size:
        buf = _LOCAL.buf = np.empty(psi.size, np.float32)
    return buf[: psi.size].reshape(psi.shape)


def modulus(psi, amp, eps):
    """In place: ``psi *= amp / max(|psi|, eps)``."""
    tmp = _scratch(psi)
    np.abs(psi, out=tmp)
    np.maximum(tmp, eps, out=tmp)
    np.divide(amp, tmp, out=tmp)
    np.multiply(psi, tmp, out=psi)


def modulus_free(psi, amp, free, eps):
    """As :func:`modulus`, leaving unmeasured voxels (``free``) unchanged."""
    tmp = _scratch(psi)
    np.abs(psi, out=tmp)
    np.maximum(tmp, eps, out=tmp)
    np.divide(amp, tmp, out=tmp)
    np.copyto(tmp, np.float32(1.0), where=free)
    np.multiply(psi, tmp, out=psi)


def update_er(psi, w_new):
    """ER: ``psi *= support``."""
    np.multiply(psi, w_new, out=psi)


def update(psi, w_new, prev, w_prev):
    """HIO/RAAR: ``psi = w_new psi + prev`` then ``prev = w_prev psi`` (prev holds the weighted iterate)."""
    np.multiply(psi, w_new, out=psi)
    np.add(psi, prev, out=psi)
    np.multiply(psi, w_prev, out=prev)


def weights(algo, sup, beta, xp):
    """Weights of the projected and previous objects: new = w_new P_M(x) + w_prev x.

    ER: P_S P_M x. HIO: P_M x in S, x - beta P_M x outside. RAAR (Luke 2005):
    P_M x in S, beta x + (1 - 2 beta) P_M x outside. ``w_prev`` is None for ER.
    """
    s = sup.astype(np.float32)
    if algo == "ER":
        return s, None
    ns = np.float32(1) - s
    if algo == "HIO":
        return s - np.float32(beta) * ns, ns
    return s + np.float32(1 - 2 * beta) * ns, np.float32(beta) * ns


def weight_values(algo, beta):
    """The values :func:`weights` takes for HIO or RAAR, as float32: (w_new inside the support,
    w_new outside, w_prev outside); w_prev is 0 inside."""
    if algo == "HIO":
        return np.float32(1), -np.float32(beta), np.float32(1)
    if algo == "RAAR":
        return np.float32(1), np.float32(1 - 2 * beta), np.float32(beta)
    raise ValueError(f"weight_values is for HIO and RAAR, got {algo!r}")
