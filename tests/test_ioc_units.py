"""Pure pieces of the simulator IOCs, without a server: stats, specs, ports, renderer loading."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from scipy import ndimage

from braggscope.simulators.ioc_detector import frame_stats, load_renderer
from braggscope.simulators.ioc_motors import MOTOR_SPECS, BeamlineState, motor_groups
from braggscope.simulators.ioc_run import free_port


def test_frame_stats_against_scipy():
    rng = np.random.default_rng(1)
    frame = rng.poisson(3.0, size=(64, 80)).astype(np.uint32)
    frame[10, 70] = 500
    stats = frame_stats(frame)
    cy, cx = ndimage.center_of_mass(frame.astype(float))
    assert stats["total"] == pytest.approx(float(frame.sum(dtype=np.int64)))
    assert stats["centroid_x"] == pytest.approx(cx) and stats["centroid_y"] == pytest.approx(cy)
    assert stats["max"] == 500
    empty = frame_stats(np.zeros((4, 4), np.uint32))
    assert empty["total"] == 0 and np.isnan(empty["centroid_x"])


def test_motor_specs_cover_the_beamline():
    names = [s.name for s in MOTOR_SPECS]
    assert names == ["pix", "piy", "piz", "eta", "phi", "nu", "delta", "energy"]
    units = {s.name: s.egu for s in MOTOR_SPECS}
    assert units["pix"] == "um" and units["eta"] == "deg" and units["energy"] == "keV"


def test_motor_groups_overrides_and_errors():
    state = BeamlineState()
    groups = motor_groups("T:", state, limits={"pix": (10, 20)}, velocities={"eta": 1.5},
                          initial={"pix": 50.0})
    assert groups["pix"].prefix == "T:pix"
    assert groups["pix"].spec.limits == (10.0, 20.0)
    assert groups["pix"].spec.initial == 20.0          # clamped into the limits
    assert state.positions["pix"] == 20.0
    assert groups["eta"].spec.velocity == 1.5
    assert "T:pix.RBV" in groups["pix"].pvdb and "T:pix.DMOV" in groups["pix"].pvdb
    with pytest.raises(ValueError, match=r"limits\['pix'\]"):
        motor_groups("T:", BeamlineState(), limits={"pix": (5, 5)})
    with pytest.raises(ValueError, match="tick_s"):
        motor_groups("T:", BeamlineState(), tick_s=0)


def test_free_port_is_free_for_tcp_and_udp():
    port = free_port()
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))


def test_load_renderer_needs_module_and_function():
    with pytest.raises(ValueError, match="module:function"):
        load_renderer("no_colon_here")
    assert load_renderer("numpy:zeros") is np.zeros


def _run_move(realtime, target=80.0, velocity=1.0):
    """Move a server-less motor record; returns (seconds, DMOV values seen, final position)."""
    import asyncio
    import time

    async def scenario():
        state = BeamlineState()
        record = motor_groups("T:", state, tick_s=0.01, realtime=realtime)["pix"]
        record._done = asyncio.Event()
        record._done.set()
        await record.velo.write(velocity)
        seen = []
        real_write = record.dmov.write

        async def spy(value, **kwargs):
            seen.append(value)
            return await real_write(value, **kwargs)

        record.dmov.write = spy
        t0 = time.monotonic()
        await asyncio.wait_for(record.val.write(target), timeout=5.0)
        return time.monotonic() - t0, seen, state.positions["pix"]

    return asyncio.run(scenario())


def test_motor_without_realtime_arrives_at_once_with_dmov_cycle():
    # simulator.realtime = false: a 30 um move at 1 um/s (30 s in real time)
    # ends at once, with the DMOV 1 -> 0 -> 1 cycle clients wait for
    elapsed, seen, position = _run_move(realtime=False)
    assert elapsed < 1.0
    assert seen[0] == 0 and seen[-1] == 1
    assert position == pytest.approx(80.0)


def test_motor_in_realtime_moves_at_velocity():
    elapsed, seen, position = _run_move(realtime=True, target=50.3, velocity=1.0)  # 0.3 um at 1 um/s
    assert 0.25 <= elapsed < 2.0
    assert position == pytest.approx(50.3)


def test_build_pvdb_passes_realtime_to_motors_and_detector():
    import time

    from braggscope.core.config import load_config
    from braggscope.simulators import ioc_run

    cfg = load_config()
    cfg.set("simulator.realtime", False)
    t0 = time.monotonic()
    pvdb, prefixes = ioc_run.build_pvdb(cfg, with_detector=True)
    groups = {_top(pv.group) for pv in pvdb.values()}
    motors = [g for g in groups if type(g).__name__ == "MotorRecord"]
    detectors = [g for g in groups if type(g).__name__ == "MaxipixIOC"]
    assert motors and detectors and time.monotonic() - t0 < 60
    assert not any(m.realtime for m in motors) and not detectors[0].realtime
    assert all(_top(pv.group).realtime for pv in ioc_run.build_pvdb(load_config(), with_detector=False)[0].values())


def test_build_pvdb_serves_the_fluorescence_detector_with_the_realtime_flag():
    from braggscope.core.config import load_config
    from braggscope.simulators import ioc_run

    cfg = load_config()
    for realtime in (True, False):
        cfg.set("simulator.realtime", realtime)
        pvdb, info = ioc_run.build_pvdb(cfg, with_detector=True)
        assert info["fluorescence"] == cfg["pv.fluorescence"]
        for suffix in ("AcquireTime", "AcquireTime_RBV", "Acquire", "Acquire_RBV", "Counts_RBV"):
            assert cfg["pv.fluorescence"] + suffix in pvdb
        (xrf,) = {_top(pv.group) for name, pv in pvdb.items() if name.startswith(cfg["pv.fluorescence"])}
        assert type(xrf).__name__ == "FluorescenceIOC" and xrf.realtime is realtime
    cfg.set("pv.fluorescence", "")  # a site without one
    pvdb, info = ioc_run.build_pvdb(cfg, with_detector=True)
    assert info["fluorescence"] is None and not any(":xrf:" in name for name in pvdb)


@pytest.mark.parametrize("realtime", [True, False])
def test_fluorescence_count_waits_out_the_count_time_only_in_realtime(realtime):
    import asyncio
    import time

    from braggscope.simulators.ioc_fluorescence import FluorescenceIOC

    state = BeamlineState({"pix": 1.0, "piy": 2.0, "eta": 3.0})
    seen = []
    ioc = FluorescenceIOC("T:xrf:", state=state, counter=lambda pos, t: seen.append((pos, t)) or 42,
                          realtime=realtime)

    async def run():
        await ioc.acquire_time.write(0.3)
        t0 = time.monotonic()
        counts = await ioc.count()
        return counts, time.monotonic() - t0

    counts, elapsed = asyncio.run(run())
    assert counts == 42 and ioc.counts.value == 42 and ioc.acquire_rbv.value == 0
    assert seen == [({"pix": 1.0, "piy": 2.0, "eta": 3.0}, pytest.approx(0.3))]
    assert (elapsed >= 0.29) if realtime else (elapsed < 0.2)


def _top(group):
    while getattr(group, "parent", None) is not None:
        group = group.parent
    return group
