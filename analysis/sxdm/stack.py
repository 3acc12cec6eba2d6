"""Reduce a :class:`~braggscope.core.stacks.MapStack` (from a file, the catalog or the simulator).

:func:`reduce_map` takes the geometry, map axes and pixel mask from the stack, checks every
block it reads (:class:`~braggscope.analysis.readers.CheckedStack`) and calls
:func:`~braggscope.analysis.sxdm.reduce_stack`.
"""

from __future__ import annotations

import numpy as np

from braggscope.analysis.readers.checks import CheckedStack
from braggscope.analysis.sxdm.drift import DriftRegistration, measure_drift
from braggscope.analysis.sxdm.reduce import integrate_eta_maps, reduce_stack
from braggscope.core.errors import ArgumentError
from braggscope.core.stacks import MapStack

__all__ = ["reduce_map", "register_map_drift", "drift_signal", "stack_monitor"]


def reduce_map(stack: MapStack, *, check: bool = True, monitor="auto", **kwargs):
    """Reduce an SXDM map stack.

    Parameters
    ----------
    stack : MapStack
        From ``braggscope.storage.sxdm_stack(run)``, :func:`read_bliss`, :func:`read_xsocs` or
        the simulator; its ``setup`` gives the geometry, its ``x``/``y`` the map axes (um) and its
        pixel mask the pixels to ignore.
    check : bool
        Check every block read (:class:`~braggscope.analysis.readers.CheckedStack`):
        refuse complex, NaN/inf, all-zero or mostly negative frames, read a few
        negative values as 0 with a :class:`~braggscope.core.errors.DataWarning`.
        Skipped with a distributed ``scheduler`` (the checks count in this process).
    monitor : "auto", str, array-like or None
        Normalisation: ``"auto"`` by the stack's own monitor (:attr:`MapStack.monitor`, none if
        it has none), a counter's name (``"mon1"``), readings ``(n_eta, ny, nx)``/``(n_eta,)``, or
        None for none. Points with monitor 0 (no beam) are left out.
    **kwargs
        Passed to :func:`braggscope.analysis.sxdm.reduce_stack` (threshold,
        background, median, roi, shifts, ...).

    Returns
    -------
    xarray.Dataset (see ``reduce_stack``), with ``attrs["source"]`` the stack's source.

    Raises
    ------
    BadDataError
        Frames that cannot be reduced (see :mod:`braggscope.analysis.readers.checks`).
    InputError
        The stack lacks a setup field (named).
    """
    setup = stack.require_setup()
    frames = stack.frames
    kwargs.setdefault("x", stack.x)
    kwargs.setdefault("y", stack.y)
    if setup.pixel_mask is not None:
        kwargs.setdefault("pixel_mask", setup.pixel_mask)
    scheduler = kwargs.get("scheduler", "threads")
    checked = None
    if check and isinstance(scheduler, str) and scheduler in ("threads", "sync"):
        checked = frames if isinstance(frames, CheckedStack) else \
            CheckedStack(frames, stack.source or "frames", pixel_mask=kwargs.get("pixel_mask"))
        frames = checked
    values, name = stack_monitor(stack, monitor)
    if values is not None:
        kwargs.update(monitor=values, monitor_name=kwargs.get("monitor_name") or name)
    delta, nu, phi = stack.angles()
    maps = reduce_stack(frames, stack.eta, setup.geometry(), delta, nu, phi, **kwargs)
    if checked is not None:
        checked.finish()
    maps.attrs["source"] = str(stack.source)
    return maps


def stack_monitor(stack: MapStack, monitor="auto"):
    """``(readings, name)`` of the monitor to normalise by, or ``(None, None)``.

    ``monitor`` as for :func:`reduce_map`; a name the stack has not recorded is an
    :class:`~braggscope.core.errors.ArgumentError` listing the counters it has.
    """
    if monitor is None or monitor is False:
        return None, None
    if isinstance(monitor, str):
        if monitor == "auto":
            return (None, None) if stack.monitor is None else (stack.monitor_values(), stack.monitor)
        if monitor not in stack.counters:
            raise ArgumentError(f"monitor {monitor!r}: {stack.source or 'the stack'} records no such counter "
                                f"(counters: {', '.join(sorted(stack.counters)) or 'none'})")
        return stack.counter(monitor), monitor
    return np.asarray(monitor, dtype=float), "monitor"


def register_map_drift(stack: MapStack, *, signal: str = "auto", monitor="auto", upsample: int = 10,
                       min_confidence: float = 0.5, progress: bool = True) -> DriftRegistration:
    """The drift between the angles of a map stack, on the signal that suits it.

    Parameters
    ----------
    stack : MapStack
    signal : str
        ``"auto"``: the stack's fluorescence counter (:attr:`MapStack.fluorescence`) when it has
        one, else the Bragg intensity; ``"bragg"``: the integrated Bragg intensity; or a counter's
        name (``"ct_fluo"``, ``"xrf_counts"``).
    monitor : "auto", str, array-like or None
        As for :func:`reduce_map`: the signal is divided by it (no-beam points are missing data).
    upsample, min_confidence
        As for :func:`~braggscope.analysis.sxdm.drift.measure_drift`.
    progress : bool
        A progress bar while the Bragg intensity is integrated.

    Returns
    -------
    DriftRegistration
        ``signal`` says which was used; a fluorescence signal registers every angle on the middle
        one by plain cross-correlation, the Bragg intensity each angle on its neighbour by phase
        correlation.
    """
    maps, label, fluorescence = drift_signal(stack, signal, progress=progress)
    values, _ = stack_monitor(stack, monitor)
    if values is not None:
        mon = np.broadcast_to(values if values.ndim == 3 else values[:, None, None], maps.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            maps = np.where(mon > 0, maps / mon * np.median(mon[mon > 0]), np.nan)
    # an angle-independent map: every angle on the middle one (no chained errors), plain cross-correlation
    # (phase correlation whitens the noise of a smooth particle map: 0.5 px errors against 0.03 px)
    reference, normalization = (stack.n_eta // 2, None) if fluorescence else ("consecutive", "phase")
    return measure_drift(maps, upsample, reference=reference, normalization=normalization,
                         min_confidence=min_confidence, signal=label)


def drift_signal(stack: MapStack, signal: str = "auto", *, progress: bool = True):
    """``(maps (n_eta, ny, nx), label, angle_independent)`` of the registration signal (see
    :func:`register_map_drift`)."""
    name = stack.fluorescence if signal == "auto" else None if signal == "bragg" else signal
    if name is None:
        setup = stack.require_setup()
        return integrate_eta_maps(stack.frames, pixel_mask=setup.pixel_mask, progress=progress), \
            "Bragg intensity", False
    if name not in stack.counters:
        raise ArgumentError(f"drift signal {name!r}: {stack.source or 'the stack'} records no such counter "
                            f"(counters: {', '.join(sorted(stack.counters)) or 'none'}; or 'bragg')")
    values = stack.counter(name)
    if values.ndim != 3:
        raise ArgumentError(f"drift signal {name!r} is recorded once per angle, not per point: it has no map")
    return values, f"fluorescence ({name})" if name == stack.fluorescence else f"counter {name}", True
