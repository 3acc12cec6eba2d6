"""braggscope.plans: bluesky plans for SXDM and BCDI.

All plans are generators of ``bluesky.Msg`` (``-> MsgGenerator``) that check
their arguments before the first message, so bad input never moves a motor.
"""

from .bcdi import bcdi_angles, bcdi_rocking
from .calibrate import calibrate_eccentricity, crystal_position, plot_calibration, store_eccentricity
from .dryrun import DryRunSummary, dry_run
from .fly import FlyLineError, sxdm_fly
from .sxdm import sxdm_map, sxdm_points

__all__ = [
    "sxdm_map",
    "sxdm_points",
    "sxdm_fly",
    "FlyLineError",
    "bcdi_rocking",
    "bcdi_angles",
    "calibrate_eccentricity",
    "crystal_position",
    "plot_calibration",
    "store_eccentricity",
    "dry_run",
    "DryRunSummary",
]
