"""The former home of the plans' argument checks and start-document pieces, kept for ``plans/fly.py``
until it imports from :mod:`braggscope.plans.checks` and :mod:`braggscope.plans.metadata` (then removed)."""

from .checks import (available_fields, check_angles, check_detectors, check_fields, check_number,  # noqa: F401
                     check_numbers, check_range, check_within_limits, eccentricity_model, motor_limits)
from .metadata import area_detector, main_detector, names, setup_metadata  # noqa: F401
