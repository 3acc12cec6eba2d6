"""The namespace of ``braggscope shell``: an operator's session, everything wired.

:func:`make_session` builds it without IPython (testable), from small builders:
the devices (the caproto simulator is started if the configuration is simulated
and none runs), the session's RunEngine (baseline, guard, catalog writer, scan
ids, progress bars, BestEffortCallback with plots off when headless), the live
SXDM maps and their image files, the names (devices, plans, commands, readers),
the banner and the clean-up.

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

import bluesky.plan_stubs as bps
import bluesky.plans as bp
from bluesky.callbacks.best_effort import BestEffortCallback
from bluesky.utils import ProgressBarManager

from braggscope import plans, storage
from braggscope.app.beamline.connect import connect_devices, disconnect
from braggscope.app.beamline.progress import StreamedRunsAsProgress
from braggscope.app.beamline.runengine import recording_run_engine, subscribe_live_maps
from braggscope.app.bus.settings import publisher_from_config
from braggscope.app.commands import make_commands
from braggscope.app.session.display import has_display
from braggscope.app.session.live_figures import install_live_figures
from braggscope.app.session.reconnect import reconnect_namespace
from braggscope.core.eccentricity import EccentricityModel
from braggscope.plans.beam import BeamPolicy, describe_policy
from braggscope.plans.guard import install_guard
from braggscope.storage.runs import Runs
from braggscope.storage.scan_ids import install_scan_ids
from braggscope.storage.session_md import install_persistent_md

__all__ = ["BANNER", "make_session", "printing_result", "session_banner", "session_names", "session_run_engine",
           "settle_live"]

BANNER = """braggscope session: {beamline} ({mode})
  devices : {devices}
  plans   : sxdm_map, bcdi_rocking, calibrate_eccentricity, dry_run  (help(sxdm_map))
  commands: wa, wm, mv, umv, mvr, ct, ascan, dscan, a2scan, amesh, dmesh, lineup, cen, goto_cen, peaks, where,
            roi, sxdm, calibrate  (helpme())
  storage : catalog ({storage}); db[-1], db[scan_id], db["uid"], db.search(plan=, sample=, since=, until=)
  beam    : {beam}
  Ctrl-C  : pause after the current point; RE.resume() / RE.stop() / RE.abort("why")
  IOC lost: the run fails naming the PV; reconnect() re-reads the simulator state, then a new run
