"""Full-disk scenarios in a child process (``test_storage_faults.py``): the HDF5 library may be left
in a broken state by a file whose writes failed, so they stay out of the test process.

``python -m tests.faults.disk_child detector|catalog SMALL_DIR WORK_DIR OUT.json``
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
from bluesky import RunEngine

from braggscope.core.setup import ScanSetup
from braggscope.plans import sxdm_map
from braggscope.simulators.inprocess import HDF5ImageDetector

from .conftest import EncodingDevices
from .disk import fill

SETUP = ScanSetup(energy_kev=8.33, distance_m=0.5, pixel_m=55e-6, cch=(48, 48), detector_shape=(96, 96), delta=18.0)


def detector(small: Path, work: Path) -> dict:
    d = EncodingDevices(work)
    det = HDF5ImageDetector(render=lambda: np.pad(d.render(), ((0, 88), (0, 86)), constant_values=7),
                            write_dir=small, shape=(96, 96))
    filler = fill(small, 200 * 1024)  # room for a few 36 KiB frames
    RE = RunEngine(call_returns_result=True)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    try:
        RE(sxdm_map([det], d.pix, (10, 14, 5), d.piy, (20, 22, 4), d.eta, [10.0], sample="full-disk", setup=SETUP))
        error = ""
    except Exception as exc:  # noqa: BLE001 - reported
        error = f"{type(exc).__name__}: {exc}"
    filler.unlink()
    stop = next(doc for name, doc in docs if name == "stop")
    return {"error": error, "exit_status": stop["exit_status"], "reason": stop["reason"],
            "events": stop["num_events"].get("primary", 0), "docs": _kept(docs)}


def catalog(small: Path, work: Path) -> dict:
    from braggscope import storage
    from braggscope.core.config import load_config

    cfg = load_config()
    cfg.set("storage.data_dir", str(small))
    cfg.set("detector.read_path", str(work))
    try:
        client = storage.open_catalog(cfg)
    except Exception as exc:  # noqa: BLE001 - the empty catalog may not fit
        return {"open_error": f"{type(exc).__name__}: {exc}"}
    RE = RunEngine(call_returns_result=True)
    storage.subscribe_writer(RE, client, batch_size=1)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    d = EncodingDevices(work)
    # the disk fills mid-run, once the run and two events are in the catalog's queue (filled before the
    # run, the start document failed and whether an event was emitted first depended on timing)
    RE.subscribe(lambda name, doc: fill(small, 0) if name == "event" and doc["seq_num"] == 2 else None)
    try:
        RE(sxdm_map([d.det], d.pix, (10, 14, 3), d.piy, (20, 22, 2), d.eta, [10.0], sample="full-catalog",
                    setup=SETUP))
        error = ""
    except Exception as exc:  # noqa: BLE001 - reported
        error = f"{type(exc).__name__}: {exc}"
    stop = [doc for name, doc in docs if name == "stop"]
    return {"error": error, "exit_status": stop[0]["exit_status"] if stop else None,
            "reason": stop[0]["reason"] if stop else None, "triggers": d.count, "docs": _kept(docs)}


def _kept(docs):
    """The event and resource documents, for the parent to pair frames with (HDF5 may be broken here)."""
    return [(name, doc) for name, doc in docs if name in ("event", "resource")]


if __name__ == "__main__":
    which, small_dir, work_dir, out = sys.argv[1:5]
    res = {"detector": detector, "catalog": catalog}[which](Path(small_dir), Path(work_dir))
    Path(out).write_text(json.dumps(res, default=str))
    os._exit(0)  # a file whose writes failed can crash the HDF5 library at exit
