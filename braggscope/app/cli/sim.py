"""``braggscope sim start|stop|status``: the simulator process (:mod:`braggscope.app.beamline.simulator`)."""

from __future__ import annotations

import math

from braggscope.app.beamline.simulator import (
    SimulatorHandle,
    checked_state,
    start_simulator,
    state_file_for,
    stop_simulator,
)
from braggscope.core.config import load_config
from braggscope.core.errors import UserError
from braggscope.simulators.samples import SAMPLE_NAMES

__all__ = ["BEAM_OPTIONS", "configure"]

#: ``sim start`` options of the simulated beam: option -> ([simulator] key, metavar, help).
BEAM_OPTIONS = {
    "--ring-current": ("ring_current_ma", "MA", "ring current after a refill, mA (default 200)"),
    "--ring-lifetime": ("ring_lifetime_h", "H", "beam lifetime, hours; 0: no decay (default)"),
    "--refill-period": ("refill_period_s", "S", "a refill every S seconds; 0: none (default)"),
    "--refill-duration": ("refill_duration_s", "S", "front end closed S seconds per refill (default 30)"),
    "--dump-rate": ("dump_rate_per_h", "N", "random beam dumps per hour; 0: none (default)"),
    "--dump-duration": ("dump_duration_s", "S", "a dumped beam is back after S seconds (default 60)"),
    "--monitor-rate": ("monitor_rate", "CPS", "incident-flux monitor mon1, counts/s at the full current"),
}


def configure(parser) -> None:
    """Add ``start``, ``stop`` and ``status`` to the ``sim`` parser."""
    actions = parser.add_subparsers(dest="sim_command", metavar="ACTION")
    start = actions.add_parser("start", help="start the simulator in the background")
    start.add_argument("--port", type=int, default=None,
                       help="CA port (default: simulator.ca_server_port, 0 = free port)")
    start.add_argument("--no-detector", action="store_true", help="motors only")
    start.add_argument("--sample", default=None, metavar="NAME",
                       help="sample preset served: nmc622, lno_cluster or lmno_bcdi (default: simulator.sample)")
    for option, (key, metavar, text) in BEAM_OPTIONS.items():
        start.add_argument(option, type=float, default=None, metavar=metavar, dest=key,
                           help=f"{text}; [simulator] {key}")
    start.set_defaults(func=_start)
    actions.add_parser("status", help="show whether the simulator runs").set_defaults(func=_status)
    actions.add_parser("stop", help="stop the simulator").set_defaults(func=_stop)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _start(args) -> int:
    cfg = load_config(args.config)
    port = int(cfg.get("simulator.ca_server_port", 0) or 0) if args.port is None else args.port
    if args.sample is not None:
        if args.sample not in SAMPLE_NAMES:
            raise UserError(f"--sample must be one of {', '.join(SAMPLE_NAMES)}, got {args.sample!r}")
        cfg.set("simulator.sample", args.sample)
    _set_beam(cfg, args)
    try:
        handle = start_simulator(cfg, port=port, with_detector=not args.no_detector, set_env=False)
    except (RuntimeError, TimeoutError, ValueError) as exc:  # already running, died at start-up, bad port
        raise UserError(str(exc).splitlines()[0]) from None  # one line, exit 2
    _print_state(handle)
    print("Point your shell at it with:")
    print(f"  export EPICS_CA_ADDR_LIST={handle.addr_list} EPICS_CA_AUTO_ADDR_LIST=NO "
          f"EPICS_CA_MAX_ARRAY_BYTES={64 * 1024 * 1024}")
    return 0


def _set_beam(cfg, args) -> None:
    """The beam options given, into ``[simulator]`` (refused, one line, unless finite and >= 0, or > 0 for a
    current or a duration)."""
    for option, (key, _, _) in BEAM_OPTIONS.items():
        value = getattr(args, key, None)
        if value is None:
            continue
        positive = key in ("ring_current_ma", "refill_duration_s", "dump_duration_s")
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise UserError(f"{option} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
        cfg.set(f"simulator.{key}", value)


def _status(args) -> int:
    handle, why = checked_state(state_file_for(load_config(args.config)))
    if handle is None:
        print(f"simulator: not running ({why})")
        return 1
    _print_state(handle)
    return 0


def _stop(args) -> int:
    path = state_file_for(load_config(args.config))
    handle, why = checked_state(path)
    if handle is None:
        path.unlink(missing_ok=True)  # stale: nothing of ours to stop, and no process is touched
        print(f"simulator: not running ({why})")
        return 0
    stop_simulator(handle)
    print(f"simulator stopped (pid {handle.pid})")
    return 0


def _print_state(handle: SimulatorHandle) -> None:
    info = handle.info
    print(f"simulator: running, pid {handle.pid}, CA port {handle.port} on 127.0.0.1 "
          f"({info.get('pv_count', '?')} PVs)")
    print(f"  sample   {handle.sample or 'none (motors only)' if 'sample' in info else 'not recorded'}")
    for name, pv in (info.get("motors") or {}).items():
        print(f"  motor {name:7s} {pv}")
    if info.get("detector"):
        print(f"  detector {info['detector']}  (cam1:, HDF1:, Stats1:, image1:)")
    if info.get("fluorescence"):
        print(f"  fluorescence {info['fluorescence']}  (AcquireTime, Acquire, Counts_RBV)")
    if info.get("machine"):
        print(f"  machine  {info['machine']}  (Current_RBV, RefillCountdown_RBV, Shutter, SIM:Dump)")
    if info.get("monitor"):
        print(f"  monitor  {info['monitor']}  (mon1: AcquireTime, Acquire, Counts_RBV)")
    print(f"  state file {handle.state_file}")