"""

#: the catalog's readers put in the namespace
READERS = ("find_runs", "load_run", "sxdm_stack", "rocking_stack")


def make_session(cfg, *, inprocess: bool = False, live: bool = True, headless: bool | None = None) -> dict:
    """Everything an operator needs, as a namespace dict.

    Parameters
    ----------
    cfg : braggscope.core.config.Config
    inprocess : bool
        In-process simulated devices instead of EPICS (``make_devices``).
    live : bool
        Subscribe the live SXDM maps (``braggscope.analysis.live.callback``).
    headless : bool, optional
        Disable BestEffortCallback plots; default: no display available.

    Returns
    -------
    dict
        ``cfg``, ``RE``, ``bec``, ``catalog``, ``devices`` and each device by
        name (``pix``, ``eta``, ``detector`` ...), the plans and ``bps``/``bp``,
        the storage readers, ``eccentricity`` (the configured model),
        ``live`` (or None), ``live_figures``, ``__banner__`` and ``__cleanup__``
        (stops what the session started).
    """
    headless = (not has_display()) if headless is None else headless
    devices, started = connect_devices(cfg, inprocess=inprocess)
    catalog = storage.open_catalog(cfg)
    RE, bec = session_run_engine(cfg, devices, catalog, headless=headless)
    # live maps read the detector's file while it is written: not the in-process detector's own open file
    live_maps = subscribe_live_maps(RE) if live and not inprocess else (None, None, None)
    bus = publisher_from_config(cfg)  # documents to `braggscope live` elsewhere, when [bus] url is set
    if bus is not None:
        RE.subscribe(bus)
    ns = session_names(cfg, RE, devices, catalog, bec=bec, live=live_maps[0], bus=bus)
    # live maps as a PNG refreshed in place under <data_dir>/live; 1D scans too where no window shows them
    ns["live_figures"] = install_live_figures(RE, cfg, live_maps[0], live_maps[1], scan_file=headless)
    ns["__banner__"] = session_banner(cfg, devices, catalog, inprocess=inprocess)
    # not ns[...] at clean-up: IPython empties the namespace at exit
    ns["__cleanup__"] = functools.partial(_close, RE, live_maps, ns["live_figures"], bus, devices, started)
    if not inprocess:
        ns["reconnect"] = lambda timeout=30.0: reconnect_namespace(ns, timeout)
    return ns


def session_run_engine(cfg, devices: dict, catalog, *, headless: bool):
    """The session's RunEngine and its BestEffortCallback: ``(RE, bec)``.

    Recording (scan-setup and machine baseline, catalog writer), the beam's suspenders and monitor
    (``[beam]``), every plan guarded, scan ids continuing across sessions and processes, progress bars
    while it waits, the table of each run (a fly scan's as a point progress bar), plots only where a
    window can show them.
    """
    RE = recording_run_engine(devices, catalog, beam=BeamPolicy.from_config(cfg))
    install_guard(RE)  # every plan: a lost IOC or a stalled detector ends the run, named
    install_scan_ids(RE, cfg, catalog)  # scan ids continue across sessions and processes
    install_persistent_md(RE, cfg)  # RE.md too (sample, proposal ...), in <storage.data_dir>
    RE.waiting_hook = ProgressBarManager()
    bec = BestEffortCallback()
    bec.disable_baseline()  # the baseline records the scan setup; no table of it before and after every run
    if headless:
        bec.disable_plots()
    RE.subscribe(StreamedRunsAsProgress(bec))  # a fly scan's table would stay empty: a progress bar instead
    return RE, bec


def session_names(cfg, RE, devices: dict, catalog, *, bec=None, live=None, bus=None) -> dict:
    """The names of the session: devices, plans, the operator's commands, the catalog and its readers."""
    eccentricity = EccentricityModel.coerce(cfg.get("eccentricity"), "[eccentricity]")
    ns = {"cfg": cfg, "RE": RE, "bec": bec, "catalog": catalog, "db": Runs(catalog), "devices": devices,
          "bps": bps, "bp": bp, "live": live, "bus": bus, "eccentricity": eccentricity}
    ns.update(devices)
    ns.update({name: getattr(plans, name) for name in plans.__all__})
    ns["calibrate_eccentricity"] = printing_result(plans.calibrate_eccentricity)  # the operator sees the verdict
    commands = make_commands(RE, devices, cfg=cfg, eccentricity=eccentricity)  # wa, mv, ascan, cen ...
    ns.update(commands.namespace(), commands=commands)
    if "fly" in devices:  # the fly scanner kmap() uses, for sxdm_fly([flyer], ...) and dry(...)
        ns["flyer"] = commands.flyer()
    ns.update({name: getattr(storage, name) for name in READERS})
    return ns


def session_banner(cfg, devices: dict, catalog, *, inprocess: bool) -> str:
    """The banner: beamline, mode, devices, where the catalog is and what the beam's suspenders do."""
    mode = "in-process simulation" if inprocess else ("simulator" if cfg.get("beamline.simulated") else "EPICS")
    local = storage.catalog_handle(catalog).kind
    uri = cfg.get("storage.tiled_uri") or f"{local}, {storage.catalog_paths(cfg)['root']}"
    beam = describe_policy(BeamPolicy.from_config(cfg), devices.get("machine"), devices.get("mon1"))
    return BANNER.format(beamline=cfg.get("beamline.name", "?"), mode=mode,
                         devices=", ".join(sorted(k for k in devices if k != "mpx1x4")), storage=uri, beam=beam)


def _close(RE, live_maps, figures, bus, devices, started) -> None:
    """The session's clean-up: live maps settled, the bus flushed, a simulator started here stopped."""
    _, dispatcher, token = live_maps
    if token is not None:
        RE.unsubscribe(token)
    settle_live(dispatcher, figures)
    if bus is not None:
        bus.close()
    disconnect(devices, started)


def settle_live(dispatcher, figures: dict, timeout_s: float = 30.0) -> None:
    """Let the live maps and figures finish their work before the session's process exits.

    Python ends daemon threads wherever they are at exit; one inside matplotlib's C++ font code (the
    last map being saved) then aborts the process ("terminate called without an active exception").
    """
    if dispatcher is not None:
        try:
            dispatcher.close(timeout_s)  # what is queued is processed, the worker joined
        except TimeoutError:  # at exit nothing better to do than to go on
            pass
    scan = figures.get("scan")
    if scan is not None:
        scan.wait(timeout_s)


def printing_result(plan_function):
    """``plan_function``, printing its result (a calibration's report and verdict) when the plan ends."""

    @functools.wraps(plan_function)
    def plan(*args, **kwargs):
        result = yield from plan_function(*args, **kwargs)
        print(result, flush=True)
        return result

    return plan
