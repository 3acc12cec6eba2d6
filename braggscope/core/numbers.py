"""One check for "a finite number", shared by the plans' arguments, the setup, the models and the options."""

from __future__ import annotations

import math

__all__ = ["finite_float"]


def finite_float(value, name: str, *, error: type[Exception] = ValueError) -> float:
    """``value`` as a float; ``error`` naming ``name`` when it is not a number, or NaN or infinite.

    >>> finite_float("2.5", "threshold")
    2.5
    """
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise error(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise error(f"{name} must be finite, got {value!r}")
    return out
