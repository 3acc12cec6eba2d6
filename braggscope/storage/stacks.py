"""Runs read back as typed stacks: :func:`sxdm_stack` and :func:`rocking_stack`.

``sxdm_stack(run)`` gives a :class:`~braggscope.core.stacks.MapStack` whose frames are
``(n_eta, ny, nx, rows, cols)`` in raster order (snake undone), ``rocking_stack(run)`` a
:class:`~braggscope.core.stacks.RockingStack` of ``(n_eta, rows, cols)``; both lazy (dask),
each event's own frame (paired by unique id, :class:`~braggscope.storage.frames.FramePairing`),
read straight from the detector's HDF5 file when it is on this computer, else through the catalog.
The scalar readings of the primary stream (the incident-flux monitor ``mon1``, the fluorescence
counter ``xrf_counts``, ...) come along as the stack's ``counters``; the start document's ``monitor``
and ``fluorescence`` name the fields to normalise by and to register the drift on (default: ``mon1``,
and ``xrf_counts`` or ``ct_fluo``, when recorded).
"""

from __future__ import annotations

import numpy as np

from braggscope.core.setup import ScanSetup, SetupError
from braggscope.core.stacks import DEFAULT_COUNTERS, MapStack, RockingStack
from braggscope.storage.fly_stream import fly_arrays, fly_x_from_captured
from braggscope.storage.frames import frames_node, paired_frames
from braggscope.storage.layout import map_layout

__all__ = ["sxdm_stack", "rocking_stack"]


def sxdm_stack(run, *, field: str | None = None) -> MapStack:
    """The frames of a map run, raster order restored, with where each was taken.

    A map run is an ``sxdm_map``, an ``sxdm_fly`` or a bluesky ``grid_scan`` over rocking
    angle, slow and fast piezo axes (:func:`braggscope.storage.layout.map_layout`).

    Parameters
    ----------
    run : BlueskyRun (tiled client)
    field : str, optional
        Detector field of the primary stream; default the setup's image field.

    Returns
    -------
    MapStack
        ``frames[i, j, k]`` (dask) is eta index i, slow (y) index j and fast (x) index k in
        increasing raster order; ``x``/``y`` the nominal raster coordinates (um, before the
        eccentricity correction; a fly map's ``x`` from its captured positions), ``positions``
        the measured fast and slow positions ``(n_eta, ny, nx)``, ``setup`` None when the run
        lacks a required field (:meth:`~braggscope.core.stacks.MapStack.require_setup` names it),
        ``metadata`` the start document.

    Raises
    ------
    ValueError
        If the run is not a map or is incomplete (fewer events than ``shape`` asks for; read
        ``run["primary"]`` directly then).
    """
    start = dict(run.metadata["start"])
    layout = map_layout(start)
    setup, field = _setup_and_field(run, start, field)
    n_eta, ny, nx = layout.shape
    stream = run["primary"]
    n_points = n_eta * ny * nx
    fly = start.get("plan_name") == "sxdm_fly"
    counters = _counter_fields(stream, field, exclude=(layout.fast, layout.slow, "eta"))
    if fly:  # frames and positions from the run's StreamResource files
        flat, table = fly_arrays(stream, field, (layout.fast, layout.slow) + counters)
    else:
        flat, table = paired_frames(frames_node(stream, field, run), stream=stream, field=field), None
    if flat.shape[0] < n_points:
        raise ValueError(f"run {start['uid']} is incomplete: {flat.shape[0]} of {n_points} points "
                         f"(exit status {_exit_status(run)!r}); read run['primary'] directly")
    order = layout.order()
    frames = flat[order.ravel()].reshape((n_eta, ny, nx) + tuple(flat.shape[1:]))
    table = table if table is not None else stream.read([layout.fast, layout.slow, *counters])
    values = {name: np.asarray(table[name], dtype=float)[:n_points][order]
              for name in (layout.fast, layout.slow) + counters}
    positions = {name: values.pop(name) for name in (layout.fast, layout.slow)}
    x = fly_x_from_captured(positions[layout.fast], layout.eta, start.get("eccentricity")) if fly else layout.x
    return MapStack(frames, layout.eta, setup, source=f"run {start.get('uid')}", exit_status=_exit_status(run),
                    metadata=start, x=x, y=layout.y, positions=positions, fast=layout.fast, slow=layout.slow,
                    eccentricity=start.get("eccentricity"), counters=values, **_roles(start, values))


def rocking_stack(run, *, field: str | None = None) -> RockingStack:
    """The frames of a ``bcdi_rocking`` run, ``(n_eta, rows, cols)`` (dask), with their measured angles.

    Parameters
    ----------
    run : BlueskyRun (tiled client)
    field : str, optional
        Detector field of the primary stream; default the setup's image field.

    Returns
    -------
    RockingStack
        ``eta`` the measured angles (degrees), ``d_spacing`` and ``size_m`` as the plan recorded
        them, ``metadata`` the start document.
    """
    start = dict(run.metadata["start"])
    if start.get("plan_name") != "bcdi_rocking":
        raise ValueError(f"run {start.get('uid')} is a {start.get('plan_name')!r}, not a bcdi_rocking")
    setup, field = _setup_and_field(run, start, field)
    stream = run["primary"]
    frames = paired_frames(frames_node(stream, field, run), stream=stream, field=field)
    n = len(start["eta"])
    if frames.shape[0] < n:
        raise ValueError(f"run {start['uid']} is incomplete: {frames.shape[0]} of {n} angles "
                         f"(exit status {_exit_status(run)!r})")
    counters = _counter_fields(stream, field, exclude=("eta",))
    table = stream.read(["eta", *counters])
    eta = np.asarray(table["eta"], dtype=float)[:n]
    values = {name: np.asarray(table[name], dtype=float)[:n] for name in counters}
    return RockingStack(frames[:n], eta, setup, source=f"run {start.get('uid')}", exit_status=_exit_status(run),
                        metadata=start, d_spacing=start.get("d_spacing"), size_m=start.get("size_m"),
                        counters=values, **_roles(start, values))


def _counter_fields(stream, image_field: str, *, exclude=()) -> tuple:
    """The scalar numeric fields of a stream's descriptors (counters such as ``mon1``, ``xrf_counts``),
    the image and ``exclude`` (motors) left out."""
    descriptors = getattr(stream, "descriptors", None) or stream.metadata.get("descriptors", [])
    names = []
    for descriptor in descriptors:
        for name, key in descriptor.get("data_keys", {}).items():
            if name in names or name == image_field or name in exclude:
                continue
            if list(key.get("shape") or []) == [] and key.get("dtype") in ("number", "integer"):
                names.append(name)
    return tuple(names)


def _roles(start: dict, counters: dict) -> dict:
    """``monitor`` and ``fluorescence``: the fields the start document names, else the usual ones recorded."""
    roles = {}
    for role, usual in DEFAULT_COUNTERS.items():
        named = start.get(role)
        if isinstance(named, str) and named in counters:
            roles[role] = named
        else:
            roles[role] = next((name for name in usual if name in counters), None)
    return roles


def _setup_and_field(run, start, field):
    """The run's ScanSetup (None when incomplete: the frames still load, the reduction names what
    is missing) and the frames' field (``field``, else the setup's, else ``<start detector>_image``)."""
    try:
        setup = ScanSetup.from_run(run)
    except SetupError:
        setup = None
    if field is None:
        field = setup.image_field if setup is not None else f"{start.get('detector') or 'mpx1x4'}_image"
    return setup, field


def _exit_status(run) -> str | None:
    stop = run.metadata.get("stop") or {}
    return stop.get("exit_status")
