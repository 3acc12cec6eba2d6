"""The cell's voltage curve over a campaign, from what its runs recorded of the potentiostat.

Every run of a campaign carries the cell's state in its start document; the fly-map measurements also
carry the potentiostat during the run (its monitor streams). The curve is all of it on one axis: the
protocol's time (the baselines and a step map's per-point readings are not read: one request each, for
points the start documents already give to within a checkpoint).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from braggscope.storage import find_runs

__all__ = ["campaign_curve", "CURVE_FIELDS"]

#: The fields of the curve (the potentiostat's, :data:`braggscope.core.electrochem.STATE_FIELDS` but the counters).
CURVE_FIELDS = ("time_s", "voltage", "current", "charge", "lithium")
_DEVICE = "potentiostat"


def campaign_curve(client, campaign_id: str) -> xr.Dataset:
    """The campaign's electrochemical record: ``time_s`` (protocol, s), ``voltage`` (V), ``current`` (mA),
    ``charge`` (mAh), ``lithium``, along a ``sample`` dimension in time order (wall-clock ``wall``)."""
    series = {field: ([], []) for field in CURVE_FIELDS}  # field -> (wall times, values)
    for run in find_runs(client, campaign_id=campaign_id):
        start = run.metadata["start"]
        state = (start.get("operando") or {}).get("state")  # read just before the run started
        for field in CURVE_FIELDS:
            if state and state.get(field) is not None:
                series[field][0].append(float(start["time"]))
                series[field][1].append(float(state[field]))
        if start.get("operando_role") != "measure":
            continue  # the tracking runs: their start's state is all they hold of the cell
        streams = set(run)  # the names only: a fly map's primary stream (its frames) is not read
        for field in CURVE_FIELDS:
            stream = f"{_DEVICE}_{field}_monitor"
            if stream in streams:
                _collect(run[stream], field, series)
    walls = np.unique(np.concatenate([np.asarray(series[f][0], float) for f in CURVE_FIELDS] + [np.zeros(0)]))
    data = {}
    for field in CURVE_FIELDS:
        t, v = (np.asarray(a, float) for a in series[field])
        order = np.argsort(t)
        data[field] = ("sample", np.interp(walls, t[order], v[order]) if t.size else np.full(walls.size, np.nan))
    ds = xr.Dataset(data, coords={"wall": ("sample", walls)})
    ds = ds.sortby("time_s")
    for field, unit in (("time_s", "s"), ("voltage", "V"), ("current", "mA"), ("charge", "mAh")):
        ds[field].attrs["units"] = unit
    ds.attrs["campaign_id"] = campaign_id
    return ds


def _collect(node, field: str, series: dict) -> None:
    """The potentiostat's ``field`` in its monitor stream of a run, with their wall-clock times."""
    key = f"{_DEVICE}_{field}"
    try:
        table = node.read([key, "time"])
    except (KeyError, ValueError):
        return
    if key in table and "time" in table:
        series[field][0].extend(np.asarray(table["time"], float).tolist())
        series[field][1].extend(np.asarray(table[key], float).tolist())
