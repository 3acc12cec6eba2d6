"""An operando campaign reduced: every checkpoint's map in one particle frame, with the cell's state.

:func:`reduce_series` reads the campaign's measurements from the catalog (one per checkpoint, the last
that ended ``success``), reduces each SXDM map (:func:`braggscope.analysis.sxdm.reduce_map` on
:func:`braggscope.storage.sxdm_stack`) and places them in one particle frame: each map's coordinates
are taken relative to the particle's centre the campaign found at that checkpoint, then refined by
registering the integrated-intensity maps on the reference checkpoint's (sub-pixel phase correlation,
:func:`braggscope.analysis.sxdm.drift.measure_drift`), and resampled on the reference's grid.
BCDI checkpoints go through :func:`braggscope.analysis.bcdi.series.reconstruct_series` (one set of
conventions, phases referred to the reference scan's Bragg vector).

The result is one ``xarray.Dataset`` with a ``checkpoint`` dimension, the cell's state as
coordinates along it (``time_s``, ``voltage``, ``current``, ``charge``, ``lithium``, ``cycle``,
``step``: the mean over the measurement where the potentiostat was recorded during it, else at its
start) and the series' summary per checkpoint: mean and spread of d-spacing (Angstrom) and of the
strain relative to the reference checkpoint's mean d-spacing (microstrain).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import xarray as xr

from braggscope.core.atomic import atomic_path
from braggscope.core.electrochem import STATE_FIELDS
from braggscope.core.errors import InputError
from braggscope.storage import find_runs, rocking_stack, sxdm_stack

from ..nexus import set_default, write_nxdata
from ..sxdm import reduce_map
from ..sxdm.drift import measure_drift
from .curve import campaign_curve
from .figures import save_series_figures

__all__ = ["measured_checkpoints", "reduce_campaign", "reduce_series", "series_summary", "write_series",
           "MAP_VARIABLES"]

#: The map variables carried into the series.
MAP_VARIABLES = ("intensity", "mask", "d_spacing", "strain", "tilt_altitude", "tilt_azimuth")
SXDM_PLANS = ("sxdm_map", "sxdm_fly")


def measured_checkpoints(client, campaign_id: str) -> list:
    """``(checkpoint, run)`` of the campaign's successful measurements, in checkpoint order (the newest of a
    checkpoint measured twice)."""
    chosen = {}
    for run in find_runs(client, campaign_id=campaign_id, operando_role="measure"):  # newest first
        if (run.metadata.get("stop") or {}).get("exit_status") != "success":
            continue
        chosen.setdefault(int(run.metadata["start"]["checkpoint"]), run)
    if not chosen:
        raise InputError(f"campaign {campaign_id!r}: no successful measurement in the catalog "
                         "(is the campaign id right? braggscope catalog / db.search(campaign_id=...))")
    return sorted(chosen.items())


def reduce_series(client, campaign_id: str, *, register: bool = True, reference: int = 0, progress=None,
                  bcdi: dict | None = None, **reduce_kwargs) -> xr.Dataset:
    """Reduce every checkpoint of a campaign into one dataset (module docstring).

    Parameters
    ----------
    client : tiled client
        The catalog (``braggscope.storage.open_catalog(cfg)``).
    campaign_id : str
    register : bool
        Refine the particle frame by registering the maps (SXDM).
    reference : int
        Position (in checkpoint order) of the reference checkpoint.
    progress : callable, optional
        Called with a one-line message per checkpoint.
    bcdi : dict, optional
        Keywords of :func:`~braggscope.analysis.bcdi.series.reconstruct_series` (BCDI campaigns).
    **reduce_kwargs
        Passed to :func:`~braggscope.analysis.sxdm.reduce_map` (threshold, roi, ...).

    Returns
    -------
    xarray.Dataset
        Dimensions ``(checkpoint, y, x)`` (SXDM, particle frame in um) or ``(checkpoint, z, y, x)`` (BCDI).
    """
    measured = measured_checkpoints(client, campaign_id)
    if not 0 <= reference < len(measured):
        raise InputError(f"reference must be in [0, {len(measured)}), got {reference}")
    plans = {run.metadata["start"].get("plan_name") for _, run in measured}
    states = [measurement_state(run) for _, run in measured]
    if plans == {"bcdi_rocking"}:
        ds = _bcdi_series(measured, reference, bcdi or {})
    elif plans <= set(SXDM_PLANS):
        ds = _sxdm_series(measured, reference, register, progress, reduce_kwargs)
    else:
        raise InputError(f"campaign {campaign_id!r} mixes measurements {sorted(map(str, plans))}: reduce each kind "
                         "on its own")
    ds = _with_states(ds, [c for c, _ in measured], states, [run.metadata["start"]["uid"] for _, run in measured])
    ds.attrs.update(campaign_id=campaign_id, reference_checkpoint=int(measured[reference][0]))
    return series_summary(ds)


def measurement_state(run) -> dict:
    """The cell's state over a measurement: the mean of what the potentiostat reported during it (monitor
    streams of a fly map, per-point readings of a step map), else its state at the start."""
    start = run.metadata["start"]
    state = dict((start.get("operando") or {}).get("state") or {})
    name = "potentiostat"
    for field in ("time_s", "voltage", "current", "charge", "lithium"):
        values = _recorded(run, f"{name}_{field}")
        if values is not None and values.size:
            state[field] = float(np.mean(values))
            state[f"{field}_range"] = [float(values.min()), float(values.max())]
    return state


def _recorded(run, key: str):
    """The values of ``key`` recorded during the run (its monitor stream, or its primary stream)."""
    for stream in (f"{key}_monitor", "primary"):
        if stream not in run:
            continue
        try:
            table = run[stream].read([key])
        except (KeyError, ValueError):
            continue
        if key in table:
            return np.asarray(table[key], dtype=float)
    return None


def _sxdm_series(measured, reference: int, register: bool, progress, reduce_kwargs) -> xr.Dataset:
    maps = []
    for checkpoint, run in measured:
        if progress is not None:
            progress(f"checkpoint {checkpoint}: reducing run {run.metadata['start']['uid'][:8]}")
        reduced = reduce_map(sxdm_stack(run), **reduce_kwargs)
        position = run.metadata["start"]["operando"]["position"]
        maps.append(reduced.assign_coords(x=reduced.x - position["x"], y=reduced.y - position["y"]))
    grid = maps[reference]
    placed = [_resampled(m, grid.x.values, grid.y.values, (0.0, 0.0)) for m in maps]
    shifts = np.zeros((len(maps), 2))
    if register and len(maps) > 1:
        shifts = _registration(placed, reference, grid)
        placed = [_resampled(m, grid.x.values, grid.y.values, s) for m, s in zip(maps, shifts)]
    ds = xr.concat(placed, dim="checkpoint", combine_attrs="drop_conflicts")
    ds["shift_y_um"] = ("checkpoint", shifts[:, 0])
    ds["shift_x_um"] = ("checkpoint", shifts[:, 1])
    ds.x.attrs.update(units="um", long_name="x from the particle's centre")
    ds.y.attrs.update(units="um", long_name="y from the particle's centre")
    return ds


def _resampled(maps: xr.Dataset, x, y, shift_um) -> xr.Dataset:
    """``maps``'s variables on the grid ``x``, ``y`` (um), the map moved by ``shift_um`` (dy, dx).

    Linear interpolation that leaves out the missing values (NaN outside a map's mask) instead of
    spreading them: each value is the weighted mean of its finite neighbours, kept where they carry at
    least half the weight (a NaN times a zero weight is NaN: plain interpolation lost every pixel next
    to a missing one, the particle's rim, even on the map's own grid).
    """
    moved = maps.assign_coords(x=maps.x + shift_um[1], y=maps.y + shift_um[0])
    out = {}
    for name in MAP_VARIABLES:
        if name not in moved:
            continue
        if name == "mask":
            out[name] = moved[name].astype(float).interp(x=x, y=y, method="linear") > 0.5
            continue
        values = moved[name].astype(float)
        finite = values.notnull()
        weight = finite.astype(float).interp(x=x, y=y, method="linear")
        total = values.where(finite, 0.0).interp(x=x, y=y, method="linear")
        out[name] = (total / weight).where(weight >= 0.5)
    ds = xr.Dataset(out)
    ds["d_spacing"] = ds["d_spacing"].where(ds["mask"])
    return ds


def _registration(placed, reference: int, grid) -> np.ndarray:
    """Shifts (dy, dx, um) that bring each map onto the reference's, from their intensity maps."""
    stack = np.stack([np.nan_to_num(np.asarray(m["intensity"].values, float)) for m in placed])
    drift = measure_drift(stack, 20, reference=reference, normalization=None, warn=False)
    step_y = float(np.median(np.diff(grid.y.values)))
    step_x = float(np.median(np.diff(grid.x.values)))
    pixels = np.asarray(drift.shifts, float)
    return np.column_stack([pixels[:, 0] * step_y, pixels[:, 1] * step_x])


def _bcdi_series(measured, reference: int, options: dict) -> xr.Dataset:
    from ..bcdi.series import reconstruct_series  # the phasing stack: only BCDI campaigns need it

    stacks = [rocking_stack(run) for _, run in measured]
    series = reconstruct_series(stacks, labels=[str(c) for c, _ in measured], reference=reference,
                                progress=False, **options)
    ds = series.dataset.rename({"scan": "checkpoint"})
    return ds.assign_coords(checkpoint=("checkpoint", [c for c, _ in measured]))


def _with_states(ds: xr.Dataset, checkpoints, states, uids) -> xr.Dataset:
    coords = {"checkpoint": ("checkpoint", np.asarray(checkpoints, dtype=int))}
    for field in STATE_FIELDS:
        coords[field] = ("checkpoint", np.array([float(s.get(field, np.nan)) for s in states]))
    ds = ds.assign_coords(coords)
    ds["uid"] = ("checkpoint", np.array(uids, dtype=str))
    for field, unit in (("time_s", "s"), ("voltage", "V"), ("current", "mA"), ("charge", "mAh")):
        ds[field].attrs["units"] = unit
    ds["lithium"].attrs["long_name"] = "lithium content x of the electrode"
    return ds


def series_summary(ds: xr.Dataset) -> xr.Dataset:
    """Add per checkpoint: ``d_mean``, ``d_std`` (Angstrom, over each map's mask) and ``strain_mean``,
    ``strain_std`` (microstrain, relative to the reference checkpoint's mean d-spacing)."""
    if "d_spacing" not in ds:
        return ds
    spatial = [d for d in ds["d_spacing"].dims if d != "checkpoint"]
    d = ds["d_spacing"]
    ds["d_mean"] = d.mean(spatial)
    ds["d_std"] = d.std(spatial)
    ref = ds.attrs.get("reference_checkpoint", int(ds.checkpoint.values[0]))
    d_ref = float(ds["d_mean"].sel(checkpoint=ref))
    series_strain = (d - d_ref) / d_ref * 1e6
    ds["strain_mean"] = series_strain.mean(spatial)
    ds["strain_std"] = series_strain.std(spatial)
    for name, unit in (("d_mean", "Angstrom"), ("d_std", "Angstrom"), ("strain_mean", "microstrain"),
                       ("strain_std", "microstrain")):
        ds[name].attrs["units"] = unit
    ds.attrs["strain_reference"] = f"mean d-spacing of checkpoint {ref}: {d_ref:.6f} A"
    return ds


def write_series(ds: xr.Dataset, path) -> Path:
    """The series as NeXus, written atomically; returns the path. ``entry/series``: the maps
    (checkpoint, y, x); ``entry/series_checkpoint``: the cell's state and the summary along ``checkpoint``
    (time_s, voltage, current, charge, lithium, cycle, step, d_mean ...); one NXdata per group of dimensions."""
    path = Path(path)
    out = ds.reset_coords([c for c in ds.coords if c not in ds.dims])
    out = out.drop_vars([v for v in out.data_vars if out[v].dtype.kind in "US"])
    out["mask"] = out["mask"] if "mask" in out else out["d_spacing"].notnull()
    signal = "d_spacing" if "d_spacing" in out else next(iter(out.data_vars))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["campaign_id"] = str(ds.attrs.get("campaign_id", ""))
        write_nxdata(entry, "series", out, signal=signal)
        set_default(f, "entry/series")
    return path


def reduce_campaign(client, campaign_id: str, out, *, figures=None, progress=None, **kwargs):
    """Reduce the campaign (:func:`reduce_series`, ``kwargs`` passed on), write the series to ``out``
    (:func:`write_series`) and, with ``figures`` (a directory), the figures and the movie
    (:func:`~.figures.save_series_figures`, the voltage curve from :func:`~.curve.campaign_curve`).

    Returns ``(series, paths)``: the dataset and name -> path of what was written (``series`` the file).
    Nothing is written when the reduction fails.
    """
    series = reduce_series(client, campaign_id, progress=progress, **kwargs)
    paths = {"series": write_series(series, out)}
    if figures is not None:
        paths.update(save_series_figures(series, figures, curve=campaign_curve(client, campaign_id)))
    return series, paths
