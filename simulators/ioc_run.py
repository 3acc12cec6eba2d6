"""Run all simulator IOCs (motors, Maxipix, fluorescence, machine, monitor, fly hardware, cell) in ONE caproto server.

``python -m braggscope.simulators.ioc_run --state-file FILE [--config TOML]``

The motors and the detector share one in-process :class:`BeamlineState`, so
the detector renders each frame at the motors' current positions without any
Channel Access round trip; the detectors and the monitor share one simulated beam
(:mod:`.beam`), so their counts follow the same ring current and shutter. The
server listens on 127.0.0.1 only, on a free port (or ``--port``), and writes a
JSON state file (pid, port, PV prefixes) once it is serving; it exits cleanly
on SIGTERM/SIGINT.

Two fixes for caproto 1.3.0 are applied here (see docs/devices.md): accepted TCP
sockets get ``TCP_NODELAY`` (otherwise Nagle + delayed ACK add ~40 ms to a
put-with-callback), and monitor batching (``HIGH_LOAD_TIMEOUT``) is lowered
to 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from braggscope.core.processes import free_port

#: Server-side environment for a loopback-only simulator.
LOOPBACK_SERVER_ENV = {
    "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
    "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
    "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
    "EPICS_CA_AUTO_ADDR_LIST": "NO",
    "EPICS_CA_ADDR_LIST": "127.0.0.1",
    "EPICS_CA_MAX_ARRAY_BYTES": str(64 * 1024 * 1024),
    "CAPROTO_SERVER_HIGH_LOAD_TIMEOUT_SEC": "0.001",
}

__all__ = ["LOOPBACK_SERVER_ENV", "build_pvdb", "free_port", "main", "serve"]


def build_pvdb(cfg, *, with_detector: bool = True, tick_s: float = 0.01):
    """Build the simulator's PV database from a braggscope config.

    Parameters
    ----------
    cfg : braggscope.core.config.Config
        Uses ``pv.piezo``, ``pv.diffractometer``, ``pv.energy``,
        ``pv.detector``, ``pv.fluorescence`` (empty: no fluorescence
        detector), ``pv.machine`` and ``pv.monitor`` (empty: not served),
        ``pv.fly``, ``pv.potentiostat`` (empty: no cell; else ``[simulator.cell]``),
        ``limits.*``, ``detector.*``, ``simulator.*`` (the beam:
        ``ring_*``, ``refill_*``, ``dump_*``, ``monitor_rate``);
        ``simulator.realtime = false`` (default true) drops the simulated
        dead time: moves take no travel time and frames no exposure time.
    with_detector : bool
        Also serve the Maxipix areaDetector IOC and the fluorescence
        detector (:mod:`.ioc_fluorescence`), both on one simulated sample,
        and the machine and the monitor (:mod:`.ioc_machine`, :mod:`.ioc_counter`).
    tick_s : float
        Motor readback update period during moves, seconds.

    Returns
    -------
    pvdb : dict
        PV name -> channel data.
    info : dict
        ``{"motors": {name: record PV}, "detector": prefix or None,
        "fluorescence": prefix or None, "machine": ..., "monitor": ..., "fly": ...}``.
    """
    from braggscope.simulators.ioc_motors import MOTOR_SPECS, BeamlineState, full_pvdb, motor_groups

    state = BeamlineState()
    records = {}
    for spec in MOTOR_SPECS:
        if spec.name in ("pix", "piy", "piz"):
            records[spec.name] = cfg["pv.piezo"] + spec.name
        elif spec.name == "energy":
            records[spec.name] = cfg["pv.energy"]
        else:
            records[spec.name] = cfg["pv.diffractometer"] + spec.name
    limits = {name: tuple(cfg["limits"][name]) for name in records if name in cfg.get("limits", {})}
    velocities = dict(cfg.get("simulator.velocities", {}) or {})
    initial = {"energy": float(cfg.get("energy.energy_kev", 8.33))}
    realtime = bool(cfg.get("simulator.realtime", True))
    groups = motor_groups(records, state, limits=limits, velocities=velocities,
                          initial=initial, tick_s=tick_s, realtime=realtime)
    all_groups = list(groups.values())
    beam, monitor, beam_info = _beam(cfg, realtime, state, all_groups if with_detector else None)
    detector_prefix = fluorescence_prefix = None
    if with_detector:
        from braggscope.simulators.beamline import SimulatedBeamline
        from braggscope.simulators.ioc_detector import MaxipixIOC, make_renderer
        from braggscope.simulators.ioc_fluorescence import FluorescenceIOC

        # one simulated sample for both detectors: the Maxipix and the fluorescence
        # detector see the same crystal at the same (drifting) position
        beamline = SimulatedBeamline.from_config(cfg, seed=cfg.get("simulator.seed", None))
        detector_prefix = cfg["pv.detector"]
        maxipix = MaxipixIOC(detector_prefix, state=state, renderer=make_renderer(cfg, beamline),
                             shape=tuple(cfg["detector.shape"]), realtime=realtime, beam=beam)
        all_groups.append(maxipix)
        fluorescence_prefix = cfg.get("pv.fluorescence", "") or None
        if fluorescence_prefix:
            all_groups.append(FluorescenceIOC(fluorescence_prefix, state=state, counter=beamline.fluorescence,
                                              realtime=realtime, beam=beam))
    cell_prefix = cfg.get("pv.potentiostat", "") or None
    if cell_prefix:  # an operando cell; its crystal is the detectors' (docs/operando.md)
        all_groups.append(_cell(cfg, cell_prefix, beamline if with_detector else None))
    fly_prefix = cfg.get("pv.fly", "") or None
    if fly_prefix:  # fly-scan hardware: sweeps pix, triggers the Maxipix when served (docs/fly.md)
        from braggscope.simulators.ioc_fly import FlyIOC

        all_groups.append(FlyIOC(fly_prefix, state=state, detector=maxipix if with_detector else None,
                                 fast_motor=groups.get("pix"),
                                 velocity_max_um_s=cfg.get("fly.velocity_max_um_s", 500.0),
                                 encoder_resolution_um=cfg.get("fly.encoder_resolution_um", 0.001),
                                 accel_time_s=cfg.get("fly.accel_time_s", 0.005), realtime=realtime,
                                 beam=beam, monitor=monitor))
    return full_pvdb(all_groups), {"motors": records, "detector": detector_prefix,
                                   "fluorescence": fluorescence_prefix, "fly": fly_prefix, **beam_info,
                                   "potentiostat": cell_prefix}


def _cell(cfg, prefix: str, beamline):
    """The potentiostat and its cell (``[simulator.cell]``), the simulated crystal following it."""
    from braggscope.simulators.cell import Cell
    from braggscope.simulators.ioc_cell import PotentiostatIOC, SampleFollower, cell_settings

    settings, extra = cell_settings(cfg)
    cell = Cell(settings)
    follower = None
    if beamline is not None:
        follower = SampleFollower(beamline, cell.material, x_initial=settings.x_initial,
                                  front_width=extra["front_width"], drift_um_per_h=extra["drift_um_per_h"],
                                  breathing_um=extra["breathing_um"], update_lithium=extra["update_lithium"])
    return PotentiostatIOC(prefix, cell=cell, follower=follower, time_scale=extra["time_scale"],
                           state_file=extra["state_file"])


def _beam(cfg, realtime: bool, state, groups: list | None):
    """The simulated beam (ring, shutter) and monitor counter; the machine's and the monitor's IOCs
    appended to ``groups`` (None: not served) where ``pv.machine`` / ``pv.monitor`` name them. Returns
    ``(beam, monitor, info)``."""
    # imported here, once main() has set the server's Channel Access environment (as build_pvdb's)
    from braggscope.simulators.beam import IncidentBeam, MonitorCounter, RingSettings, StorageRing
    from braggscope.simulators.ioc_counter import MonitorIOC
    from braggscope.simulators.ioc_machine import MachineIOC

    start = time.monotonic()
    beam = IncidentBeam(StorageRing(RingSettings.from_config(cfg), start=start), start=start)
    monitor = MonitorCounter(float(cfg.get("simulator.monitor_rate", 1.0e6)), seed=cfg.get("simulator.seed", 0))
    machine_prefix = (cfg.get("pv.machine", "") or None) if groups is not None else None
    monitor_prefix = (cfg.get("pv.monitor", "") or None) if groups is not None else None
    if machine_prefix:
        groups.append(MachineIOC(machine_prefix, beam=beam))
    if monitor_prefix:
        groups.append(MonitorIOC(monitor_prefix, state=state, beam=beam, monitor=monitor, realtime=realtime))
    return beam, monitor, {"machine": machine_prefix, "monitor": monitor_prefix}


def _nodelay_context_class(enabled: bool):
    """caproto's asyncio server Context, setting TCP_NODELAY on each client."""
    from caproto.asyncio.server import Context, VirtualCircuit

    class PromptCircuit(VirtualCircuit):
        async def get_from_sub_queue(self, timeout=None):
            # caproto keeps batching monitor updates until the queue has been
            # idle for HIGH_LOAD_TIMEOUT, so the last update of a burst (DMOV=1,
            # Acquire=Done: what a client waits for) always left >= that late
            # (~1 ms per point twice). Batch only what is already queued.
            if timeout is None:
                return await self.subscription_queue.get()
            try:
                return self.subscription_queue.get_nowait()
            except asyncio.QueueEmpty:
                return None

    class NoDelayContext(Context):
        CircuitClass = PromptCircuit

        async def tcp_handler(self, client, addr):
            if enabled:
                sock = client.writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return await super().tcp_handler(client, addr)

        async def broadcast_beacon_loop(self):
            # As caproto's, but quiet when no CA repeater listens on loopback
            # (a connected UDP socket then gets ECONNREFUSED on every beacon).
            import caproto as ca

            period, max_period = 0.02, float(self.environ["EPICS_CAS_BEACON_PERIOD"])
            while True:
                for _address, (interface, sock) in self.beacon_socks.items():
                    try:
                        beacon = ca.Beacon(13, self.port, self.beacon_count, interface)
                        await sock.send(self.broadcaster.send(beacon))
                    except (OSError, ca.CaprotoNetworkError):
                        pass
                self.beacon_count += 1
                period = min(max_period, period * 2)
                await asyncio.sleep(period)

    return NoDelayContext


