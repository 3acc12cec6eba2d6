"""Beamline configuration: one TOML file (PV prefixes, detector, limits, storage).

``load_config()`` reads, in order of precedence, an explicit path, the
``BRAGGSCOPE_CONFIG`` environment variable, or the packaged default, which
points at the simulator. Missing keys fall back to the packaged default, so a
site file only needs what differs.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_CONFIG_PATH", "Config", "load_config", "save_config"]

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.toml")


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class Config(dict):
    """A nested dict with dotted look-up: ``cfg["detector.pixel_m"]``."""

    path: Path | None = None

    def __getitem__(self, key: str) -> Any:
        if isinstance(key, str) and "." in key and not dict.__contains__(self, key):
            node: Any = self
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    raise KeyError(f"config has no key {key!r} (missing {part!r})")
                node = dict.__getitem__(node, part)
            return node
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def set(self, key: str, value: Any) -> None:
        """Set a dotted key, creating tables as needed."""
        parts = key.split(".")
        node: dict = self
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def expand_path(self, key: str) -> Path:
        """A config path value with ``~`` and environment variables expanded."""
        return Path(os.path.expandvars(os.path.expanduser(str(self[key]))))


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load a beamline configuration.

    Parameters
    ----------
    path : path-like, optional
        A TOML file. Defaults to ``$BRAGGSCOPE_CONFIG`` or the packaged
        simulator configuration.
    """
    with open(DEFAULT_CONFIG_PATH, "rb") as f:
        data = tomllib.load(f)
    chosen = path if path is not None else os.environ.get("BRAGGSCOPE_CONFIG")
    if chosen:
        chosen = Path(chosen).expanduser()
        if not chosen.is_file():
            raise FileNotFoundError(f"configuration file not found: {chosen}")
        with open(chosen, "rb") as f:
            try:
                site = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"invalid TOML in {chosen}: {exc}") from exc
        data = _merge(data, site)
    cfg = Config(data)
    cfg.path = Path(chosen) if chosen else DEFAULT_CONFIG_PATH
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write a configuration to TOML atomically (temporary file, then rename)."""
    import tomli_w

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        tomli_w.dump(dict(cfg), f)
    os.replace(tmp, path)
    return path
