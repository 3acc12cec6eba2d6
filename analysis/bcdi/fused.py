"""Fused CPU kernels of the phase-retrieval steps (numba, GIL released).

The numpy steps of :mod:`.projections` chain four or five ufuncs, each a
pass over the block; these do the same arithmetic in one pass, like the
CuPy ``ElementwiseKernel``s of the GPU back-end. They have the signatures of
the numpy steps and run on the cache-sized blocks that
:meth:`.backend.Backend.map_blocks` spreads over the cores (hence serial
loops, ``nogil``). A block that is not C-contiguous (never the case inside
phase retrieval) goes to the numpy step instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import projections

__all__ = ["kernels"]


@njit(nogil=True, cache=True)
def _modulus(psi, amp, eps):
    for i in range(psi.size):
        p = psi[i]
        # sqrt(re^2 + im^2): hypot's overflow guard is not needed for photon amplitudes in float32
        r = amp[i] / max(np.sqrt(p.real * p.real + p.imag * p.imag), eps)
        psi[i] = p * r


@njit(nogil=True, cache=True)
def _modulus_free(psi, amp, free, eps):
    for i in range(psi.size):
        if not free[i]:
            p = psi[i]
            r = amp[i] / max(np.sqrt(p.real * p.real + p.imag * p.imag), eps)
            psi[i] = p * r


@njit(nogil=True, cache=True)
def _update(psi, w_new, prev, w_prev):
    for i in range(psi.size):
        p = psi[i] * w_new[i] + prev[i]
        psi[i] = p
        prev[i] = p * w_prev[i]


def _flat(*arrays):
    """1-D views of C-contiguous arrays, or None if one is not contiguous."""
    if not all(a.flags.c_contiguous for a in arrays):
        return None
    return [a.reshape(-1) for a in arrays]


def modulus(psi, amp, eps):
    """In place: ``psi *= amp / max(|psi|, eps)`` (as :func:`.projections.modulus`)."""
    flat = _flat(psi, amp)
    if flat is None:
        return projections.modulus(psi, amp, eps)
    _modulus(*flat, np.float32(eps))


def modulus_free(psi, amp, free, eps):
    """As :func:`modulus`, leaving unmeasured voxels (``free``) unchanged."""
    flat = _flat(psi, amp, free)
    if flat is None:
        return projections.modulus_free(psi, amp, free, eps)
    _modulus_free(*flat, np.float32(eps))


def update(psi, w_new, prev, w_prev):
    """HIO/RAAR: ``psi = w_new psi + prev`` then ``prev = w_prev psi`` (as :func:`.projections.update`)."""
    flat = _flat(psi, w_new, prev, w_prev)
    if flat is None:
        return projections.update(psi, w_new, prev, w_prev)
    _update(*flat)


def kernels() -> dict:
    """The fused kernels by step name, for ``Backend.kernels``."""
    return {"modulus": modulus, "modulus_free": modulus_free, "update": update}
