"""What every reader hands the analysis: a typed SXDM map stack or BCDI rocking stack.

The readers of ID01 BLISS and XSOCS files, the catalog (``braggscope.storage``) and the
simulator all return a :class:`MapStack` (``frames[n_eta, ny, nx, rows, cols]``) or a
:class:`RockingStack` (``frames[n_eta, rows, cols]``): the frames, the angles, where each
frame was taken, the :class:`~braggscope.core.setup.ScanSetup`, the counters recorded with
every point (incident-flux monitor, fluorescence, machine current), how the acquisition ended
and where it came from. Anything else the source recorded (start document, file layout,
sample) rides along in ``metadata``, for people, not for the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from braggscope.core.errors import InputError
from braggscope.core.setup import ScanSetup, SetupError

__all__ = ["MapStack", "RockingStack", "DEFAULT_COUNTERS"]

#: The fields that play a run's counters when its start document does not name them (``monitor``,
#: ``fluorescence``): the monitor device's field ``mon1``; braggscope's fluorescence field, then BLISS's.
DEFAULT_COUNTERS = {"monitor": ("mon1",), "fluorescence": ("xrf_counts", "ct_fluo")}


@dataclass(frozen=True, eq=False)
class _Stack:
    frames: Any
    eta: np.ndarray
    setup: ScanSetup | None
    source: str = ""
    exit_status: str | None = None
    metadata: dict = field(default_factory=dict)
    counters: dict = field(default_factory=dict)
    monitor: str | None = None
    fluorescence: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "eta", np.asarray(self.eta, dtype=float).ravel())
        if self.eta.size != self.frames.shape[0]:
            raise InputError(f"{self.source or 'stack'}: {self.eta.size} rocking angles for "
                             f"{self.frames.shape[0]} angles of frames")

    def _check_counters(self, point_shape: tuple) -> None:
        """Counters are real arrays of one value per angle or per point; ``monitor`` and
        ``fluorescence`` name one of them."""
        where = self.source or "stack"
        counters = {}
        for name, values in self.counters.items():
            values = np.asarray(values)
            if values.dtype.kind not in "iuf":
                raise InputError(f"{where}: counter {name!r} is of type {values.dtype}, not numbers")
            if values.shape not in (point_shape, point_shape[:1]):
                raise InputError(f"{where}: counter {name!r} has shape {values.shape}; expected one value per "
                                 f"point {point_shape} or per angle ({point_shape[0]},)")
            counters[str(name)] = values
        object.__setattr__(self, "counters", counters)
        for role in ("monitor", "fluorescence"):
            name = getattr(self, role)
            if name is not None and name not in counters:
                raise InputError(f"{where}: {role} {name!r} is not among the recorded counters "
                                 f"({', '.join(sorted(counters)) or 'none'})")

    def counter(self, name: str) -> np.ndarray:
        """The values of counter ``name``, float, or an :class:`~braggscope.core.errors.InputError`
        listing the counters the stack has."""
        if name not in self.counters:
            raise InputError(f"{self.source or 'stack'}: no counter {name!r} (recorded: "
                             f"{', '.join(sorted(self.counters)) or 'none'})")
        return np.asarray(self.counters[name], dtype=float)

    def monitor_values(self) -> np.ndarray | None:
        """The incident-flux monitor (:attr:`monitor` names it), float, or None when there is none."""
        return None if self.monitor is None else self.counter(self.monitor)

    def fluorescence_values(self) -> np.ndarray | None:
        """The rocking-angle-independent counter (:attr:`fluorescence` names it), or None."""
        return None if self.fluorescence is None else self.counter(self.fluorescence)

    @property
    def n_eta(self) -> int:
        return int(self.eta.size)

    def require_setup(self) -> ScanSetup:
        """The setup, or an :class:`~braggscope.core.errors.InputError` naming what the source lacks."""
        if self.setup is not None:
            return self.setup
        try:
            return ScanSetup.from_start_doc(self.metadata)
        except SetupError as exc:
            raise InputError(f"{self.source or 'stack'}: {exc}") from None

    def angles(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(delta, nu, phi)``, each ``(n_eta,)`` degrees (see :meth:`ScanSetup.angles`)."""
        try:
            return self.require_setup().angles(self.n_eta)
        except SetupError as exc:
            raise InputError(f"{self.source or 'stack'}: {exc}") from None


