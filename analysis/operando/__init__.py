"""Operando campaigns reduced: the checkpoints of one particle as a series (``series``), the cell's
voltage curve (``curve``) and the series' figures and movie (``figures``)."""

from .curve import campaign_curve
from .figures import save_series_figures
from .series import measured_checkpoints, reduce_campaign, reduce_series, series_summary, write_series

__all__ = ["campaign_curve", "measured_checkpoints", "reduce_campaign", "reduce_series", "save_series_figures",
           "series_summary", "write_series"]
