"""The scan setup: one typed description of a measurement, from devices to analysis.

:class:`ScanSetup` holds what an analysis needs besides the frames and the
trajectory: the detector geometry (energy, distance, pixel size, direct-beam
pixel ``cch``), the detector (name, frame shape, image field, optional pixel
mask and window), the detector and sample angles ``delta``, ``nu``, ``phi``
and the sample name. It has one way in from the configuration or the devices
(:meth:`ScanSetup.from_config`, :meth:`ScanSetup.from_devices`), one way into
a start document (:meth:`ScanSetup.to_start_doc`, nested under ``"setup"``)
and one way back out of a run (:meth:`ScanSetup.from_start_doc`,
:meth:`ScanSetup.from_run`), which reads, field by field and in this order of
precedence:

1. the start document's ``setup`` (a plan given an explicit setup);
2. the detector's configuration signals in the event descriptors
   (``<detector>_distance_m``, ``<detector>_pixel_m``, ``<detector>_cch``,
   ``<detector>_frame_shape``) and the baseline readings (``energy``,
   ``delta``, ``nu``, ``phi``): every run, including bluesky's own ``count``,
   ``scan`` and ``grid_scan``;
3. the flat keys of runs recorded before the setup existed (``energy_kev``,
   ``distance_m``, ``pixel_m``, ``cch``, ``detector_shape``, ``delta``,
   ``nu``, ``phi`` at the top of the start document).

Units: keV, metres, pixels (row, col), degrees. This module is the bottom
layer: it imports no wing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from braggscope.core.errors import UserError
from braggscope.core.geometry import Geometry
from braggscope.core.numbers import finite_float

__all__ = ["ScanSetup", "SetupError", "REQUIRED_FIELDS", "SETUP_KEY", "DETECTOR_CONFIG", "BASELINE_NAMES"]

#: Start-document key holding :meth:`ScanSetup.to_start_doc`.
SETUP_KEY = "setup"

#: The fields without which a run cannot be reduced (the one list).
REQUIRED_FIELDS = ("energy_kev", "distance_m", "pixel_m", "cch", "detector_shape", "delta")

#: Setup field -> configuration signal of the area detector (descriptor key ``<detector>_<signal>``).
DETECTOR_CONFIG = {"distance_m": "distance_m", "pixel_m": "pixel_m", "cch": "cch",
                   "detector_shape": "frame_shape"}

#: Setup field -> reading name in the baseline stream (motor names).
BASELINE_NAMES = {"energy_kev": "energy", "delta": "delta", "nu": "nu", "phi": "phi"}

#: Flat start-document keys of runs recorded before the setup existed.
_LEGACY_KEYS = ("energy_kev", "distance_m", "pixel_m", "cch", "detector_shape", "delta", "nu", "phi")


class SetupError(UserError, ValueError):
    """A run or a configuration does not describe the measurement completely."""


@dataclass(frozen=True)
class ScanSetup:
    """Geometry, detector and angles of one measurement.

    Parameters
    ----------
    energy_kev : float
        Photon energy (keV).
    distance_m : float
        Sample-detector distance (m).
    pixel_m : float or (float, float)
        Pixel size (m), or ``(row, col)`` sizes.
    cch : (float, float)
        Direct-beam pixel ``(row, col)`` at all detector angles zero, in the
        coordinates of the full detector frame.
    detector_shape : (int, int)
        Full frame shape ``(rows, cols)``.
    delta : float or sequence of float
        Detector angle delta (deg), a scalar or one value per rocking angle.
    nu, phi : float or sequence of float
        Detector angle nu and sample angle phi (deg), as ``delta``.
    detector : str
        Name of the area detector (ophyd name, e.g. ``"mpx1x4"``).
    image_field : str, optional
        Event field of the frames; default ``"<detector>_image"``.
    pixel_mask : ndarray of bool, shape detector_shape, optional
        True for pixels to ignore (not recorded in start documents).
    detector_roi : (row0, row1, col0, col1), optional
        Window of the frames actually stored, half-open, full-frame pixels.
    sample : str, optional
        Sample name.
    """

    energy_kev: float
    distance_m: float
    pixel_m: float | tuple[float, float]
    cch: tuple[float, float]
    detector_shape: tuple[int, int]
    delta: float | tuple[float, ...]
    nu: float | tuple[float, ...] = 0.0
    phi: float | tuple[float, ...] = 0.0
    detector: str = "mpx1x4"
    image_field: str | None = None
    pixel_mask: Any = field(default=None, compare=False, repr=False)
    detector_roi: tuple[int, int, int, int] | None = None
    sample: str | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        for name in ("energy_kev", "distance_m"):
            value = _float(name, getattr(self, name))
            if not value > 0:
                raise SetupError(f"setup {name} must be > 0, got {getattr(self, name)!r}")
            set_(self, name, value)
        pixel = np.atleast_1d(np.asarray(self.pixel_m, dtype=float)).ravel()
        if pixel.size not in (1, 2) or not np.all(pixel > 0):
            raise SetupError(f"setup pixel_m must be > 0 m, one value or (row, col), got {self.pixel_m!r}")
        set_(self, "pixel_m", float(pixel[0]) if pixel.size == 1 else (float(pixel[0]), float(pixel[1])))
        set_(self, "cch", _pair("cch", self.cch, float))
        shape = _pair("detector_shape", self.detector_shape, int)
        if min(shape) < 1:
            raise SetupError(f"setup detector_shape must be positive (rows, cols), got {self.detector_shape!r}")
        set_(self, "detector_shape", shape)
        for name in ("delta", "nu", "phi"):
            set_(self, name, _angle(name, getattr(self, name)))
        if not isinstance(self.detector, str) or not self.detector:
            raise SetupError(f"setup detector must be a non-empty name, got {self.detector!r}")
        if self.image_field is None:
            set_(self, "image_field", f"{self.detector}_image")
        if self.pixel_mask is not None:
            mask = np.asarray(self.pixel_mask, dtype=bool)
            if mask.shape != shape:
                raise SetupError(f"setup pixel_mask has shape {mask.shape}, detector_shape is {shape}")
            set_(self, "pixel_mask", mask)
        if self.detector_roi is not None:
            roi = tuple(int(v) for v in self.detector_roi)
            if len(roi) != 4 or not (0 <= roi[0] < roi[1] <= shape[0] and 0 <= roi[2] < roi[3] <= shape[1]):
                raise SetupError(f"setup detector_roi must be (row0, row1, col0, col1) within {shape}, "
                                 f"got {self.detector_roi!r}")
            set_(self, "detector_roi", roi)

    # -- use ----------------------------------------------------------------
    def geometry(self, window: Sequence[int] | None = None) -> Geometry:
        """The :class:`~braggscope.core.geometry.Geometry` of the frames.

        Parameters
        ----------
        window : (row0, row1, col0, col1), optional
            Frames cropped to this window (full-frame pixels); default the
            stored window ``detector_roi`` if any, else the full frame. The
            direct-beam pixel follows through ``Geometry.crop``.
        """
        geo = Geometry(self.energy_kev, self.distance_m, self.pixel_m, self.cch)
        window = self.detector_roi if window is None else window
        return geo if window is None else geo.crop(int(window[0]), int(window[2]))

    @property
    def frame_shape(self) -> tuple[int, int]:
        """Shape ``(rows, cols)`` of the stored frames (the window's when ``detector_roi`` is set)."""
        if self.detector_roi is None:
            return self.detector_shape
        r0, r1, c0, c1 = self.detector_roi
        return (r1 - r0, c1 - c0)

    def angles(self, n_eta: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``delta, nu, phi`` as arrays of ``n_eta`` values (deg), scalars broadcast."""
        out = []
        for name in ("delta", "nu", "phi"):
            arr = np.atleast_1d(np.asarray(getattr(self, name), dtype=float))
            if arr.size == 1:
                arr = np.full(int(n_eta), float(arr[0]))
            elif arr.size != int(n_eta):
                raise SetupError(f"setup {name} has {arr.size} values; need one or one per rocking angle "
                                 f"({n_eta})")
            out.append(arr)
        return out[0], out[1], out[2]

    def replace(self, **changes) -> ScanSetup:
        """A copy with some fields changed."""
        return replace(self, **changes)

    # -- out ----------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready fields (lists for tuples; ``pixel_mask`` left out)."""
        out = {}
        for f in fields(self):
            if f.name == "pixel_mask":
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_start_doc(self) -> dict:
        """Start-document metadata: ``{"setup": {...}}`` (merge it into ``md``)."""
        return {SETUP_KEY: self.to_dict()}

    # -- in -----------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg, **overrides) -> ScanSetup:
        """Setup from a configuration (``energy.energy_kev``, ``detector.*``) and overrides.

        The configuration has no angles: pass ``delta`` (and ``nu``, ``phi``,
        default 0) as overrides. Any field may be overridden.
        """
        values = {"energy_kev": cfg.get("energy.energy_kev"), "distance_m": cfg.get("detector.distance_m"),
                  "pixel_m": cfg.get("detector.pixel_m"), "cch": cfg.get("detector.cch"),
                  "detector_shape": cfg.get("detector.shape"), "detector": cfg.get("detector.name", "mpx1x4")}
        values = {k: v for k, v in values.items() if v is not None}
        return cls.from_fields({**values, **overrides}, source="the configuration (and overrides)")

    @classmethod
    def from_devices(cls, detector, *, energy=None, delta=None, nu=0.0, phi=0.0, **overrides) -> ScanSetup:
        """Setup from an area detector's configuration signals and the positioners' positions.

        Parameters
        ----------
        detector : ophyd device
            Carries the configuration signals ``distance_m``, ``pixel_m``,
            ``cch`` and ``frame_shape``.
        energy, delta, nu, phi : positioner or float
            Positioners (their ``position`` is read) or values (keV, deg).
        **overrides
            Any other field (``sample``, ``pixel_mask`` ...).
        """
        config = {}
        for key, reading in detector.read_configuration().items():
            config[key] = reading["value"]
        values = _from_configuration(detector.name, config)
        values.update(detector=detector.name, image_field=getattr(detector, "image_key", None))
        for name, source in (("energy_kev", energy), ("delta", delta), ("nu", nu), ("phi", phi)):
            if source is not None:
                values[name] = getattr(source, "position", source)
        values = {k: v for k, v in values.items() if v is not None}
        return cls.from_fields({**values, **overrides}, source=f"device {detector.name!r}")

    @classmethod
    def from_start_doc(cls, doc: Mapping, descriptors: Sequence[Mapping] = (),
                       baseline: Mapping | None = None) -> ScanSetup:
        """The setup of a run, or of any start-document-like dict (e.g. a file reader's ``meta``).

        Parameters
        ----------
        doc : mapping
            Start document: its ``setup`` (a dict or a ScanSetup) wins, then the
            detector configuration and the baseline, then legacy flat keys.
        descriptors : sequence of mapping
            Event descriptors of the run (their ``configuration`` and ``data_keys``).
        baseline : mapping, optional
            Reading name -> value of the first baseline event (``energy``, ``delta``...).

        Raises
        ------
        SetupError
            Naming the missing fields and how to record them.
        """
        nested = doc.get(SETUP_KEY)
        if isinstance(nested, ScanSetup):
            return nested
        values = {k: doc[k] for k in _LEGACY_KEYS if doc.get(k) is not None}
        if doc.get("sample") is not None:
            values["sample"] = doc["sample"]
        values.update(_from_descriptors(descriptors, doc.get("detector")))
        for name, reading in BASELINE_NAMES.items():
            if baseline and baseline.get(reading) is not None:
                values[name] = baseline[reading]
        if isinstance(nested, Mapping):
            values.update({k: v for k, v in nested.items() if v is not None})
        elif nested is not None:
            raise SetupError(f"start document key {SETUP_KEY!r} must be a dict, got {type(nested).__name__}")
        for key in ("pixel_mask", "detector_roi"):
            if doc.get(key) is not None and key not in values:
                values[key] = doc[key]
        uid = doc.get("uid")
        return cls.from_fields(values, source=f"run {uid}" if uid else "the metadata")

    @classmethod
    def from_run(cls, run) -> ScanSetup:
        """The setup of a catalog run (a Tiled ``BlueskyRun``), see :meth:`from_start_doc`."""
        start = run.metadata["start"]
        descriptors, baseline = [], None
        for stream in _stream_names(run):
            node = run[stream]
            descriptors.extend(getattr(node, "descriptors", None) or node.metadata.get("descriptors", []))
        if "baseline" in _stream_names(run):
            baseline = _first_row(run["baseline"], list(BASELINE_NAMES.values()))
        return cls.from_start_doc(start, descriptors, baseline)

    @classmethod
    def from_fields(cls, values: Mapping, *, source: str = "the metadata") -> ScanSetup:
        """Construct from a dict of fields, naming every missing required field at once."""
        missing = [k for k in REQUIRED_FIELDS if values.get(k) is None]
        if missing:
            raise SetupError(
                f"{source} lacks the setup field(s) {', '.join(missing)}: record them with detector "
                "configuration signals and a baseline (the braggscope session and demo do), or pass "
                "setup=ScanSetup(...) to the plan (docs/contract.md)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SetupError(f"{source}: unknown setup field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))


# -- helpers -------------------------------------------------------------------
def _float(name, value) -> float:
    return finite_float(value, f"setup {name}", error=SetupError)


def _pair(name, value, kind) -> tuple:
    try:
        a, b = (kind(v) for v in np.ravel(np.asarray(value, dtype=float)))
    except (TypeError, ValueError):
        raise SetupError(f"setup {name} must be two numbers (row, col), got {value!r}") from None
    if not (np.isfinite(a) and np.isfinite(b)):
        raise SetupError(f"setup {name} must be finite, got {value!r}")
    return (a, b)


def _angle(name, value):
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise SetupError(f"setup {name} must be degrees (a number or one per rocking angle), got {value!r}") \
            from None
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise SetupError(f"setup {name} must be finite degrees, got {value!r}")
    return float(arr) if arr.ndim == 0 else tuple(float(v) for v in arr.ravel())


def _from_configuration(detector: str, config: Mapping) -> dict:
    """Setup fields from one object's configuration readings (keys ``<detector>_<signal>``)."""
    out = {}
    for name, signal in DETECTOR_CONFIG.items():
        value = config.get(f"{detector}_{signal}")
        if value is not None and _is_set(value):
            out[name] = value
    return out


def _is_set(value) -> bool:
    """False for a configuration signal left at its NaN (or zero-shape) default: not recorded."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return True
    return bool(arr.size) and bool(np.all(np.isfinite(arr))) and bool(np.any(arr != 0))


def _from_descriptors(descriptors: Sequence[Mapping], detector: str | None) -> dict:
    """Setup fields from the area detector's configuration in event descriptors."""
    for desc in descriptors or ():
        configuration = desc.get("configuration") or {}
        names = [detector] if detector in configuration else list(configuration)
        for name in names:
            data = (configuration.get(name) or {}).get("data") or {}
            values = _from_configuration(name, data)
            if "distance_m" in values:
                values["detector"] = name
                if f"{name}_image" in (desc.get("data_keys") or {}):
                    values["image_field"] = f"{name}_image"
                return values
    return {}


def _stream_names(run) -> list:
    try:
        return list(run)
    except Exception:  # noqa: BLE001 - a run without streams
        return []


def _first_row(stream, names) -> dict:
    """First value of each present reading of a stream (a Tiled event-stream node)."""
    out = {}
    try:
        keys = set(stream.keys()) if hasattr(stream, "keys") else set()
        table = stream.read([n for n in names if n in keys]) if keys else None
    except Exception:  # noqa: BLE001 - an unreadable baseline leaves the other sources
        return out
    for name in names:
        if table is not None and name in table:
            values = np.asarray(table[name])
            if values.size:
                out[name] = float(values.ravel()[0])
    return out
