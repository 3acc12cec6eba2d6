"""Whether figures can open windows here: on Linux only with a display (X11 or Wayland)."""

from __future__ import annotations

import os
import sys

__all__ = ["has_display"]


def has_display() -> bool:
    """True where a window can open (a Linux session over ssh or in a test has no display)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True
