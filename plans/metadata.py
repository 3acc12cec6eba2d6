"""Start-document pieces shared by the braggscope plans: the setup, the detector names."""

from __future__ import annotations

from collections.abc import Sequence

from braggscope.core.errors import ArgumentError
from braggscope.core.setup import ScanSetup

__all__ = ["area_detector", "main_detector", "names", "setup_metadata"]


def setup_metadata(setup: ScanSetup | None) -> dict:
    """Start-document piece ``{"setup": {...}}`` of an explicit setup, or ``{}``.

    Without one, the run's setup is what the devices record: the area
    detector's geometry configuration signals in every event descriptor and
    the baseline readings (``energy``, ``delta``, ``nu``, ``phi``).
    """
    if setup is None:
        return {}
    if not isinstance(setup, ScanSetup):
        raise ArgumentError(f"setup must be a braggscope.core.setup.ScanSetup, got {type(setup).__name__}")
    return setup.to_start_doc()


def area_detector(devices: Sequence):
    """The diffraction detector among ``devices`` (the first that is not Bragg-independent), else None."""
    for d in devices:
        if not getattr(d, "bragg_independent", False):
            return d
    return None


def names(devices: Sequence) -> list[str]:
    """The devices' ophyd names (their repr where they have none)."""
    return [getattr(d, "name", repr(d)) for d in devices]


def main_detector(devices: Sequence) -> str:
    """Name of the diffraction detector among ``devices`` (the first that is not a
    Bragg-independent counter such as the fluorescence detector), else of the first device."""
    d = area_detector(devices)
    return getattr(d, "name", repr(d)) if d is not None else names(devices)[0]
