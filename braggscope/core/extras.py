"""Which ``pip install braggscope[...]`` extra brings an optional package.

``pip install braggscope`` installs the analysis; the acquisition and the facility's services come
with extras (``[beamline]``, ``[facility]``, ``[gpu]``, ``[docs]``; ``[dev]`` is all but the GPU). A
module needing an optional package imports it where it is used; when the import fails,
:func:`extra_hint` turns the :class:`ModuleNotFoundError` into a line naming the extra to install.
"""

from __future__ import annotations

import importlib.util

from braggscope.core.errors import UserError

__all__ = ["EXTRA_OF_MODULE", "MissingExtraError", "extra_hint", "require_extra"]

#: top-level module -> the extra that installs it
EXTRA_OF_MODULE = {
    "bluesky": "beamline",
    "ophyd": "beamline",
    "caproto": "beamline",
    "epics": "beamline",
    "databroker": "beamline",
    "IPython": "beamline",
    "traitlets": "beamline",
    "numcodecs": "beamline",
    "bluesky_queueserver_api": "beamline",
    "fastapi": "beamline",  # tiled's server, for the local catalog server
    "uvicorn": "beamline",
    "sqlalchemy": "beamline",
    "bluesky_queueserver": "facility",
    "bluesky_httpserver": "facility",
    "nats": "facility",
    "asyncpg": "facility",
    "distributed": "facility",
    "cupy": "gpu",
}


class MissingExtraError(UserError):
    """A command or function needs a package of an extra that is not installed."""


def extra_hint(exc: BaseException) -> str | None:
    """``"needs bluesky: pip install 'braggscope[beamline]'"`` for a missing optional package, else None."""
    name = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    extra = EXTRA_OF_MODULE.get((name or "").split(".")[0])
    return None if extra is None else f"needs {name.split('.')[0]}: pip install 'braggscope[{extra}]'"


def require_extra(what: str, *modules: str) -> None:
    """Raise :class:`MissingExtraError` (one line, naming the extra) unless every module is importable.

    Parameters
    ----------
    what : str
        What needs them, as the message starts (``"braggscope sim"``, ``"--scheduler local"``).
    modules : str
        Top-level module names, keys of :data:`EXTRA_OF_MODULE`.
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extras = {EXTRA_OF_MODULE[m] for m in missing}
        if "facility" in extras:  # the facility extra brings the beamline's
            extras.discard("beamline")
        extras = sorted(extras)
        raise MissingExtraError(f"{what} needs {', '.join(missing)}: pip install "
                                + " ".join(f"'braggscope[{e}]'" for e in extras))