@dataclass(frozen=True, eq=False)
class MapStack(_Stack):
    """An SXDM map: one raster of frames per rocking angle.

    Attributes
    ----------
    frames : array-like, shape (n_eta, ny, nx, rows, cols)
        Raw counts in raster order (the snake undone), lazily read where the source allows.
    eta : ndarray, shape (n_eta,)
        Rocking angles, degrees, increasing with the first axis of ``frames``.
    setup : ScanSetup or None
        Energy, detector and angles; None when the source lacks a field
        (:meth:`require_setup` names it).
    x, y : ndarray or None
        Nominal fast (``nx``) and slow (``ny``) map coordinates, micrometres, before any
        eccentricity correction.
    positions : dict of str to ndarray
        Measured positions ``(n_eta, ny, nx)`` in micrometres by motor name (``"pix"``, ``"piy"``),
        where the source recorded them.
    fast, slow : str
        The fast and slow motors' names.
    eccentricity : dict or None
        The eccentricity model the acquisition applied (``EccentricityModel.to_dict()``).
    source : str
        Where the stack came from, for messages (a file path, ``"run <uid>"``).
    exit_status : str or None
        How the acquisition ended (``"success"``, ``"abort"``, ``"fail"``), where recorded.
    metadata : dict
        Whatever else the source recorded (start document, sample, scans).
    counters : dict of str to ndarray
        Scalar readings recorded with the frames, by name (``"mon1"``, ``"ct_fluo"``,
        ``"machine_current"``, ...): ``(n_eta, ny, nx)`` in raster order like the frames, or
        ``(n_eta,)`` when recorded once per angle.
    monitor : str or None
        The counter measuring the incident flux (``"mon1"``): the reduction normalises by it.
    fluorescence : str or None
        A counter that does not depend on the rocking angle (a fluorescence line, ``"ct_fluo"``):
        the drift registration's signal.
    """

    x: np.ndarray | None = None
    y: np.ndarray | None = None
    positions: dict = field(default_factory=dict)
    fast: str = "pix"
    slow: str = "piy"
    eccentricity: dict | None = None

    def __post_init__(self):
        super().__post_init__()
        if len(self.frames.shape) != 5:
            raise InputError(f"{self.source or 'stack'}: frames must have shape (n_eta, ny, nx, rows, cols), "
                             f"got {tuple(self.frames.shape)}")
        for name, n in (("x", self.frames.shape[2]), ("y", self.frames.shape[1])):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=float).ravel()
                if value.size != n:
                    raise InputError(f"{self.source or 'stack'}: {value.size} {name} positions for {n} map pixels")
                object.__setattr__(self, name, value)
        self._check_counters(tuple(int(n) for n in self.frames.shape[:3]))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_eta, ny, nx)``."""
        return tuple(int(n) for n in self.frames.shape[:3])


@dataclass(frozen=True, eq=False)
class RockingStack(_Stack):
    """A BCDI rocking scan: one detector frame per rocking angle.

    Attributes
    ----------
    frames : array-like, shape (n_eta, rows, cols)
        Raw counts.
    eta : ndarray, shape (n_eta,)
        Rocking angle of each frame, degrees (as measured where recorded).
    setup : ScanSetup or None
        As for :class:`MapStack`.
    d_spacing : float or None
        Spacing of the measured reflection, Angstrom (where the acquisition recorded it).
    size_m : float or None
        The particle size the acquisition planned for, metres (for the oversampling check).
    source, exit_status, metadata
        As for :class:`MapStack`.
    counters, monitor, fluorescence
        As for :class:`MapStack`, one value per frame ``(n_eta,)``.
    """

    d_spacing: float | None = None
    size_m: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if len(self.frames.shape) != 3:
            raise InputError(f"{self.source or 'stack'}: frames must have shape (n_eta, rows, cols), "
                             f"got {tuple(self.frames.shape)}")
        self._check_counters((int(self.frames.shape[0]),))
