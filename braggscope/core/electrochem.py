"""The electrochemical protocol a potentiostat runs, and the cell's state as every run records it.

One contract for three floors: the potentiostat device writes a :class:`Protocol` to its IOC as
JSON (:meth:`Protocol.to_json`), the simulated cell runs it (``simulators/cell.py``), the operando
plan and the series analysis read the state back under the names of :data:`STATE_FIELDS`.

A protocol is a list of steps, repeated ``cycles`` times:

* ``rest``: open circuit for ``duration_s``;
* ``cc_charge`` / ``cc_discharge``: constant current at ``c_rate`` (1 C empties the electrode's
  nominal capacity in one hour) until the voltage reaches ``voltage_v`` (the upper limit of a charge,
  the lower limit of a discharge) or ``duration_s`` has passed;
* ``cv_hold``: constant voltage ``voltage_v`` until the current falls below ``cutoff_c_rate``
  (in C) or ``duration_s`` has passed.

Currents are positive on charge (lithium leaves the positive electrode), voltages in volts against
Li/Li+, charge in mAh, times in seconds of the cell's clock.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from braggscope.core.errors import ArgumentError
from braggscope.core.numbers import finite_float

__all__ = ["STEP_KINDS", "STATE_FIELDS", "Protocol", "Step", "charge_to", "discharge_to", "rest"]

#: The kinds of step a protocol holds.
STEP_KINDS = ("rest", "cc_charge", "cc_discharge", "cv_hold")
#: The cell's state as runs record it (``<potentiostat>_<field>`` in events, these names in start
#: documents and the series dataset): protocol time (s), voltage (V), current (mA), charge passed
#: (mAh), lithium content x of the electrode, cycle and step number.
STATE_FIELDS = ("time_s", "voltage", "current", "charge", "lithium", "cycle", "step")


@dataclass(frozen=True)
class Step:
    """One step of a protocol (see the module docstring for the kinds).

    Attributes
    ----------
    kind : str
        One of :data:`STEP_KINDS`.
    duration_s : float
        Longest time of the step (s); ``inf`` for none (a rest needs a finite one).
    c_rate : float
        Current of a constant-current step, in C (> 0).
    voltage_v : float
        Limit of a constant-current step, hold voltage of ``cv_hold`` (V).
    cutoff_c_rate : float
        ``cv_hold`` ends when the current falls below this (C, > 0).
    """

    kind: str
    duration_s: float = math.inf
    c_rate: float = 0.0
    voltage_v: float = math.nan
    cutoff_c_rate: float = 0.05

    def __post_init__(self):
        if self.kind not in STEP_KINDS:
            raise ArgumentError(f"step kind must be one of {STEP_KINDS}, got {self.kind!r}")
        duration = float(self.duration_s)
        if math.isnan(duration) or duration <= 0 or (self.kind == "rest" and math.isinf(duration)):
            raise ArgumentError(f"{self.kind}: duration_s must be > 0 (finite for a rest), got {self.duration_s!r}")
        if self.kind.startswith("cc_"):
            finite_float(self.voltage_v, f"{self.kind}: voltage_v", error=ArgumentError)
            if not finite_float(self.c_rate, f"{self.kind}: c_rate", error=ArgumentError) > 0:
                raise ArgumentError(f"{self.kind}: c_rate must be > 0 C, got {self.c_rate!r}")
        if self.kind == "cv_hold":
            finite_float(self.voltage_v, "cv_hold: voltage_v", error=ArgumentError)
            if not finite_float(self.cutoff_c_rate, "cv_hold: cutoff_c_rate", error=ArgumentError) > 0:
                raise ArgumentError(f"cv_hold: cutoff_c_rate must be > 0 C, got {self.cutoff_c_rate!r}")

    @property
    def sign(self) -> int:
        """+1 for a charge, -1 for a discharge, 0 otherwise (the sign of the current)."""
        return {"cc_charge": 1, "cc_discharge": -1}.get(self.kind, 0)

    def to_dict(self) -> dict:
        """Plain values, ``inf``/``nan`` as None (JSON has neither)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d) -> Step:
        """From :meth:`to_dict`'s form (None for no duration or voltage); unknown keys refused."""
        if isinstance(d, Step):
            return d
        if not isinstance(d, dict) or "kind" not in d:
            raise ArgumentError(f"a protocol step must be a dict with a 'kind', got {d!r}")
        unknown = set(d) - {"kind", "duration_s", "c_rate", "voltage_v", "cutoff_c_rate"}
        if unknown:
            raise ArgumentError(f"step {d.get('kind')!r}: unknown keys {sorted(unknown)}")
        values = dict(d)
        if values.get("duration_s") is None:
            values["duration_s"] = math.inf
        if values.get("voltage_v") is None:
            values["voltage_v"] = math.nan
        return cls(**values)


@dataclass(frozen=True)
class Protocol:
    """Steps run in order, the list repeated ``cycles`` times."""

    steps: tuple
    cycles: int = 1

    def __post_init__(self):
        steps = tuple(Step.from_dict(s) for s in self.steps)
        if not steps:
            raise ArgumentError("a protocol needs at least one step")
        if int(self.cycles) != self.cycles or not 1 <= self.cycles <= 10000:
            raise ArgumentError(f"cycles must be an integer in 1..10000, got {self.cycles!r}")
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "cycles", int(self.cycles))

    def to_json(self) -> str:
        """The form the potentiostat's ``Protocol`` PV holds."""
        return json.dumps({"steps": [s.to_dict() for s in self.steps], "cycles": self.cycles},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Protocol:
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ArgumentError(f"protocol is not JSON: {exc}") from None
        return cls.coerce(d)

    @classmethod
    def coerce(cls, obj) -> Protocol:
        """A Protocol from itself, a list of steps, or a dict ``{"steps": [...], "cycles": n}``."""
        if isinstance(obj, Protocol):
            return obj
        if isinstance(obj, str):
            return cls.from_json(obj)
        if isinstance(obj, (list, tuple)):
            return cls(tuple(obj))
        if isinstance(obj, dict) and "steps" in obj:
            return cls(tuple(obj["steps"]), obj.get("cycles", 1))
        raise ArgumentError(f"protocol must be a list of steps or {{'steps': [...], 'cycles': n}}, got {obj!r}")

    def __len__(self) -> int:
        return len(self.steps) * self.cycles


def rest(duration_s: float) -> Step:
    """Open circuit for ``duration_s`` seconds."""
    return Step("rest", duration_s=duration_s)


def charge_to(voltage_v: float, c_rate: float, *, duration_s: float = math.inf) -> Step:
    """Constant-current charge at ``c_rate`` up to ``voltage_v``."""
    return Step("cc_charge", duration_s=duration_s, c_rate=c_rate, voltage_v=voltage_v)


def discharge_to(voltage_v: float, c_rate: float, *, duration_s: float = math.inf) -> Step:
    """Constant-current discharge at ``c_rate`` down to ``voltage_v``."""
    return Step("cc_discharge", duration_s=duration_s, c_rate=c_rate, voltage_v=voltage_v)
