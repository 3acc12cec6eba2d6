"""The former home of the plans' argument checks and start-document pieces, kept for ``plans/fly.py``
until it imports from :mod:`braggscope.plans.checks` and :mod:`braggscope.plans.metadata` (then removed)."""

from .checks import *  # noqa: F403
from .metadata import area_detector, main_detector, names, setup_metadata  # noqa: F401
