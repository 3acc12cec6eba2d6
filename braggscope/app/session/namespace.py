"""``braggscope shell``: an operator's IPython session, everything wired.

``make_session(cfg)`` builds the namespace without IPython (testable):
configuration, devices (the caproto simulator is started if the configuration
is simulated and none runs), a RunEngine with BestEffortCallback (plots off
when headless), progress bars, the live SXDM maps when available, the catalog
writer, and every plan.

Ctrl-C during a plan (bluesky's RunEngine behaviour):

* once: a *deferred* pause: the point in progress finishes, the plan stops at
  the next checkpoint (every point of ``sxdm_map``/``bcdi_rocking`` is one),
  and the prompt returns with the RunEngine paused;
* twice quickly: an immediate pause (the point in progress is re-done on
  resume);
* then ``RE.resume()`` continues where it stopped, ``RE.stop()`` ends the run
  as a success (exit status ``success``), ``RE.abort("reason")`` ends it as
  ``abort``, ``RE.halt()`` ends it at once without cleanup moves (``abort``).

Data: every point taken before the pause/abort/failure is kept: the frames
are in the detector's HDF5 file and the run's documents, including a stop
document with its exit status (``abort`` or ``fail``) and reason, are in the
catalog; ``load_run(catalog, -1)`` etc. read them back (``sxdm_stack`` refuses
an incomplete map and names how many points it has; read ``run["primary"]``).
"""

from __future__ import annotations

import functools

from braggscope.app.session.display import has_display
from braggscope.core import compat

__all__ = ["make_session", "reconnect_devices", "settle_live", "BANNER"]

BANNER = """braggscope session: {beamline} ({mode})
  devices : {devices}
  plans   : sxdm_map, bcdi_rocking, calibrate_eccentricity, dry_run  (help(sxdm_map))
  commands: wa, wm, mv, umv, mvr, ct, ascan, dscan, a2scan, mesh, cen, where, roi, sxdm, calibrate  (helpme())
  storage : catalog ({storage}); db[-1], db[scan_id], db["uid"], db.search(plan=, sample=, since=, until=)
  Ctrl-C  : pause after the current point; RE.resume() / RE.stop() / RE.abort("why")
  IOC lost: the run fails naming the PV; reconnect() re-reads the simulator state, then a new run
"""


def make_session(cfg, *, inprocess: bool = False, live: bool = True, headless: bool | None = None) -> dict:
    """Everything an operator needs, as a namespace dict.

    Parameters
    ----------
    cfg : braggscope.core.config.Config
    inprocess : bool
        In-process simulated devices instead of EPICS (``make_devices``).
    live : bool
        Subscribe the live SXDM maps (``braggscope.analysis.live.callback``) if present.
    headless : bool, optional
        Disable BestEffortCallback plots; default: no display available.

    Returns
    -------
    dict
        ``cfg``, ``RE``, ``bec``, ``catalog``, ``devices`` and each device by
        name (``pix``, ``eta``, ``detector`` ...), the plans and ``bps``/``bp``,
        the storage readers, ``eccentricity`` (the configured model),
        ``live`` (or None), ``__banner__`` and ``__cleanup__`` (stops what the
        session started).
    """
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    from bluesky import RunEngine
    from bluesky.callbacks.best_effort import BestEffortCallback
    from bluesky.utils import ProgressBarManager

    from braggscope import plans
    from braggscope.plans.guard import install_guard
    from braggscope import storage
    from braggscope.app.beamline.connect import Beamline, StreamedRunsAsProgress, connect_simulator, install_baseline
    from braggscope.core.eccentricity import EccentricityModel

    headless = (not has_display()) if headless is None else headless
    owner = Beamline(cfg, inprocess=inprocess)
    if inprocess:
        from braggscope.simulators.inprocess import make_inprocess_devices
        from braggscope.simulators.beamline import SimulatedBeamline

        devices = make_inprocess_devices(SimulatedBeamline.from_config(cfg), cfg.expand_path("detector.read_path"),
                                         limits=cfg["limits"])
        devices["detector"] = devices["mpx1x4"]
    elif cfg.get("beamline.simulated", False):
        devices = connect_simulator(cfg, owner)
    else:
        from braggscope.devices.factory import make_devices

        devices = make_devices(cfg, connect_timeout=30.0)
    owner.devices = devices  # released (CA channels cleared) before a simulator started here stops

    RE = RunEngine(call_returns_result=True)
    install_baseline(RE, devices)  # energy and angles of every run's scan setup
    install_guard(RE)  # every plan: a lost IOC or a stalled detector ends the run, named
    RE.waiting_hook = ProgressBarManager()
    bec = BestEffortCallback()
    bec.disable_baseline()  # the baseline records the scan setup; no table of it before and after every run
    if headless:
        bec.disable_plots()
    RE.subscribe(StreamedRunsAsProgress(bec))  # a fly scan's table would stay empty: a progress bar instead
    catalog = storage.open_catalog(cfg)
    storage.subscribe_writer(RE, catalog)
    from braggscope.storage.runs import Runs
    from braggscope.storage.scan_ids import install_scan_ids

    install_scan_ids(RE, cfg, catalog)  # scan ids continue across sessions and processes
    live_cb = live_dispatcher = live_token = None
    if live and not inprocess:
        from braggscope.app.beamline.connect import subscribe_live_maps

        live_cb, live_dispatcher, live_token = subscribe_live_maps(RE)
    from braggscope.app.bus import publisher_from_config

    bus = publisher_from_config(cfg)  # documents to `braggscope live` elsewhere, when [bus] url is set
    if bus is not None:
        RE.subscribe(bus)

    ns = {"cfg": cfg, "RE": RE, "bec": bec, "catalog": catalog, "db": Runs(catalog), "devices": devices,
          "bps": bps, "bp": bp,
          "live": live_cb, "bus": bus, "eccentricity": EccentricityModel.coerce(cfg.get("eccentricity"), "[eccentricity]")}
    ns.update(devices)
    for name in plans.__all__:
        ns[name] = getattr(plans, name)
    ns["calibrate_eccentricity"] = _printing_result(plans.calibrate_eccentricity)  # the operator sees the verdict
    from braggscope.app.commands import make_commands
    from braggscope.app.session.live_figures import install_live_figures

    commands = make_commands(RE, devices, cfg=cfg, eccentricity=ns["eccentricity"])  # wa, mv, ascan, cen ...
    ns.update(commands.namespace(), commands=commands)
    if "fly" in devices:  # the fly scanner kmap() uses, for sxdm_fly([flyer], ...) and dry(...)
        ns["flyer"] = commands.flyer()
    # live maps as a PNG refreshed in place under <data_dir>/live; 1D scans too where no window shows them
    live_figures = install_live_figures(RE, cfg, live_cb, live_dispatcher, scan_file=headless)
    ns["live_figures"] = live_figures
    for name in ("find_runs", "load_run", "sxdm_stack", "rocking_stack"):
        ns[name] = getattr(storage, name)
    mode = "in-process simulation" if inprocess else ("simulator" if cfg.get("beamline.simulated") else "EPICS")
    local = storage.catalog_handle(catalog).kind
    uri = cfg.get("storage.tiled_uri") or f"{local}, {storage.catalog_paths(cfg)['root']}"
    ns["__banner__"] = BANNER.format(beamline=cfg.get("beamline.name", "?"), mode=mode,
                                     devices=", ".join(sorted(k for k in devices if k != "mpx1x4")), storage=uri)

    def cleanup():
        if live_token is not None:
            RE.unsubscribe(live_token)
        settle_live(live_dispatcher, live_figures)  # not ns[...]: IPython empties the namespace at exit
        if bus is not None:
            bus.close()
        owner.__exit__(None, None, None)

    ns["__cleanup__"] = cleanup
    if not inprocess:
        ns["reconnect"] = lambda timeout=30.0: _reconnect_namespace(ns, timeout)
    return ns


