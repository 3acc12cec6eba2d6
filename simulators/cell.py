"""The electrochemical cell of the simulated beamline: voltage, lithium content and where the lithium is.

Pure physics on the cell's own clock (seconds), no EPICS: the potentiostat IOC (:mod:`.ioc_cell`) runs
a :class:`Cell` and serves its state, and :mod:`.cell_sample` makes the simulated crystal follow it.

The model (docs/operando.md cites the sources of the curves):

* the electrode is one active material (:data:`MATERIALS`: NMC622, LMNO) whose open-circuit voltage
  (OCV, volts against Li/Li+) and lattice parameter are tabulated against its lithium content ``x``;
  the theoretical capacity follows from the formula mass (one lithium per formula unit), the C-rate
  from the material's practical capacity;
* the cell voltage is ``OCV(x) + I R`` (an IR drop, the current positive on charge);
* a :class:`~braggscope.core.electrochem.Protocol` runs rest, constant-current and constant-voltage
  steps (the constant-voltage current decays as the OCV approaches the held voltage);
* the lithium is not spread evenly: a *front* moves from the particle's surface inward during each
  step, the shell behind it at another lithium content than the core ahead of it;
  :meth:`Cell.shell_fraction` is the fraction of the particle behind the front. In a two-phase
  domain (LMNO) shell and core are the domain's end members and the shell fraction is the lever
  rule's. In a solid solution (NMC) the shell fraction is the step's progress (from the content it
  started at to the content its voltage limit stands for), shell and core differ by a gap
  proportional to the current (``gradient_per_c``, in lithium content per C) around the mean, and
  the gap relaxes at rest with ``relax_time_s``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from braggscope.core.electrochem import Protocol, Step

__all__ = ["FARADAY", "MATERIALS", "Cell", "CellSettings", "CellState", "Material", "material"]

#: Faraday constant (C/mol, CODATA 2018).
FARADAY = 96485.33212


@dataclass(frozen=True)
class Material:
    """An intercalation electrode material: OCV and lattice parameter against lithium content.

    Attributes
    ----------
    name : str
    formula_mass : float
        g/mol of the lithiated formula unit (one lithium).
    practical_capacity : float
        mAh/g defining 1 C.
    ocv_x, ocv_v : tuple of float
        OCV table: lithium content (increasing) and volts (decreasing).
    lattice_x, lattice : tuple of float
        Lattice parameter of the measured reflection's axis (Angstrom) against lithium content.
    lattice_axis : str
        Which parameter (``"c"`` of a layered oxide, ``"a"`` of a cubic spinel).
    two_phase : tuple of (float, float)
        Lithium-content domains where two phases coexist (their end members meet at a front).
    strain_onset, strain_max : float
        Below lithium content ``strain_onset`` the local strain heterogeneity grows linearly to
        ``strain_max`` (dimensionless) at ``x = strain_onset / 2``.
    x_min, x_max : float
        Lithium contents the cell may reach.
    """

    name: str
    formula_mass: float
    practical_capacity: float
    ocv_x: tuple
    ocv_v: tuple
    lattice_x: tuple
    lattice: tuple
    lattice_axis: str
    two_phase: tuple = ()
    strain_onset: float = 0.0
    strain_max: float = 0.0
    x_min: float = 0.0
    x_max: float = 1.0

    def __post_init__(self):
        if np.any(np.diff(self.ocv_x) <= 0) or np.any(np.diff(self.ocv_v) >= 0):
            raise ValueError(f"{self.name}: the OCV table must rise in x and fall in volts")
        if np.any(np.diff(self.lattice_x) <= 0):
            raise ValueError(f"{self.name}: the lattice table must rise in x")

    @property
    def theoretical_capacity(self) -> float:
        """mAh/g for one lithium per formula unit: ``F / (3.6 M)``."""
        return FARADAY / (3.6 * self.formula_mass)

    def ocv(self, x):
        """Open-circuit voltage (V vs Li/Li+) at lithium content ``x``."""
        return np.interp(x, self.ocv_x, self.ocv_v)

    def x_at_voltage(self, volts):
        """Lithium content whose OCV is ``volts`` (clipped to the table)."""
        return np.interp(-np.asarray(volts, float), -np.asarray(self.ocv_v), self.ocv_x)

    def slope(self, x) -> float:
        """dOCV/dx (V per unit of x, negative) of the table's segment at ``x``."""
        i = int(np.clip(np.searchsorted(self.ocv_x, x) - 1, 0, len(self.ocv_x) - 2))
        return (self.ocv_v[i + 1] - self.ocv_v[i]) / (self.ocv_x[i + 1] - self.ocv_x[i])

    def lattice_parameter(self, x):
        """Lattice parameter (Angstrom) at lithium content ``x``."""
        return np.interp(x, self.lattice_x, self.lattice)

    def strain_spread(self, x):
        """Amplitude of the extra local strain heterogeneity at lithium content ``x`` (dimensionless)."""
        if self.strain_onset <= 0:
            return np.zeros_like(np.asarray(x, float))
        depth = np.clip((self.strain_onset - np.asarray(x, float)) / (self.strain_onset / 2), 0.0, 1.0)
        return self.strain_max * depth

    def domain(self, x) -> tuple | None:
        """The two-phase domain ``(x_low, x_high)`` holding ``x`` strictly inside, or None."""
        for low, high in self.two_phase:
            if low < x < high:
                return (low, high)
        return None


