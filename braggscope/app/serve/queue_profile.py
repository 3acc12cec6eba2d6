"""The braggscope profile for bluesky-queueserver: devices, RunEngine and plans of a queued beamline.

The queue server (``start-re-manager``) runs its RunEngine in a worker
process that executes a *startup directory*
(:func:`braggscope.app.serve.queue_startup.write_startup_dir`): a one-line
startup script that imports :func:`build_namespace` here, and the user-group
permissions file. ``braggscope serve`` writes and starts it; tests do the same.

:func:`build_namespace` builds what the worker needs, from the braggscope
configuration (``$BRAGGSCOPE_CONFIG``, as everywhere):

- the devices: the PVs of ``[pv]`` (``[queue] devices = "epics"``; for a
  simulated beamline the running simulator, found through its state file) or
  in-process simulated devices (``"inprocess"``);
- a RunEngine with the scan-setup baseline, the catalog writer
  (``[storage]``: the embedded catalog or the tiled server), the beam's
  suspenders and monitor (``[beam]``) and the document bus publisher
  (``[bus] url``);
- the queue-facing plans below;
- the operator's commands (``ascan``, ``mv``, ``cen``, ``sxdm``, ``kmap``, ``calibrate`` ...) as plans
  that run the session's own commands (:mod:`braggscope.app.serve.queue_commands`), and the
  functions ``shell_read`` (``wa``, ``wm``, ``where``) and ``command_reply``, for ``braggscope shell
  --queue``.

The queue-facing plans are braggscope's plans with signatures the queue
server can check *at submission*: every parameter has a type it turns into a
pydantic model (``tuple[float, float, int]``, ``list[float]``, ``bool`` ...),
devices are named from the groups of devices that exist (``detectors`` from
the detectors, ``x_motor`` from the piezo ...), and the angles carry the
motor limits of ``[limits]`` (``min``/``max``). A wrong type, an unknown
device or an angle outside the limits is refused by ``item_add`` with the
queue server's message. The value checks of braggscope's plans (ranges,
NaN/inf, corrected raster extents within the limits, sampling) run when the
item starts, before any motion: the item then fails, and its history entry
carries the one-line :class:`~braggscope.core.errors.ArgumentError` message
(``result["msg"]``).
"""

from __future__ import annotations

from bluesky import plan_stubs as bps
from bluesky import plans as bp
from bluesky.utils import MsgGenerator
from bluesky_queueserver import parameter_annotation_decorator

from braggscope import plans, storage
from braggscope.app.beamline.connect import inprocess_devices
from braggscope.app.beamline.runengine import recording_run_engine
from braggscope.app.beamline.simulator import apply_client_env, checked_state, state_file_for
from braggscope.app.bus.settings import publisher_from_config
from braggscope.app.serve.queue_commands import PLAN_COMMANDS, CommandBridge
from braggscope.core.config import load_config
from braggscope.core.errors import ConfigError
from braggscope.devices.factory import make_devices
from braggscope.plans.beam import BeamPolicy
from braggscope.plans.guard import install_guard
from braggscope.storage.scan_ids import install_scan_ids

__all__ = ["QUEUE_PLANS", "build_namespace", "sxdm_map", "sxdm_fly", "calibrate_eccentricity", "bcdi_rocking",
           "dry_run", "count"]

#: The plans of the profile (names in the worker namespace); the commands' plans come besides.
QUEUE_PLANS = ("sxdm_map", "sxdm_fly", "calibrate_eccentricity", "bcdi_rocking", "dry_run", "count")

#: Device groups the plans accept, by role (names present in the namespace are kept).
PIEZO = ("pix", "piy", "piz")
ROCKING = ("eta", "phi")
AXES = ("nu", "delta", "energy")

#: Devices of the namespace (set by build_namespace; dry_run resolves names through it).
_DEVICES: dict = {}
#: The commands of the namespace (set by build_namespace; sxdm_fly takes its fly scanner).
_BRIDGE: list = []


