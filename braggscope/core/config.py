"""Beamline configuration: one TOML file (PV prefixes, detector, limits, storage).

``load_config()`` reads, in order of precedence, an explicit path, the
``BRAGGSCOPE_CONFIG`` environment variable, or the packaged default, which
points at the simulator. Missing keys fall back to the packaged default, so a
site file only needs what differs.

The merged configuration is validated section by section
(:mod:`braggscope.core.config_schema`): an unknown section or key, a value of
the wrong type and a missing or empty required value are refused with a
:class:`~braggscope.core.errors.ConfigError` of one line naming the file, the
key and what is allowed, e.g.
``config site.toml: [detector] distanse_m: unknown key (allowed: name, pixel_m, ...)``.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ValidationError

from .config_schema import ConfigSchema
from .errors import ConfigError

__all__ = ["DEFAULT_CONFIG_PATH", "Config", "load_config", "save_config", "validate_config"]

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

    Raises
    ------
    ConfigError
        The file is missing, not TOML, or does not match the schema (see
        :func:`validate_config`).
    """
    with open(DEFAULT_CONFIG_PATH, "rb") as f:
        data = tomllib.load(f)
    chosen = path if path is not None else os.environ.get("BRAGGSCOPE_CONFIG")
    if chosen:
        chosen = Path(chosen).expanduser()
        if not chosen.is_file():
            raise ConfigError(f"configuration file not found: {chosen}")
        with open(chosen, "rb") as f:
            try:
                site = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config {chosen}: invalid TOML: {exc}") from None
            except UnicodeDecodeError as exc:
                raise ConfigError(f"config {chosen}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                                  f"offset {exc.start}); save it as UTF-8") from None
        data = _merge(data, site)
    validate_config(data, chosen or DEFAULT_CONFIG_PATH)
    cfg = Config(data)
    cfg.path = Path(chosen) if chosen else DEFAULT_CONFIG_PATH
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write a configuration to TOML atomically (temporary file, then rename)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        tomli_w.dump(dict(cfg), f)
    os.replace(tmp, path)
    return path


def validate_config(data: dict, path: str | os.PathLike = "<config>") -> None:
    """Check a merged configuration against :class:`~braggscope.core.config_schema.ConfigSchema`.

    Parameters
    ----------
    data : dict
        The nested configuration (TOML tables as dicts).
    path : path-like
        The file the values came from, named in the error.

    Raises
    ------
    ConfigError
        One line: ``config PATH: [section] key: problem (allowed: ...)``;
        several problems are joined with ``; ``.
    """
    try:
        ConfigSchema.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(err) for err in exc.errors()]
        raise ConfigError(f"config {path}: " + "; ".join(problems)) from None


def _describe(err: dict) -> str:
    """One pydantic error as ``[section] key: problem``."""
    loc = err["loc"]
    model: type[BaseModel] = ConfigSchema
    sections: list[str] = []
    i = 0
    while i < len(loc) - 1 and isinstance(loc[i], str):
        field = model.model_fields.get(loc[i])
        sub = field.annotation if field is not None else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            break
        sections.append(loc[i])
        model = sub
        i += 1
    key = "".join(f"[{p}]" if isinstance(p, int) else (p if j == 0 else f".{p}") for j, p in enumerate(loc[i:]))
    allowed = ", ".join(model.model_fields)
    kind = err["type"]
    if not sections and loc:  # a whole section
        if kind == "extra_forbidden":
            return f"[{key}]: unknown section (allowed: {allowed})"
        if kind == "missing":
            return f"[{key}]: required section missing"
        return f"[{key}]: must be a table of keys, got {err.get('input')!r}"
    where = f"[{'.'.join(sections)}] {key}".rstrip()
    if kind == "extra_forbidden":
        return f"{where}: unknown key (allowed: {allowed})"
    if kind == "missing":
        return f"{where}: required key missing"
    if kind == "string_too_short":
        return f"{where}: required value is empty"
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and kind != "value_error":
        msg = f"{msg[:1].lower()}{msg[1:]}, got {err['input']!r} ({type(err['input']).__name__})"
    return f"{where}: {msg}"
