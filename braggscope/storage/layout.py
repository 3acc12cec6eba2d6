"""Which runs are SXDM maps, and where each event of a map belongs.

A map is a rocking angle outermost, then a slow and a fast piezo axis, one
event per point. Two kinds of run are maps:

* ``sxdm_map`` and ``sxdm_fly`` (braggscope): the start document's ``raster``, ``shape`` and
  ``eta``; a snake restarts with a forward row at every angle (scope ``"map"``);
* bluesky's ``grid_scan`` / ``list_grid_scan`` over three motors (rocking,
  slow, fast): ``motors``, ``shape``, ``extents``, ``snaking`` or the
  position lists of ``plan_args``; a snaked fast axis alternates across the
  whole run (scope ``"run"``); a snaked slow axis is not a map.

:func:`map_layout` turns a start document into a :class:`MapLayout` or says
in one line why the run is not a map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from braggscope.core.errors import UserError

__all__ = ["MapLayout", "NotAMap", "map_layout", "raster_order"]

_GRID_PLANS = ("grid_scan", "rel_grid_scan", "list_grid_scan")


class NotAMap(UserError, ValueError):
    """The run is not an SXDM map (the message says why, in one line)."""


@dataclass(frozen=True)
class MapLayout:
    """Trajectory of a map run.

    Attributes
    ----------
    shape : (int, int, int)
        ``(n_eta, ny, nx)``.
    eta, y, x : ndarray
        Rocking angles (deg) and nominal slow / fast positions (um, before
        any eccentricity correction).
    rocking, slow, fast : str
        Motor names.
    snake : bool
        Whether the fast axis alternates direction row by row.
    snake_scope : {"map", "run"}
        ``"map"``: rows counted afresh at every angle (``sxdm_map``);
        ``"run"``: counted across the run (bluesky ``grid_scan``).
    """

    shape: tuple[int, int, int]
    eta: np.ndarray
    y: np.ndarray
    x: np.ndarray
    rocking: str = "eta"
    slow: str = "piy"
    fast: str = "pix"
    snake: bool = False
    snake_scope: str = "map"

    @property
    def num_points(self) -> int:
        return int(np.prod(self.shape))

    def order(self) -> np.ndarray:
        """Event index of every point, shape ``(n_eta, ny, nx)`` (see :func:`raster_order`)."""
        return raster_order(*self.shape, self.snake, scope=self.snake_scope)


def map_layout(start: dict) -> MapLayout:
    """The :class:`MapLayout` of a run from its start document.

    Raises
    ------
    NotAMap
        One line naming the run's plan and why it is not a map.
    """
    plan = start.get("plan_name")
    if plan in ("sxdm_map", "sxdm_fly") or (plan is None and "raster" in start):  # or a hand-made map description
        return _sxdm_layout(start)
    if plan in _GRID_PLANS:
        return _grid_layout(start, plan)
    raise NotAMap(f"a {plan or 'plan without a name'!r} run is not an SXDM map "
                  "(sxdm_map, or a grid_scan over rocking angle, slow and fast piezo axes)")


def raster_order(n_eta: int, ny: int, nx: int, snake: bool, *, scope: str = "map") -> np.ndarray:
    """Event index of every raster point, shape ``(n_eta, ny, nx)``.

    The acquisition order is eta outermost, then y, then x; with ``snake``
    the odd rows run from high x to low, rows counted afresh at every eta
    (``scope="map"``) or across the whole run (``scope="run"``).
    """
    if scope not in ("map", "run"):
        raise ValueError(f"scope must be 'map' or 'run', got {scope!r}")
    idx = np.arange(n_eta * ny * nx).reshape(n_eta, ny, nx)
    if snake:
        rows = idx.reshape(n_eta * ny, nx) if scope == "run" else None
        if rows is not None:
            rows[1::2] = rows[1::2, ::-1]
        else:
            idx[:, 1::2, :] = idx[:, 1::2, ::-1]
    return idx


def _sxdm_layout(start) -> MapLayout:
    try:
        n_eta, ny, nx = (int(v) for v in start["shape"])
        raster = dict(start["raster"])
        eta = np.asarray(start["eta"], dtype=float)
        x, y = raster["x"], raster["y"]
        xs = np.linspace(float(x[0]), float(x[1]), int(x[2]))
        ys = np.linspace(float(y[0]), float(y[1]), int(y[2]))
    except (KeyError, TypeError, ValueError) as exc:
        raise NotAMap(f"sxdm_map run {start.get('uid')} has no usable shape/raster/eta ({exc!r})") from None
    if (eta.size, ys.size, xs.size) != (n_eta, ny, nx) or min(n_eta, ny, nx) < 1:
        raise NotAMap(f"sxdm_map run {start.get('uid')}: shape {[n_eta, ny, nx]} disagrees with eta "
                      f"({eta.size}) and raster ({ys.size}, {xs.size})")
    motors = (start.get("plan_args") or {}).get("eta_motor", "eta")
    return MapLayout((n_eta, ny, nx), eta, ys, xs, rocking=motors, slow=raster.get("slow", "piy"),
                     fast=raster.get("fast", "pix"), snake=bool(raster.get("snake", False)),
                     snake_scope=raster.get("snake_scope", "map"))


def _grid_layout(start, plan) -> MapLayout:
    motors = list(start.get("motors") or ())
    shape = [int(n) for n in start.get("shape") or ()]
    if len(motors) != 3 or len(shape) != 3:
        raise NotAMap(f"a {plan!r} over {motors or 'no motors'} is not an SXDM map "
                      "(needs rocking angle, slow and fast piezo axes, outermost first)")
    if plan == "list_grid_scan":
        args = (start.get("plan_args") or {}).get("args") or []
        axes = [np.asarray(v, dtype=float) for v in args[1::2]]
        snake_text = str(start.get("snake_axes", "False"))
        if snake_text not in ("False", "None", "[]", "()"):
            raise NotAMap(f"a list_grid_scan with snake_axes={snake_text} is not supported as a map; "
                          "use grid_scan(..., snake_axes=[fast motor]) or no snake")
        snaking = (False, False, False)
    else:
        extents = start.get("extents") or ()
        axes = [np.linspace(float(a), float(b), n) for (a, b), n in zip(extents, shape)]
        snaking = tuple(bool(s) for s in start.get("snaking") or (False, False, False))
    if len(axes) != 3 or [a.size for a in axes] != shape:
        raise NotAMap(f"{plan} run {start.get('uid')}: positions do not match shape {shape}")
    if snaking[1]:
        raise NotAMap(f"a {plan!r} snaking its slow axis {motors[1]!r} is not an SXDM map (snake only the fast axis)")
    if plan == "rel_grid_scan":
        raise NotAMap("a 'rel_grid_scan' records relative positions; map with grid_scan or sxdm_map")
    return MapLayout(tuple(shape), axes[0], axes[1], axes[2], rocking=motors[0], slow=motors[1],
                     fast=motors[2], snake=bool(snaking[2]), snake_scope="run")