def build_namespace(cfg=None) -> dict:
    """The worker namespace: ``cfg``, ``RE``, the devices by name and the queue-facing plans.

    Parameters
    ----------
    cfg : braggscope.core.config.Config, optional
        Default: ``load_config()`` (``$BRAGGSCOPE_CONFIG`` or the packaged defaults).

    Returns
    -------
    dict
    """
    cfg = load_config() if cfg is None else cfg
    devices = _devices(cfg)
    _DEVICES.clear()
    _DEVICES.update(devices)
    catalog = storage.open_catalog(cfg)
    RE = recording_run_engine(devices, catalog, beam=BeamPolicy.from_config(cfg))
    install_guard(RE)  # every plan: a lost IOC or a stalled detector ends the run, named
    install_scan_ids(RE, cfg, catalog)  # the shells' counter: a local shell's runs and the queue's never share an id
    bus = publisher_from_config(cfg)
    if bus is not None:
        RE.subscribe(bus)
    ns = {"cfg": cfg, "RE": RE, "bus": bus, **devices}
    bridge = CommandBridge(RE, devices, cfg, detector=cfg.get("detector.name", "mpx1x4"))
    _BRIDGE[:] = [bridge]
    for name in QUEUE_PLANS:
        ns[name] = _annotated(name, devices, cfg)
    ns.update({name: _command_plan(bridge, name) for name in PLAN_COMMANDS})
    ns.update(shell_read=bridge.read, command_reply=bridge.reply)
    return ns


def _command_plan(bridge: CommandBridge, name: str):
    """The queue plan of the session's command ``name`` (``reply``: where the shell finds its output)."""

    def plan(*args, reply: str = "", **kwargs) -> MsgGenerator:
        return (yield from bridge.plan(name, args, kwargs, reply))

    doc = (getattr(bridge.commands, name).__doc__ or "").strip().splitlines()
    plan.__name__ = plan.__qualname__ = name
    plan.__doc__ = f"{doc[0] if doc else name} (the session's ``{name}``, run by the queue)."
    return plan


def _devices(cfg) -> dict:
    """The beamline's devices (``[queue] devices``); a simulated beamline's simulator must run already."""
    kind = cfg.get("queue.devices", "epics")
    if kind == "inprocess":
        return inprocess_devices(cfg)
    if kind != "epics":
        raise ConfigError(f"[queue] devices must be 'epics' or 'inprocess', got {kind!r}")
    if cfg.get("beamline.simulated", False):
        handle, why = checked_state(state_file_for(cfg))
        if handle is None:
            raise ConfigError(f"[beamline] simulated = true but no simulator runs ({why}): "
                              "start it first (braggscope serve, or braggscope sim start)")
        apply_client_env(handle.port)
    devices = make_devices(cfg, connect_timeout=30.0)
    detector = devices.pop("detector")  # by its own name (mpx1x4), as in-process and in the documents
    devices[detector.name] = detector
    return devices


# --------------------------------------------------------------------------- queue-facing plans
def sxdm_map(detectors: list, x_motor, x_range: tuple[float, float, int], y_motor, y_range: tuple[float, float, int],
             eta_motor, etas: list[float], *, eccentricity: dict | None = None, snake: bool = True,
             sample: str | None = None, md: dict | None = None) -> MsgGenerator[str]:
    """3D-SXDM map: :func:`braggscope.plans.sxdm_map` from the queue.

    Parameters
    ----------
    detectors : list of str
        Detector names (the area detector first), e.g. ``["mpx1x4"]``.
    x_motor, y_motor : str
        Piezo axes (``pix``, ``piy``, ``piz``).
    x_range, y_range : [start, stop, num]
        Raster ranges (um, um, points).
    eta_motor : str
        Rocking motor (``eta``).
    etas : list of float
        Rocking angles (deg).
    eccentricity : dict, optional
        ``EccentricityModel.to_dict()`` (eta0, x, y).
    snake : bool
    sample : str, optional
    md : dict, optional
    """
    return (yield from plans.sxdm_map(detectors, x_motor, x_range, y_motor, y_range, eta_motor, etas,
                                      eccentricity=eccentricity, snake=snake, sample=sample, md=md))


