"""Reduce a :class:`~braggscope.core.stacks.MapStack` (from a file, the catalog or the simulator).

:func:`reduce_map` takes the geometry, map axes and pixel mask from the stack, checks every
block it reads (:class:`~braggscope.analysis.readers.CheckedStack`) and calls
:func:`~braggscope.analysis.sxdm.reduce_stack`.
"""

from __future__ import annotations

from braggscope.analysis.readers.checks import CheckedStack
from braggscope.analysis.sxdm.drift import apply_drift
from braggscope.analysis.sxdm.reduce import reduce_stack
from braggscope.core.stacks import MapStack

__all__ = ["reduce_map"]


def reduce_map(stack: MapStack, *, check: bool = True, **kwargs):
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
    **kwargs
        Passed to :func:`braggscope.analysis.sxdm.reduce_stack` (threshold,
        background, median, roi, shifts are applied first if ``shifts=`` is
        given, ...).

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
    shifts = kwargs.pop("shifts", None)
    if shifts is not None:
        frames = apply_drift(frames, shifts)
    delta, nu, phi = stack.angles()
    maps = reduce_stack(frames, stack.eta, setup.geometry(), delta, nu, phi, **kwargs)
    if checked is not None:
        checked.finish()
    maps.attrs["source"] = str(stack.source)
    return maps
