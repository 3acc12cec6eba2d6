"""A renderer factory for ``bench_scan_overhead.py --fixed-frame``: the simulated beamline's first
frame, served again at every trigger, so the simulator's physics costs nothing (``simulator.renderer``)."""

from braggscope.simulators.beamline import SimulatedBeamline


def fixed_frame_renderer(cfg):
    """``render(positions, exposure_s)``: the frame of the first call, every time (not a copy: callers only read it)."""
    render = SimulatedBeamline.from_config(cfg, seed=cfg.get("simulator.seed", None)).render
    first = []

    def fixed(positions, exposure_s):
        if not first:
            first.append(render(positions, exposure_s))
        return first[0]

    return fixed