async def serve(pvdb, *, state_file: Path | None = None, info: dict | None = None,
                nodelay: bool = True) -> None:
    """Serve ``pvdb`` on 127.0.0.1 until cancelled; write ``state_file`` when up."""
    import caproto.server.common as common

    common.HIGH_LOAD_TIMEOUT = float(os.environ.get("CAPROTO_SERVER_HIGH_LOAD_TIMEOUT_SEC", 0.001))
    ctx = _nodelay_context_class(nodelay)(pvdb, interfaces=["127.0.0.1"])

    async def announce(async_lib):
        if state_file is None:
            return
        for _ in range(500):  # wait until the TCP socket is bound
            if getattr(ctx, "port", None):
                break
            await asyncio.sleep(0.01)
        payload = dict(info or {}, pid=os.getpid(), host="127.0.0.1", port=int(ctx.port),
                       udp_port=int(os.environ["EPICS_CA_SERVER_PORT"]), nodelay=nodelay,
                       started=time.time(), pv_count=len(pvdb))
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, state_file)

    await ctx.run(startup_hook=announce)


async def _watch_parent(pid: int, task: asyncio.Task) -> None:
    """Cancel ``task`` once process ``pid`` has exited (checked every 0.5 s)."""
    while True:
        await asyncio.sleep(0.5)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            task.cancel()
            return
        except PermissionError:
            pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="braggscope TOML config (default: packaged simulator)")
    parser.add_argument("--port", type=int, default=0, help="CA port (0: pick a free one)")
    parser.add_argument("--state-file", type=Path, help="JSON file written once serving")
    parser.add_argument("--no-detector", action="store_true", help="serve motors only")
    parser.add_argument("--exit-with-parent", type=int, default=0, metavar="PID",
                        help="exit when process PID is gone (tests: no orphan servers)")
    parser.add_argument("--no-nodelay", action="store_true",
                        help="leave Nagle on (caproto default; for benchmarks only)")
    args = parser.parse_args(argv)
    if args.port < 0 or args.port > 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    for key, value in LOOPBACK_SERVER_ENV.items():
        os.environ.setdefault(key, value)
    port = args.port or free_port()
    os.environ["EPICS_CA_SERVER_PORT"] = str(port)
    os.environ["EPICS_CAS_SERVER_PORT"] = str(port)

    from braggscope.core.config import load_config

    cfg = load_config(args.config)
    pvdb, info = build_pvdb(cfg, with_detector=not args.no_detector)
    info["config_file"] = str(cfg.path)
    info["sample"] = None if args.no_detector else str(cfg.get("simulator.sample", "nmc622"))  # sim status

    async def runner():
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        if args.exit_with_parent:
            loop.create_task(_watch_parent(args.exit_with_parent, task))
        try:
            await serve(pvdb, state_file=args.state_file, info=info, nodelay=not args.no_nodelay)
        except asyncio.CancelledError:
            pass

    try:
        asyncio.run(runner())
    finally:
        if args.config and Path(args.config).name.startswith("braggscope-sim-"):
            Path(args.config).unlink(missing_ok=True)  # temporary copy written by simctl
        if args.state_file is not None and args.state_file.exists():
            try:
                if json.loads(args.state_file.read_text()).get("pid") == os.getpid():
                    args.state_file.unlink()
            except (OSError, ValueError):
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