def settle_live(dispatcher, figures: dict, timeout_s: float = 30.0) -> None:
    """Let the live maps and figures finish their work before the session's process exits.

    Python ends daemon threads wherever they are at exit; one inside matplotlib's C++ font code (the
    last map being saved) then aborts the process ("terminate called without an active exception"),
    about one exit in five right after a fly map.
    """
    if dispatcher is not None:
        try:
            dispatcher.close(timeout_s)  # what is queued is processed, the worker joined
        except TimeoutError:  # at exit nothing better to do than to go on
            pass
    scan = figures.get("scan")
    if scan is not None:
        scan.wait(timeout_s)


def _printing_result(plan_function):
    """``plan_function``, printing its result (a calibration's report and verdict) when the plan ends."""

    @functools.wraps(plan_function)
    def plan(*args, **kwargs):
        result = yield from plan_function(*args, **kwargs)
        print(result, flush=True)
        return result

    return plan


def reconnect_devices(cfg, *, timeout: float = 30.0, old=None) -> dict:
    """Re-point Channel Access at the beamline the configuration names now, and rebuild the devices.

    For a simulated beamline the simulator's state file is read again, so a
    simulator restarted on a new port is found without restarting Python.
    Channel Access reads its address list once per client context: the old
    devices are destroyed, the CA context is replaced (``epics.ca.clear_cache``)
    and ophyd's callback dispatcher restarted on the new one.

    Parameters
    ----------
    cfg : braggscope.core.config.Config
    timeout : float
        Seconds to wait for every device to connect.
    old : dict, optional
        The devices to destroy first (their channels belong to the old context).

    Returns
    -------
    dict
        New devices, as from ``make_devices``.
    """
    from braggscope.app.beamline.simulator import _checked_state, apply_client_env, state_file_for
    from braggscope.devices.factory import make_devices

    if cfg.get("beamline.simulated", False):
        handle, why = _checked_state(state_file_for(cfg))
        if handle is None:
            raise RuntimeError(f"no simulator to reconnect to ({why}); start one: braggscope sim start")
        apply_client_env(handle.port)
    for device in {id(d): d for d in (old or {}).values()}.values():
        try:
            device.destroy()
        except Exception:  # noqa: BLE001 - an already broken device
            pass
    _new_channel_access_context()
    return make_devices(cfg, connect_timeout=timeout)


def _new_channel_access_context() -> None:
    """A fresh pyepics CA context (reading the environment again) and ophyd dispatcher on it."""
    compat.reset_channel_access()


def _reconnect_namespace(ns: dict, timeout: float) -> dict:
    """``reconnect()`` of the session: new devices in place of the old ones in the namespace."""
    old = ns["devices"]
    new = reconnect_devices(ns["cfg"], timeout=timeout, old=old)
    for name in old:
        ns.pop(name, None)
    ns["devices"] = new
    ns.update(new)
    print(f"reconnected: {', '.join(sorted(new))}")
    return new
