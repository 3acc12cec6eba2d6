"""An operator's session that runs one operando campaign, for tests that end it from outside.

``python -m tests.operando_session CONFIG CAMPAIGN_JSON`` connects to the beamline of ``CONFIG`` (its
simulator already running), opens its catalog, runs :func:`braggscope.plans.operando` with the campaign
(a JSON object of :class:`~braggscope.plans.operando_campaign.Campaign` fields) and prints one JSON line
per run that ends, once the catalog holds it (``{"stop": uid, "role": ..., "checkpoint": ..., "exit_status":
...}``), then ``{"done": [uids]}``.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("EPICS_CA_AUTO_ADDR_LIST", "NO")


def main(argv) -> int:
    from braggscope import storage
    from braggscope.app.beamline.runengine import recording_run_engine
    from braggscope.core.config import load_config
    from braggscope.devices.factory import make_devices
    from braggscope.devices.fly import make_flyer
    from braggscope.plans.beam import BeamPolicy
    from braggscope.plans.guard import install_guard
    from braggscope.plans.operando import operando

    cfg, campaign = load_config(argv[0]), json.loads(argv[1])
    d = make_devices(cfg, connect_timeout=30.0)
    flyer = make_flyer(d, cfg)
    client = storage.open_catalog(cfg)
    RE = recording_run_engine(d, client, beam=BeamPolicy.from_config(cfg))
    install_guard(RE)
    starts = {}

    def said(name, doc):  # subscribed after the catalog writer: its stop waits until the catalog has the run
        if name == "start":
            starts[doc["uid"]] = doc
        elif name == "stop":
            start = starts.pop(doc["run_start"], {})
            print(json.dumps({"stop": doc["run_start"], "role": start.get("operando_role"),
                              "checkpoint": start.get("checkpoint"), "exit_status": doc["exit_status"]}), flush=True)

    RE.subscribe(said)
    uids = RE(operando([d["detector"], d["xrf"], d["potentiostat"], flyer],
                       {"x": d["pix"], "y": d["piy"], "eta": d["eta"], "delta": d["delta"]}, campaign,
                       catalog=client)).plan_result
    print(json.dumps({"done": list(uids)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
