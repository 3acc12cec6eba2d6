"""The ``[bus]`` settings of a configuration, and the publisher they describe."""

from __future__ import annotations

import os
from pathlib import Path

from braggscope.app.bus.publisher import DocumentPublisher
from braggscope.core.errors import ConfigError

__all__ = ["bus_settings", "publisher_from_config"]


def bus_settings(cfg) -> dict:
    """The ``[bus]`` table of a configuration, checked; ``url == ""`` means no bus."""
    bus = dict(cfg.get("bus", {}) or {})
    out = {"url": str(bus.get("url", "")), "stream": str(bus.get("stream", "BRAGGSCOPE")),
           "subject": str(bus.get("subject", "braggscope.documents")),
           "queue_size": int(bus.get("queue_size", 10000)), "high_water": float(bus.get("high_water", 0.5)),
           "spill_dir": str(bus.get("spill_dir", "~/braggscope-data/bus")),
           "spill_max_mb": float(bus.get("spill_max_mb", 2048))}
    if not out["stream"].replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"config key bus.stream={out['stream']!r}: use letters, digits, '-' and '_' only")
    if not out["subject"] or any(c in out["subject"] for c in " *>"):
        raise ConfigError(f"config key bus.subject={out['subject']!r}: "
                          "a plain NATS subject without spaces or wildcards")
    if out["queue_size"] < 1 or not 0.0 < out["high_water"] <= 1.0 or out["spill_max_mb"] <= 0:
        raise ConfigError("config keys bus.queue_size (>= 1), bus.high_water (0 < h <= 1), "
                          "bus.spill_max_mb (> 0): fix the value(s) in [bus]")
    return out


def publisher_from_config(cfg):
    """A started :class:`DocumentPublisher` for ``[bus]`` of ``cfg``, or None when ``bus.url`` is empty."""
    s = bus_settings(cfg)
    if not s["url"]:
        return None
    spill_dir = Path(os.path.expandvars(os.path.expanduser(s.pop("spill_dir"))))
    return DocumentPublisher(s.pop("url"), spill_dir=spill_dir, **s)
