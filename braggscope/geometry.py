"""Stable import path of the diffractometer geometry (``braggscope.core.geometry``).

Outside scripts rely on ``braggscope.geometry``; the code lives in the core layer.
"""

from braggscope.core.geometry import *  # noqa: F401,F403
from braggscope.core.geometry import __all__  # noqa: F401