#: LiNi0.6Mn0.2Co0.2O2, 003 reflection (c axis); tables in docs/operando.md.
NMC622 = Material(
    name="nmc622", formula_mass=6.941 + 0.6 * 58.693 + 0.2 * 54.938 + 0.2 * 58.933 + 2 * 15.999,
    practical_capacity=180.0,
    ocv_x=(0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.50, 0.60, 0.70, 0.80, 0.85, 0.90, 0.95, 1.00),
    ocv_v=(4.80, 4.65, 4.48, 4.33, 4.21, 4.12, 4.05, 3.94, 3.86, 3.80, 3.75, 3.73, 3.71, 3.68, 3.60),
    lattice_x=(0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.60, 0.70, 0.80, 0.90, 1.00),
    lattice=(13.95, 14.06, 14.17, 14.28, 14.37, 14.43, 14.46, 14.465, 14.45, 14.41, 14.36, 14.31, 14.26, 14.22),
    lattice_axis="c", strain_onset=0.40, strain_max=2.0e-3, x_min=0.10, x_max=1.0,
)
#: LiNi0.5Mn1.5O4 (cubic spinel), 004 reflection (a axis): two two-phase domains.
LMNO = Material(
    name="lmno", formula_mass=6.941 + 0.5 * 58.693 + 1.5 * 54.938 + 4 * 15.999,
    practical_capacity=140.0,
    ocv_x=(0.0, 0.02, 0.05, 0.10, 0.45, 0.50, 0.55, 0.90, 0.95, 0.97, 0.99, 1.00),
    ocv_v=(5.00, 4.85, 4.78, 4.752, 4.742, 4.72, 4.702, 4.692, 4.62, 4.05, 4.00, 3.90),
    lattice_x=(0.0, 0.5, 1.0),
    lattice=(8.00, 8.09, 8.17),
    lattice_axis="a", two_phase=((0.0, 0.5), (0.5, 1.0)), x_min=0.0, x_max=1.0,
)
MATERIALS = {"nmc622": NMC622, "lmno": LMNO}


def material(name: str) -> Material:
    """A material of :data:`MATERIALS` by name."""
    if name not in MATERIALS:
        raise ValueError(f"cell material must be one of {sorted(MATERIALS)}, got {name!r}")
    return MATERIALS[name]


