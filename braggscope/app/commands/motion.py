"""Motion commands of the operator's session: ``wa``, ``wm``, ``mv``, ``umv``, ``mvr``, ``umvr``.

``wa`` and ``wm`` print as BLISS does: user and dial positions (an EPICS motor record's
``user = sign * dial + offset``), soft limits, offset and units, the motors' columns wrapped to the
terminal's width.

Mixed into :class:`braggscope.app.commands.Commands`; every target is checked
(a number, finite, inside the motor's soft limits) for all the motors of a
command before any of them moves, and a refusal is one line naming the motor.
"""

from __future__ import annotations

import shutil
import sys
import threading

import bluesky.plan_stubs as bps
from ophyd import EpicsMotor

from braggscope.core.errors import ArgumentError
from braggscope.plans.checks import check_number, motor_limits

__all__ = ["MotionCommands", "UNITS", "dial_position", "terminal_columns"]

#: Units of the simulated and EPICS motors by name (an EpicsMotor's own EGU wins when it has one).
UNITS = {"pix": "um", "piy": "um", "piz": "um", "eta": "deg", "phi": "deg", "nu": "deg", "delta": "deg",
         "energy": "keV"}


class MotionCommands:
    """``wa``/``wm``/``mv``/``umv``/``mvr``/``umvr`` (needs ``self.devices``, ``self._run``, ``self.out``)."""

    # -- where are the motors ---------------------------------------------------------
    def wa(self) -> dict[str, float]:
        """Where all: the user and dial positions of every motor (BLISS ``wa``); returns ``{name: user}``.

        Examples
        --------
        >>> wa()                                           # doctest: +SKIP
        Current Positions: user
                           dial
        <BLANKLINE>
              pix       piy  ...
               um        um
        ...
        """
        motors = self.motors()
        positions = {m.name: float(m.position) for m in motors}
        self.out("Current Positions: user")
        self.out("                   dial")
        rows = [("", [m.name for m in motors]), ("", [self.unit(m) for m in motors]),
                ("", ["-" * 9 for _ in motors]), ("", [_number(positions[m.name]) for m in motors]),
                ("", [_number(dial_position(m)[0]) for m in motors])]
        self._table(rows, label_width=0)
        return positions

    def wm(self, *motors) -> dict[str, float]:
        """Where motor(s) (BLISS ``wm``): user and dial positions and soft limits, offset and units of each.

        Returns ``{name: user position}``.

        Parameters
        ----------
        *motors : positioner or str
            Motors (or their names); none: all motors.
        """
        motors = [self._motor(m) for m in motors] or self.motors()
        positions = {m.name: float(m.position) for m in motors}
        dials = [dial_position(m) for m in motors]
        user_limits = [motor_limits(m) for m in motors]
        rows = [("", [m.name for m in motors]), ("", [self.unit(m) for m in motors]),
                ("User", ["" for _ in motors]),
                (" High", [_limit(lim, 1) for lim in user_limits]),
                (" Current", [_number(positions[m.name]) for m in motors]),
                (" Low", [_limit(lim, 0) for lim in user_limits]),
                ("Offset", [_number(offset) for _, offset, _ in dials]),
                ("Dial", ["" for _ in motors]),
                (" High", [_limit(_dial_limits(lim, d), 1) for lim, d in zip(user_limits, dials)]),
                (" Current", [_number(dial) for dial, _, _ in dials]),
                (" Low", [_limit(_dial_limits(lim, d), 0) for lim, d in zip(user_limits, dials)])]
        self._table(rows, label_width=9)
        return positions

    def _table(self, rows, *, label_width: int) -> None:
        """Print ``rows`` of ``(label, cells)``, the motors' columns wrapped to the terminal's width."""
        n = len(rows[0][1])
        width = max([10] + [len(str(c)) + 2 for _, cells in rows for c in cells])
        per_line = max(1, (terminal_columns() - label_width) // width)
        for first in range(0, n, per_line):
            if first:
                self.out("")
            for label, cells in rows:
                line = f"{label:<{label_width}}" + "".join(f"{c:>{width}}" for c in cells[first:first + per_line])
                self.out(line.rstrip())

    # -- absolute and relative moves -----------------------------------------------
    def mv(self, *args) -> dict[str, float]:
        """Move motors to absolute positions: ``mv(pix, 50)``, ``mv(pix, 50, piy, 20)``.

        All targets are checked first (finite, inside the soft limits); the
        motors then move together and the call returns when all are there.

        Returns
        -------
        dict
            ``{name: position}`` after the move.
        """
        pairs = self._targets(args, relative=False, command="mv")
        return self._move(pairs, live=False)

    def umv(self, *args) -> dict[str, float]:
        """As :meth:`mv`, showing the positions while the motors move (updated in place)."""
        pairs = self._targets(args, relative=False, command="umv")
        return self._move(pairs, live=True)

    def mvr(self, *args) -> dict[str, float]:
        """Move motors by relative amounts: ``mvr(eta, 0.01)``; checked as :meth:`mv`."""
        pairs = self._targets(args, relative=True, command="mvr")
        return self._move(pairs, live=False)

    def umvr(self, *args) -> dict[str, float]:
        """As :meth:`mvr`, showing the positions while the motors move."""
        pairs = self._targets(args, relative=True, command="umvr")
        return self._move(pairs, live=True)

    # -- helpers --------------------------------------------------------------------
    def motors(self) -> list:
        """The session's motors (devices labelled ``motors``), in a stable order, each once."""
        seen, out = set(), []
        order = list(UNITS)
        for _name, device in sorted(self.devices.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order
                                                                          else len(order), kv[0])):
            if "motors" in getattr(device, "_ophyd_labels_", ()) and id(device) not in seen:
                seen.add(id(device))
                out.append(device)
        return out

    def unit(self, motor) -> str:
        """The motor's units: an EPICS motor record's EGU, else by name (:data:`UNITS`)."""
        egu = None
        if isinstance(motor, EpicsMotor):
            try:
                egu = motor.egu
            except Exception:  # noqa: BLE001 - an unconnected EGU channel
                egu = None
        return egu if isinstance(egu, str) and egu else UNITS.get(motor.name, "")

    def _motor(self, motor):
        """A positioner from the object or its name in the session (one line if unknown)."""
        if isinstance(motor, str):
            if motor not in self.devices:
                raise ArgumentError(f"no motor named {motor!r}; motors: {', '.join(m.name for m in self.motors())}")
            motor = self.devices[motor]
        if not (hasattr(motor, "set") and hasattr(motor, "position")):
            raise ArgumentError(f"{getattr(motor, 'name', motor)!r} is not a motor (no set()/position)")
        return motor

    def _targets(self, args, *, relative: bool, command: str) -> list[tuple]:
        """``(motor, target)`` pairs from ``motor, value, ...``, all checked before any motion."""
        if not args or len(args) % 2:
            raise ArgumentError(f"{command} takes motor, position pairs: {command}(pix, 50, piy, 20); got {len(args)} "
                                "arguments")
        pairs = []
        for motor, value in zip(args[::2], args[1::2]):
            motor = self._motor(motor)
            value = check_number(f"{command} {motor.name} target", value)
            target = float(motor.position) + value if relative else value
            lim = motor_limits(motor)
            if lim is not None and not lim[0] <= target <= lim[1]:
                raise ArgumentError(f"{command}: {motor.name} target {target:.6g} is outside its soft limits "
                                    f"[{lim[0]:.6g}, {lim[1]:.6g}]; nothing moved")
            pairs.append((motor, target))
        names = [m.name for m, _ in pairs]
        if len(set(names)) != len(names):
            raise ArgumentError(f"{command}: a motor is named twice ({', '.join(names)})")
        return pairs

    def _move(self, pairs, *, live: bool) -> dict[str, float]:
        plan = bps.mv(*[x for pair in pairs for x in pair])
        motors = [m for m, _ in pairs]
        if not live:
            self._run(plan)
        else:
            with _PositionDisplay(motors, self.unit):
                self._run(plan)
        return {m.name: float(m.position) for m in motors}