def sxdm_fly(x_motor, x_range: tuple[float, float, int], y_motor, y_range: tuple[float, float, int], eta_motor,
             etas: list[float], *, dwell_s: float, snake: bool = False, eccentricity: dict | None = None,
             max_retries: int = 2, sample: str | None = None, md: dict | None = None) -> MsgGenerator[str]:
    """3D-SXDM map flown: :func:`braggscope.plans.sxdm_fly` from the queue, with the beamline's fly scanner.

    Parameters
    ----------
    x_motor, y_motor : str
        Fast (flown) and slow piezo axes (``pix``, ``piy``: the fly scanner's).
    x_range, y_range : [start, stop, num]
        Raster ranges (um, um, points).
    eta_motor : str
        Rocking motor (``eta``).
    etas : list of float
        Rocking angles (deg).
    dwell_s : float
        Time per point (s).
    snake : bool
    eccentricity : dict, optional
        ``EccentricityModel.to_dict()`` (eta0, x, y).
    max_retries : int
        Retries of a short line.
    sample : str, optional
    md : dict, optional
    """
    flyer = _BRIDGE[0].commands.flyer()
    return (yield from plans.sxdm_fly([flyer], x_motor, x_range, y_motor, y_range, eta_motor, etas, dwell_s=dwell_s,
                                      snake=snake, eccentricity=eccentricity, max_retries=max_retries, sample=sample,
                                      md=md))


def calibrate_eccentricity(detectors: list, x_motor, x_range: tuple[float, float, int], y_motor,
                           y_range: tuple[float, float, int], eta_motor, etas: list[float], *,
                           intensity_field: str | None = None, quadratic: bool = True, threshold: float = 0.2,
                           locate: str = "com", map_pixel_um: float | None = None,
                           map_etas: list[float] | None = None, md: dict | None = None) -> MsgGenerator:
    """Eccentricity calibration: :func:`braggscope.plans.calibrate_eccentricity` from the queue.

    The report and verdict are printed (the queue server's console output).

    Parameters
    ----------
    detectors, x_motor, x_range, y_motor, y_range, eta_motor, etas
        As for :func:`sxdm_map` (coarse maps, um and deg).
    intensity_field : str, optional
        Field to locate the crystal in (default: the detector's).
    quadratic : bool
    threshold : float
        Mask threshold (fraction of the map maximum).
    locate : {"com", "register"}
    map_pixel_um : float, optional
    map_etas : list of float, optional
    md : dict, optional
    """
    result = yield from plans.calibrate_eccentricity(
        detectors, x_motor, x_range, y_motor, y_range, eta_motor, etas, intensity_field=intensity_field,
        quadratic=quadratic, threshold=threshold, locate=locate, map_pixel_um=map_pixel_um, map_etas=map_etas,
        md=md)
    print(result, flush=True)
    return result


def bcdi_rocking(detectors: list, eta_motor, eta_center: float, *, size_m: float, d_spacing: float,
                 oversampling: float = 2.0, step_deg: float | None = None, eta_range: float | None = None,
                 n_fringes: float = 12.0, x_motor=None, y_motor=None, x_um: float | None = None,
                 y_um: float | None = None, eccentricity: dict | None = None, allow_undersampling: bool = False,
                 reflection: list[int] | None = None, sample: str | None = None,
                 md: dict | None = None) -> MsgGenerator[str]:
    """BCDI rocking scan: :func:`braggscope.plans.bcdi_rocking` from the queue (energy read from ``energy``).

    Parameters
    ----------
    detectors : list of str
    eta_motor : str
    eta_center : float
        Centre of the rocking curve (deg).
    size_m : float
        Particle size (m).
    d_spacing : float
        Reflection d-spacing (Angstrom).
    oversampling, step_deg, eta_range, n_fringes, allow_undersampling
        As for :func:`braggscope.plans.bcdi_rocking` (deg).
    x_motor, y_motor : str, optional
    x_um, y_um : float, optional
        Crystal position at ``eccentricity.eta0`` (um).
    eccentricity : dict, optional
    reflection : list of int, optional
    sample : str, optional
    md : dict, optional
    """
    return (yield from plans.bcdi_rocking(
        detectors, eta_motor, eta_center, size_m=size_m, d_spacing=d_spacing, energy=_DEVICES.get("energy"),
        oversampling=oversampling, step_deg=step_deg, eta_range=eta_range, n_fringes=n_fringes, x_motor=x_motor,
        y_motor=y_motor, x_um=x_um, y_um=y_um, eccentricity=eccentricity, allow_undersampling=allow_undersampling,
        reflection=reflection, sample=sample, md=md))