@dataclass(frozen=True)
class CellSettings:
    """What the simulated cell is made of (``[simulator.cell]`` of the configuration)."""

    material: str = "nmc622"
    active_mass_mg: float = 5.0
    resistance_ohm: float = 50.0
    x_initial: float = 1.0
    relax_time_s: float = 3600.0
    gradient_per_c: float = 0.3

    def __post_init__(self):
        material(self.material)
        for name in ("active_mass_mg", "resistance_ohm", "relax_time_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"cell {name} must be finite and > 0, got {getattr(self, name)!r}")
        if not (math.isfinite(self.gradient_per_c) and 0 <= self.gradient_per_c <= 1):
            raise ValueError(f"cell gradient_per_c must be in [0, 1], got {self.gradient_per_c!r}")
        m = material(self.material)
        if not m.x_min <= self.x_initial <= m.x_max:
            raise ValueError(f"cell x_initial must be in [{m.x_min}, {m.x_max}], got {self.x_initial!r}")

    @property
    def nominal_capacity_mah(self) -> float:
        """The capacity defining 1 C (mAh)."""
        return material(self.material).practical_capacity * self.active_mass_mg * 1e-3

    @property
    def full_capacity_mah(self) -> float:
        """The charge of one lithium per formula unit (mAh): x changes by 1."""
        return material(self.material).theoretical_capacity * self.active_mass_mg * 1e-3


@dataclass
class CellState:
    """Everything the cell is now; ``to_dict``/``from_dict`` persist it (the IOC's autosave)."""

    time_s: float = 0.0          # protocol time (s) since start
    lithium: float = 1.0         # mean lithium content of the electrode
    lithium_start: float = 1.0   # at the protocol's start (the charge is counted from it)
    current: float = 0.0         # mA, positive on charge
    voltage: float = 0.0         # V
    cycle: int = 0               # 1-based while a protocol runs
    step: int = 0                # 1-based within the cycle
    step_time_s: float = 0.0
    status: str = "idle"         # idle, running, paused, done
    x_shell: float = 1.0         # lithium content behind the front
    x_core: float = 1.0          # ahead of it
    front: float = 0.0           # fraction of the particle behind the front
    x_step_start: float = 1.0    # lithium content when the step began
    x_target: float = 1.0        # the content the step's voltage limit stands for
    protocol: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CellState:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class Cell:
    """A half cell running a protocol (see the module docstring).

    Parameters
    ----------
    settings : CellSettings
    state : CellState, optional
        A saved state to go on from.
    """

    def __init__(self, settings: CellSettings, state: CellState | None = None):
        self.settings = settings
        self.material = material(settings.material)
        x0 = settings.x_initial
        self.state = state or CellState(lithium=x0, lithium_start=x0, x_shell=x0, x_core=x0, x_step_start=x0,
                                        x_target=x0)
        self._protocol = Protocol.coerce(self.state.protocol) if self.state.protocol else None
        self._step_over = False
        if self.state.voltage == 0.0:
            self.state.voltage = float(self.material.ocv(self.state.lithium))

    # -- control --------------------------------------------------------------------
    def start(self, protocol) -> None:
        """Run ``protocol`` from its first step; time and charge count from now."""
        self._protocol = Protocol.coerce(protocol)
        s = self.state
        s.protocol = {"steps": [st.to_dict() for st in self._protocol.steps], "cycles": self._protocol.cycles}
        s.time_s = 0.0
        s.lithium_start = s.lithium
        s.cycle, s.step, s.status = 1, 1, "running"
        self._begin_step()

    def pause(self) -> None:
        """Open the circuit (no current) until :meth:`resume`; the protocol's clock stops."""
        if self.state.status == "running":
            self.state.status = "paused"
            self._set_current(0.0)

    def resume(self) -> None:
        if self.state.status == "paused":
            self.state.status = "running"
            step = self.current_step()
            if step is not None and step.kind.startswith("cc_"):
                self._set_current(step.sign * step.c_rate * self.settings.nominal_capacity_mah)

    def stop(self) -> None:
        """End the protocol: open circuit."""
        if self.state.status in ("running", "paused"):
            self.state.status = "done"
        self._set_current(0.0)

    # -- time -------------------------------------------------------------------------
    def advance(self, dt_s: float) -> None:
        """Let ``dt_s`` seconds of the cell's clock pass."""
        dt = float(dt_s)
        for _ in range(100000):
            if dt <= 1e-12 or self.state.status != "running":
                break
            dt -= self._advance_step(dt)
        if dt > 1e-12:
            self._relax(dt)

    @property
    def charge(self) -> float:
        """Charge passed since the protocol started (mAh, positive on charge)."""
        s = self.state
        return (s.lithium_start - s.lithium) * self.settings.full_capacity_mah

    def shell_fraction(self) -> float:
        """Fraction of the particle behind the front (at the shell's content), 0..1."""
        return float(self.state.front)

    def current_step(self) -> Step | None:
        if self._protocol is None or self.state.step == 0:
            return None
        return self._protocol.steps[self.state.step - 1]

    # -- helpers ----------------------------------------------------------------------
    def _advance_step(self, dt: float) -> float:
        """Advance within the current step; returns the time used (the step may end before ``dt``)."""
        step, s = self.current_step(), self.state
        h = min(dt, step.duration_s - s.step_time_s)
        if step.kind == "rest":
            self._relax(h)
        elif step.kind == "cv_hold":
            h = self._hold(step, h)
        else:
            h = self._constant_current(step, h)
        s.time_s += h
        s.step_time_s += h
        if s.step_time_s >= step.duration_s - 1e-9 or self._step_over:
            self._next_step()
        return max(h, 1e-9)

    def _constant_current(self, step: Step, h: float) -> float:
        cfg, m, s = self.settings, self.material, self.state
        current = step.sign * step.c_rate * cfg.nominal_capacity_mah
        drop = current * cfg.resistance_ohm * 1e-3
        x_limit = float(np.clip(m.x_at_voltage(step.voltage_v - drop), m.x_min, m.x_max))
        rate = current / (3600.0 * cfg.full_capacity_mah)  # dx/dt = -rate
        room = (s.lithium - x_limit) / rate
        if room <= 1e-9:
            self._step_over = True
            return 0.0
        if room <= h:
            h, self._step_over = room, True
        self._set_lithium(s.lithium - rate * h, current)
        return h

    def _hold(self, step: Step, h: float) -> float:
        """Constant voltage: the overpotential ``e = V - OCV(x)`` decays as ``exp(-|dOCV/dx| t / tau0)``."""
        cfg, m, s = self.settings, self.material, self.state
        tau0 = cfg.resistance_ohm * 3600.0 * cfg.full_capacity_mah * 1e-3
        cutoff = step.cutoff_c_rate * cfg.nominal_capacity_mah * cfg.resistance_ohm * 1e-3  # volts
        used = 0.0
        for _ in range(1000):
            e = step.voltage_v - float(m.ocv(s.lithium))
            if abs(e) <= cutoff or used >= h - 1e-12:
                break
            rate = max(abs(m.slope(s.lithium)), 1e-3) / tau0
            sub = min(h - used, 0.2 / rate)
            if abs(e) * math.exp(-rate * sub) <= cutoff:
                sub = math.log(abs(e) / cutoff) / rate
            e *= math.exp(-rate * sub)
            self._set_lithium(float(m.x_at_voltage(step.voltage_v - e)), e / cfg.resistance_ohm * 1e3)
            used += sub
        e = step.voltage_v - float(m.ocv(s.lithium))
        self._set_current(e / cfg.resistance_ohm * 1e3)
        if abs(e) <= cutoff * (1 + 1e-6):
            self._step_over = True
        return used

    def _relax(self, h: float) -> None:
        """Open circuit: a solid solution's shell and core approach the mean lithium content."""
        s = self.state
        self._set_current(0.0)
        if not self.material.two_phase and h > 0:
            k = math.exp(-h / self.settings.relax_time_s)
            s.x_shell = s.lithium + (s.x_shell - s.lithium) * k
            s.x_core = s.lithium + (s.x_core - s.lithium) * k

    def _set_current(self, current_ma: float) -> None:
        s = self.state
        s.current = float(current_ma)
        s.voltage = float(self.material.ocv(s.lithium)) + s.current * self.settings.resistance_ohm * 1e-3

    def _set_lithium(self, x: float, current_ma: float) -> None:
        """The mean content, and where the lithium is: shell, core and the front between them."""
        s, m, cfg = self.state, self.material, self.settings
        s.lithium = float(np.clip(x, m.x_min, m.x_max))
        domain = m.domain(s.lithium)
        if domain is not None:  # two phases: the domain's end members, the lever rule
            low, high = domain
            s.x_shell, s.x_core = (low, high) if s.x_target < s.x_step_start else (high, low)
            s.front = float(np.clip((s.x_core - s.lithium) / (s.x_core - s.x_shell), 0.0, 1.0))
        else:  # a solid solution: the step's progress, a gap that follows the current
            span = s.x_step_start - s.x_target
            s.front = float(np.clip((s.x_step_start - s.lithium) / span, 0.0, 1.0)) if abs(span) > 1e-9 else 0.0
            gap = cfg.gradient_per_c * abs(current_ma) / cfg.nominal_capacity_mah * (1 if span > 0 else -1)
            s.x_shell = float(np.clip(s.lithium - (1 - s.front) * gap, m.x_min, m.x_max))
            s.x_core = float(np.clip(s.lithium + s.front * gap, m.x_min, m.x_max))
        self._set_current(current_ma)

    def _begin_step(self) -> None:
        """A new step: a front starts at the surface and runs towards the content the step's voltage stands for
        (a step going on the same way as the last one, a hold after a charge, carries its front on)."""
        self._step_over = False
        s, m, step = self.state, self.material, self.current_step()
        s.step_time_s = 0.0
        if step.kind == "rest":
            self._set_current(0.0)
            return
        target = float(np.clip(m.x_at_voltage(step.voltage_v), m.x_min, m.x_max))
        if (target - s.lithium) * (s.x_target - s.x_step_start) <= 0:  # not on with the same front
            s.x_step_start = s.lithium
        s.x_target = target
        current = step.sign * step.c_rate * self.settings.nominal_capacity_mah if step.kind != "cv_hold" else 0.0
        self._set_lithium(s.lithium, current)

    def _next_step(self) -> None:
        s = self.state
        if s.step < len(self._protocol.steps):
            s.step += 1
        elif s.cycle < self._protocol.cycles:
            s.cycle, s.step = s.cycle + 1, 1
        else:
            s.status = "done"
            self._set_current(0.0)
            self._step_over = False
            return
        self._begin_step()