def dial_position(motor) -> tuple[float, float, int]:
    """``(dial, offset, sign)`` of a motor: an EPICS motor record's ``user = sign * dial + offset``
    (``.OFF``, ``.DIR``); a motor without them has its dial equal to its user position."""
    user = float(motor.position)
    offset, sign = 0.0, 1
    if isinstance(motor, EpicsMotor):
        try:
            offset = float(motor.user_offset.get())
            sign = -1 if int(motor.user_offset_dir.get()) == 1 else 1
        except Exception:  # noqa: BLE001 - an unconnected field: show the user position as the dial
            offset, sign = 0.0, 1
    return (user - offset) * sign, offset, sign


def _dial_limits(user_limits, dial):
    if user_limits is None:
        return None
    _, offset, sign = dial
    ends = sorted(((user_limits[0] - offset) * sign, (user_limits[1] - offset) * sign))
    return tuple(ends)


def _limit(limits, i) -> str:
    return "-" if limits is None else _number(limits[i])


def _number(value) -> str:
    return f"{value:.6g}"


def terminal_columns() -> int:
    """The terminal's width in characters (``$COLUMNS`` first; 100 when unknown)."""
    return shutil.get_terminal_size((100, 24)).columns


class _PositionDisplay:
    """Print the motors' positions in place (``\\r``) every ``period_s`` while a move runs, and a final line."""

    def __init__(self, motors, unit, period_s: float = 0.1, stream=None):
        self.motors, self.unit, self.period_s = motors, unit, float(period_s)
        self.stream = stream or sys.stdout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="umv-display", daemon=True)

    def line(self) -> str:
        return "  ".join(f"{m.name} {float(m.position):12.6g} {self.unit(m)}" for m in self.motors)

    def _loop(self):
        while not self._stop.wait(self.period_s):
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(1.0)
        self.stream.write("\r" + self.line() + "\n")
        self.stream.flush()
        return False