def dry_run(plan, kwargs: dict | None = None, *, acquire_time_s: float | None = None) -> MsgGenerator:
    """Check a plan without moving anything: :func:`braggscope.plans.dry_run` from the queue.

    Nothing is staged, triggered or moved. The summary (points, moves,
    estimated time) is printed; the item fails, naming them, when the plan's
    argument checks fail or a set-point is outside a motor's limits.

    Parameters
    ----------
    plan : str
        ``sxdm_map``, ``calibrate_eccentricity`` or ``bcdi_rocking``.
    kwargs : dict
        The plan's parameters by name; device names are strings, as in a queue item.
    acquire_time_s : float, optional
        Exposure per point for the time estimate (s).
    """
    if not callable(plan):
        raise TypeError(f"plan must be one of {QUEUE_PLANS[:3]}, got {plan!r}")
    summary = plans.dry_run(plan(**_resolve_devices(kwargs or {})), acquire_time_s=acquire_time_s,
                            raise_on_violation=True)
    print(summary, flush=True)
    yield from bps.null()
    return summary


def count(detectors: list, num: int = 1, delay: float | None = None, *, md: dict | None = None) -> MsgGenerator[str]:
    """Take ``num`` readings of the detectors (``bluesky.plans.count``).

    Parameters
    ----------
    detectors : list of str
    num : int
    delay : float, optional
        Seconds between readings.
    md : dict, optional
    """
    return (yield from bp.count(detectors, num=num, delay=delay, md=md))


# --------------------------------------------------------------------------- annotations for the queue
def _annotated(name: str, devices: dict, cfg):
    """A copy of the plan ``name`` with the queue server's parameter annotation for these devices."""
    function = globals()[name]
    detectors = tuple(n for n in (cfg.get("detector.name", "mpx1x4"), "xrf", "mon1") if n in devices)
    motors = tuple(n for n in (*PIEZO, *ROCKING, *AXES) if n in devices)
    groups = {"Detectors": detectors, "Piezo": tuple(n for n in PIEZO if n in devices),
              "Rocking": tuple(n for n in ROCKING if n in devices), "Motors": motors}
    eta_limits = (cfg.get("limits.eta") or [None, None])

    def device(annotation, group, **extra):
        return {"annotation": annotation, "devices": {group: groups[group]}, **extra}

    def angles(**extra):
        low, high = eta_limits
        return {k: v for k, v in (("min", low), ("max", high)) if v is not None} | extra

    raster = {"detectors": device("typing.List[Detectors]", "Detectors"),
              "x_motor": device("Piezo", "Piezo"), "y_motor": device("Piezo", "Piezo"),
              "eta_motor": device("Rocking", "Rocking"), "etas": angles(annotation="typing.List[float]")}
    parameters = {
        "sxdm_map": raster,
        "sxdm_fly": {k: v for k, v in raster.items() if k != "detectors"},
        "calibrate_eccentricity": {**raster, "locate": {"annotation": "Locate", "enums": {"Locate": ("com",
                                                                                                   "register")}}},
        "bcdi_rocking": {"detectors": raster["detectors"], "eta_motor": raster["eta_motor"],
                         "eta_center": angles(annotation="float"),
                         "x_motor": device("typing.Optional[Piezo]", "Piezo"),
                         "y_motor": device("typing.Optional[Piezo]", "Piezo")},
        "dry_run": {"plan": {"annotation": "Plans", "plans": {"Plans": ("sxdm_map", "calibrate_eccentricity",
                                                                         "bcdi_rocking")}}},
        "count": {"detectors": raster["detectors"]},
    }[name]

    return parameter_annotation_decorator({"parameters": parameters})(function)  # a wrapper; `function` unchanged


def _resolve_devices(value):
    """Device names (strings) in a queue item's nested parameters replaced by the devices."""
    if isinstance(value, str):
        return _DEVICES.get(value, value)
    if isinstance(value, dict):
        return {k: _resolve_devices(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve_devices(v) for v in value)
    return value
