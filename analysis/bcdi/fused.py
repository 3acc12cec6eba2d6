"""Fused CPU kernels of the phase-retrieval steps (numba, GIL released).

The numpy steps of :mod:`.projections` chain four or five ufuncs, each a
pass over the block; these do the same arithmetic in one pass, like the
CuPy ``ElementwiseKernel``s of the GPU back-end. They have the signatures of
the numpy steps and run on the cache-sized blocks that
:meth:`.backend.Backend.map_blocks` spreads over the cores (hence serial
loops, ``nogil``). A block that is not C-contiguous (never the case inside
phase retrieval) goes to the numpy step instead.

``error_model="numpy"``: with numba's default ("python") every division
checks for a zero divisor to raise ``ZeroDivisionError``, which keeps LLVM
from vectorising the loop; the divisor here is at least ``eps`` > 0, so the
check never fires, and without it the modulus runs about 3x faster
(bit-identical results).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import projections

__all__ = ["kernels"]


@njit(nogil=True, cache=True, error_model="numpy")
def _modulus(psi, amp, eps):
    for i in range(psi.size):
        p = psi[i]
        # sqrt(re^2 + im^2): hypot's overflow guard is not needed for photon amplitudes in float32
        r = amp[i] / max(np.sqrt(p.real * p.real + p.imag * p.imag), eps)
        psi[i] = p * r


@njit(nogil=True, cache=True, error_model="numpy")
def _modulus_free(psi, amp, free, eps):
    one = np.float32(1)
    for i in range(psi.size):
        p = psi[i]
        r = amp[i] / max(np.sqrt(p.real * p.real + p.imag * p.imag), eps)
        # a select, not a branch around the store: the loop vectorises (p * 1 is p exactly)
        psi[i] = p * (one if free[i] else r)


@njit(nogil=True, cache=True, error_model="numpy")
def _update(psi, w_new, prev, w_prev):
    for i in range(psi.size):
        p = psi[i] * w_new[i] + prev[i]
        psi[i] = p
        prev[i] = p * w_prev[i]


@njit(nogil=True, cache=True, error_model="numpy")
def _weights(sup, w_new, w_prev, inside_new, outside_new, outside_prev):
    for i in range(sup.size):
        if sup[i]:
            w_new[i] = inside_new
            w_prev[i] = 0
        else:
            w_new[i] = outside_new
            w_prev[i] = outside_prev


@njit(nogil=True, cache=True, error_model="numpy")
def _fourier_error(psi, target):
    s = 0.0  # float64, summed in order: the same value whatever the threads
    for i in range(psi.size):
        p = psi[i]
        d = np.sqrt(p.real * p.real + p.imag * p.imag) - target[i]
        s += d * d
    return s


@njit(nogil=True, cache=True, error_model="numpy")
def _fourier_error_free(psi, target, free):
    s = 0.0
    for i in range(psi.size):
        if not free[i]:
            p = psi[i]
            d = np.sqrt(p.real * p.real + p.imag * p.imag) - target[i]
            s += d * d
    return s


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


def weights(algo, sup, beta, xp):
    """The weights of :func:`.projections.weights` in one pass over ``sup`` (numpy arrays only)."""
    if algo == "ER" or xp is not np or not sup.flags.c_contiguous:
        return projections.weights(algo, sup, beta, xp)
    w_new, w_prev = np.empty(sup.shape, np.float32), np.empty(sup.shape, np.float32)
    _weights(sup.reshape(-1), w_new.reshape(-1), w_prev.reshape(-1), *projections.weight_values(algo, beta))
    return w_new, w_prev


def fourier_error(psi, target, free):
    """``sum (|psi| - target)^2`` over the voxels not ``free`` (float64, one sequential pass)."""
    flat = _flat(psi, target) if free is None else _flat(psi, target, free)
    if flat is None:
        d = (np.abs(psi) - target).astype(np.float64) ** 2
        return float(np.sum(d if free is None else d[~free]))
    return float(_fourier_error(*flat) if free is None else _fourier_error_free(*flat))


def kernels() -> dict:
    """The fused kernels by step name, for ``Backend.kernels``."""
    return {"modulus": modulus, "modulus_free": modulus_free, "update": update, "weights": weights,
            "fourier_error": fourier_error}
