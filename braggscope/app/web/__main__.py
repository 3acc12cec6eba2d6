"""``python -m braggscope.app.web --config <state_dir>/config.toml``: the page's server (``braggscope serve``
starts it as its ``web`` service)."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from braggscope.app.web.server import make_app
from braggscope.core.config import load_config
from braggscope.core.errors import UserError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m braggscope.app.web", description=__doc__)
    parser.add_argument("--config", help="configuration (braggscope serve's <state_dir>/config.toml)")
    parser.add_argument("--host", help="address to bind (default: [serve] host)")
    parser.add_argument("--port", type=int, help="port (default: [serve] web_port)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        app = make_app(cfg)
    except UserError as exc:
        print(f"braggscope web: {exc}", file=sys.stderr)
        return 2
    host, port = args.host or cfg["serve.host"], args.port or cfg["serve.web_port"]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                          ws="websockets", lifespan="on"))
    print(f"braggscope web: the page at http://{host}:{port}/ (a key of the queue's HTTP server opens it)",
          flush=True)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
