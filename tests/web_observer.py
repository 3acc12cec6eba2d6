"""An observer on another host (tests/test_web_hosts.py runs it in a network namespace): the beamline's page in
headless Chromium, its state noted every 0.2 s as JSON lines until the file ``<out>.stop`` appears.

    python tests/web_observer.py --url http://10.213.78.1:60620 --key <observer key> --out seen.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.web_helpers import chromium  # noqa: E402

STATE = """() => {
  const b = window.braggscope, q = b.queue || {};
  return {connected: b.connected, role: b.role, status: (q.status || {}), running: q.running || null,
          history: (q.history || []).map(h => ({name: h.name, uid: h.item_uid, meta: h.meta || {},
                                                exit: (h.result || {}).exit_status})),
          run: b.run, time: Date.now() / 1000};
}"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--screenshot", type=Path)
    a = p.parse_args(argv)
    stop = a.out.with_suffix(".stop")
    with chromium(a.out.parent / "observer-chromium") as browser, a.out.open("w") as out:
        page = browser.new_page()
        page.goto(f"{a.url}/#key={a.key}")
        deadline = time.monotonic() + 600
        while not stop.exists() and time.monotonic() < deadline:
            out.write(json.dumps(page.evaluate(STATE)) + "\n")
            out.flush()
            time.sleep(0.2)
        if a.screenshot:
            page.screenshot(path=str(a.screenshot), full_page=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
