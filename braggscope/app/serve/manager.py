"""``python -m braggscope.app.serve.manager``: the queue server (``start-re-manager``, same arguments),
refusing at its door an item whose parameters hold NaN or an infinity.

bluesky-queueserver lets a non-finite number through its parameter validation; stored in the queue,
it then makes the HTTP server answer 500 to every ``queue/get`` and ``history/get`` until the queue is
cleared. Here such an item is refused when it is added (over 0MQ or through the HTTP server), with
the one-line message the plans' own checks give (:func:`braggscope.core.numbers.finite_float`),
naming the parameter. ``braggscope serve`` starts the queue server this way.
"""

from __future__ import annotations

import math
import sys

from braggscope.core import compat
from braggscope.core.numbers import finite_float

__all__ = ["nonfinite_reason", "main", "WORKER_REQUEST_TIMEOUT_S"]

#: Seconds the manager waits for its worker's answer to a regular request (upstream 0.5 s).
WORKER_REQUEST_TIMEOUT_S = 10.0


def nonfinite_reason(item: dict, allowed_plans: dict | None = None) -> str | None:
    """Why a plan item cannot be queued (a parameter holds NaN or an infinity), or None.

    Parameters
    ----------
    item : dict
        ``{"name", "args", "kwargs"}`` of a plan item.
    allowed_plans : dict, optional
        The manager's plan descriptions: positional arguments are named after their parameters.
    """
    names = _positional_names(item.get("name"), allowed_plans or {})
    named = [(names[i] if i < len(names) else f"argument {i + 1}", v) for i, v in enumerate(item.get("args") or [])]
    for name, value in named + list((item.get("kwargs") or {}).items()):
        for where, number in _numbers(name, value):
            if not math.isfinite(number):
                try:
                    finite_float(number, where)
                except ValueError as exc:
                    return f"{item.get('name')}: {exc}"
    return None


def _positional_names(plan: str, allowed_plans: dict) -> list[str]:
    positional = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")
    parameters = (allowed_plans.get(plan) or {}).get("parameters") or []
    return [p["name"] for p in parameters if (p.get("kind") or {}).get("name") in positional]


def _numbers(name: str, value):
    """``(where, float)`` of every float in a parameter's value (lists and dicts walked)."""
    if isinstance(value, float):
        yield name, value
    elif isinstance(value, dict):
        for key, v in value.items():
            yield from _numbers(f"{name}[{key!r}]", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _numbers(f"{name}[{i}]", v)


def main() -> int:
    """Start the queue server with the check (its command line: ``start-re-manager``'s)."""
    # the queue server: slow to import, only in its own process
    from bluesky_queueserver.manager.start_manager import start_manager

    compat.check_queue_plans(nonfinite_reason)
    compat.worker_request_timeout(WORKER_REQUEST_TIMEOUT_S)  # a busy worker's answer is not a failed plan
    result = start_manager()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
