"""A catalog writer in a child process (``test_storage_faults.py``, ``test_killed_writer.py``).

``python -m tests.faults.writer_child DATA_DIR DETECTOR_DIR OUT.json SIBLING.json``: opens the
embedded catalog under DATA_DIR (creating it if needed), subscribes a writer (refused if another
process writes), marks ``OUT.json.tried``, waits (as the writer) until the sibling has tried too,
starts a 2 x 3 map with in-process devices, pauses it during the 3rd point (Ctrl-C twice) and exits
with the RunEngine paused, the run open.

``python -m tests.faults.writer_child hang DATA_DIR DETECTOR_DIR MARKER [journal]``: writes a 2 x 3 map
into the embedded catalog under DATA_DIR, one catalog write per point (with ``journal``: and the run's
journal in DATA_DIR/spool, as ``subscribe_writer`` keeps it); at the 4th exposure it waits until the
writer has stored every event before it, writes MARKER (its pid) and hangs there, to be killed.
"""

import json
import os
import sys
import threading
import time

from bluesky import RunEngine
from bluesky.utils import RunEngineInterrupted

from braggscope import storage
from braggscope.core.config import load_config
from braggscope.core.setup import ScanSetup
from braggscope.plans import sxdm_map
from braggscope.storage.catalog_writer import CatalogWriter
from braggscope.storage.locks import CatalogBusyError, acquire_writer_lock

from .conftest import SHAPE, EncodingDevices, interrupt_at


def main(data_dir, det_dir, out, sibling):
    cfg = load_config()
    cfg.set("storage.data_dir", data_dir)
    cfg.set("detector.read_path", det_dir)
    result = {}
    try:
        client = storage.open_catalog(cfg)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        result["open_error"] = f"{type(exc).__name__}: {exc}"
        return result
    RE = RunEngine(call_returns_result=True)
    try:
        storage.subscribe_writer(RE, client)
    except CatalogBusyError as exc:
        result["refused"] = str(exc)
        return result
    finally:
        open(out + ".tried", "w").close()
    deadline = time.monotonic() + 180
    while not os.path.exists(sibling + ".tried") and time.monotonic() < deadline:
        time.sleep(0.1)  # hold the catalog until the other child has tried to write
    d = EncodingDevices(det_dir)
    interrupt_at(RE, "trigger", d.det, 3)
    setup = ScanSetup(energy_kev=8.33, distance_m=0.5, pixel_m=55e-6, cch=(4, 5), detector_shape=SHAPE, delta=18.0)
    uids = []
    RE.subscribe(lambda name, doc: uids.append(doc["uid"]) if name == "start" else None)
    try:
        RE(sxdm_map([d.det], d.pix, (10, 14, 3), d.piy, (20, 22, 2), d.eta, [10.0], sample="exit-paused",
                    setup=setup))
    except RunEngineInterrupted:
        pass
    result.update(state=RE.state, run=uids[0])
    return result


def hang(data_dir, det_dir, marker, journal=""):
    cfg = load_config()
    cfg.set("storage.data_dir", data_dir)
    cfg.set("storage.catalog_server", "off")
    cfg.set("detector.read_path", det_dir)
    client = storage.open_catalog(cfg)
    RE = RunEngine(call_returns_result=True)
    acquire_writer_lock(storage.catalog_handle(client).writer_lock)
    spool = storage.catalog_handle(client).spool_dir if journal else None
    writer = storage.BackgroundWriter(CatalogWriter(client, batch_size=1), spool_dir=spool)  # flushable
    RE.subscribe(writer)
    d = EncodingDevices(det_dir)
    render = d.render

    def render_then_hang():
        if d.count == 3:  # the 4th exposure: points 1-3 are events, stored by now
            writer.flush()
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(600)
        return render()

    d.det._render = render_then_hang
    setup = ScanSetup(energy_kev=8.33, distance_m=0.5, pixel_m=55e-6, cch=(4, 5), detector_shape=SHAPE, delta=18.0)
    RE(sxdm_map([d.det], d.pix, (10, 14, 3), d.piy, (20, 22, 2), d.eta, [10.0], sample="killed-writer", setup=setup))


if __name__ == "__main__":
    if sys.argv[1] == "hang":
        hang(*sys.argv[2:6])
        sys.exit(1)  # not reached: killed while hanging
    res = main(*sys.argv[1:5])
    with open(sys.argv[3], "w") as f:
        json.dump(res, f)
    threading.Thread(target=lambda: None).start()
    sys.exit(0)  # with the RunEngine paused and the run open
