"""``braggscope demo sxdm|bcdi``: the whole chain on the simulated beamline, and its summary.

``demo sxdm``: start the simulator (if none runs), calibrate the eccentricity,
measure a 3D-SXDM map of the simulated NMC622 crystal with live maps, store
it in the catalog, reduce it (``braggscope.analysis.sxdm.reduce``) and write the
figures. ``demo bcdi``: the same for the LMNO particle with an oversampled,
drift-following rocking scan and the BCDI reconstruction. ``demo operando``: one
NMC622 particle through a partial charge in the simulated cell, fly maps at every
checkpoint, the series reduction and its figures (:mod:`braggscope.app.demo.operando`).

``--inprocess`` runs the same plans on in-process devices (no EPICS) around
the same simulator physics; ``--quick`` is a small version for tests.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from braggscope.app.demo.bcdi import demo_bcdi
from braggscope.app.demo.beamline import Beamline
from braggscope.app.demo.operando import demo_operando, operando_config
from braggscope.app.demo.sxdm import demo_sxdm
from braggscope.core.atomic import atomic_path
from braggscope.core.errors import ArgumentError

__all__ = ["run_demo"]


def run_demo(cfg, kind, *, quick=False, inprocess=False, out=None, nx=None, ny=None, neta=None,
             reduce=True, fly=False, dwell_s=0.005, checkpoints=None, runs=None) -> dict:
    """Run ``demo sxdm``, ``demo bcdi`` or ``demo operando``; returns a summary dict (paths, timings), also in
    ``out/summary.json``."""
    if kind not in ("sxdm", "bcdi", "operando"):
        raise ValueError(f"kind must be 'sxdm', 'bcdi' or 'operando', got {kind!r}")
    if kind == "operando" and inprocess:
        raise ArgumentError("demo operando runs on the caproto simulator (its cell is served over CA): "
                            "leave out --inprocess")
    if checkpoints is not None and (kind != "operando" or int(checkpoints) < 2):
        raise ArgumentError(f"--checkpoints is for demo operando and must be >= 2, got {checkpoints!r}")
    if runs is not None and (kind != "bcdi" or int(runs) < 1):
        raise ArgumentError(f"--runs is for demo bcdi and must be >= 1, got {runs!r}")
    for name, v in (("nx", nx), ("ny", ny), ("neta", neta)):
        if v is not None and int(v) < (3 if name == "neta" else 2):
            raise ArgumentError(f"--{name} must be >= {3 if name == 'neta' else 2}, got {v!r}")
    if fly and (kind != "sxdm" or inprocess):
        raise ArgumentError("--fly runs the SXDM demo on the caproto simulator: use `demo sxdm --fly` "
                            "without --inprocess")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(out).expanduser() if out else cfg.expand_path("storage.data_dir") / f"demo-{kind}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    sample = "lmno_bcdi" if kind == "bcdi" else "nmc622"
    if kind == "operando":
        operando_config(cfg, quick=quick)
    with Beamline(cfg, inprocess=inprocess, sample=sample, out=out, purpose=f"braggscope demo {kind}") as bl:
        if kind == "operando":
            points = None if nx is None and ny is None else (nx or ny, ny or nx)
            summary = demo_operando(bl, out, quick=quick, reduce=reduce, checkpoints=checkpoints, points=points)
        elif kind == "sxdm":
            summary = demo_sxdm(bl, out, quick=quick, nx=nx, ny=ny, neta=neta, reduce=reduce,
                                 fly=dwell_s if fly else None)
        else:
            summary = demo_bcdi(bl, out, quick=quick, neta=neta, reduce=reduce, runs=runs)
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    summary["out"] = str(out)
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps({k: v for k, v in summary.items() if k != "maps"}, indent=1, default=str))
    which = (f"campaign {summary['campaign_id']} ({len(summary.get('uids') or [])} runs)"
             if "campaign_id" in summary else f"run uid {summary.get('uid')}")
    print(f"\nresults in {out} (summary.json); {which}", flush=True)
    return summary
