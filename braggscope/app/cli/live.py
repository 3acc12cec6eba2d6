"""``braggscope live``: live SXDM maps from the document bus, in a process of their own (:mod:`braggscope.app.bus`).

The run's documents come from the bus (:func:`~braggscope.app.bus.pull.consume`), the maps are made by a
:class:`~braggscope.app.bus.consumer.LiveConsumer`; ``--path-map OLD=NEW`` relocates the detector files
for a host that mounts them elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from braggscope.analysis.live.callback import LiveSXDM
from braggscope.app.bus.consumer import LiveConsumer
from braggscope.app.bus.pull import consume
from braggscope.app.bus.settings import bus_settings
from braggscope.core.config import load_config
from braggscope.core.errors import ArgumentError

__all__ = ["configure"]


def configure(parser) -> None:
    """Add the options of ``braggscope live``."""
    parser.add_argument("--url", help="NATS server (default: config bus.url, else nats://127.0.0.1:4222)")
    parser.add_argument("--stream", help="JetStream stream (default: config bus.stream)")
    parser.add_argument("--subject", help="subject of the documents (default: config bus.subject)")
    parser.add_argument("--durable", default="braggscope-live",
                        help="durable consumer name: a restart with the same name resumes where it stopped")
    parser.add_argument("--deliver", choices=("new", "all"), default="new",
                        help="where a new durable consumer starts: runs from now on (new) or the whole stream (all)")
    parser.add_argument("--out", help="output directory (default: <storage.data_dir>/live)")
    parser.add_argument("--path-map", action="append", default=[], metavar="OLD=NEW",
                        help="read detector files under OLD from NEW instead (repeatable)")
    parser.add_argument("--runs", type=int, default=0, help="exit after this many finished runs (0: never)")
    parser.add_argument("--threshold", type=float, default=0.2, help="mask threshold, fraction of the map maximum")
    parser.add_argument("--background", type=_background, default="constant",
                        help="'constant' (each frame's clipped mean, as the offline reduction; default), 'none', "
                             "or counts per pixel per frame")
    parser.add_argument("--roi", type=int, nargs=4, metavar=("ROW0", "ROW1", "COL0", "COL1"),
                        help="reduce only this detector window")
    parser.add_argument("--png-interval", type=float, default=1.0, help="seconds between two PNG refreshes")
    parser.add_argument("--frame-timeout", type=float, default=10.0, help="seconds to wait for a frame in its file")
    parser.set_defaults(func=_run)


def _background(text: str):
    """``--background``: "constant", "none" or a number of counts (argparse reports a bad one in one line)."""
    if text in ("constant", "none"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"write 'constant', 'none' or counts per pixel per frame, got {text!r}") \
            from None


def _path_map(items) -> list[tuple[str, str]]:
    """``["OLD=NEW", ...]`` as ``[(old, new), ...]``; one-line :class:`ArgumentError` for a malformed item."""
    pairs = []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ArgumentError(f"--path-map {item!r}: write OLD=NEW, e.g. /data/detector=/mnt/id01/detector")
        pairs.append((old, new))
    return pairs


def _run(args) -> int:
    cfg = load_config(args.config)
    bus = bus_settings(cfg)
    out = Path(args.out) if args.out else cfg.expand_path("storage.data_dir") / "live"
    live_kwargs = {"threshold": args.threshold, "background": args.background,
                   "detector_roi": args.roi, "frame_timeout_s": args.frame_timeout, "batch_size": 64}
    try:  # the options checked now, not at the first run
        LiveSXDM(**live_kwargs, announce=False)
    except ValueError as exc:
        raise ArgumentError(str(exc)) from None
    consumer = LiveConsumer(out, path_map=_path_map(args.path_map), live_kwargs=live_kwargs,
                            png_interval_s=args.png_interval)
    asyncio.run(consume(args.url or bus["url"] or "nats://127.0.0.1:4222", args.stream or bus["stream"],
                        args.subject or bus["subject"], consumer, durable=args.durable, deliver=args.deliver,
                        runs=args.runs))
    return 0
