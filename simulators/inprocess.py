"""An in-process area detector that writes its frames to HDF5 like areaDetector.

Used where no IOC is wanted: unit tests of the plans and storage, the
in-process baseline of ``benchmarks/bench_scan_overhead.py``, and dry runs.
It emits the same documents as ophyd's ``FileStoreHDF5IterativeWrite``
(a Resource with spec ``AD_HDF5``, dataset ``/entry/data/data``, one Datum
per point with ``point_number``), so the storage path is exercised exactly as
with the real Maxipix + HDF5 plugin.

The frame source is any callable returning a ``(rows, cols)`` unsigned
integer array, e.g. ``lambda: beamline.render(positions())``.
"""

from __future__ import annotations

import threading
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import SynAxis
from ophyd.status import DeviceStatus
from ophyd.utils import LimitError

from braggscope.devices.maxipix import set_geometry
from braggscope.simulators.ioc_detector import roi_bounds

__all__ = ["CountingDetector", "HDF5ImageDetector", "LimitedSynAxis", "make_inprocess_devices"]

#: Each frame's unique id in the file (areaDetector's NDAttributes layout, as the simulator IOC).
UNIQUE_ID_DATASET = "/entry/instrument/NDAttributes/NDArrayUniqueId"


class InProcessROI(Device):
    """The ROI counter's window (as the areaDetector ``ROI1:`` plugin; pixels, X = column, Y = row)."""

    min_x = Cpt(Signal, value=0, kind="config")
    min_y = Cpt(Signal, value=0, kind="config")
    size_x = Cpt(Signal, value=0, kind="config")
    size_y = Cpt(Signal, value=0, kind="config")
    enable_x = Cpt(Signal, value=1, kind="config")
    enable_y = Cpt(Signal, value=1, kind="config")


class InProcessROIStat(Device):
    """Region 1 of the ROIStat plugin: ``total`` (hinted) = the frame summed inside the window while ``use``."""

    use = Cpt(Signal, value=1, kind="omitted")
    total = Cpt(Signal, value=0, kind="hinted")


class HDF5ImageDetector(Device):
    """Area detector rendering frames in-process and writing them to HDF5.

    Parameters
    ----------
    render : callable
        ``render() -> ndarray (rows, cols)`` of unsigned integer counts,
        called once per trigger.
    write_dir : path-like
        Directory for the HDF5 files (one file per staging, i.e. per run).
    shape : (int, int)
        Frame shape ``(rows, cols)``.
    name : str
        Device name; the image field is ``<name>_image`` (``mpx1x4_image``).
    distance_m, pixel_m, cch : optional
        Detector geometry (m, m, direct-beam pixel (row, col)): configuration
        signals ``<name>_distance_m``, ``<name>_pixel_m``, ``<name>_cch`` and
        ``<name>_frame_shape`` (= ``shape``), as on
        :class:`braggscope.devices.maxipix.Maxipix`, so every event descriptor
        records them (read back by ``braggscope.core.setup.ScanSetup``).

    Notes
    -----
    Readings: ``<name>_image`` (external, HDF5), ``<name>_total`` (sum of
    the frame, counts; hinted), ``<name>_roistat1_total`` (the ROI counter: the
    frame summed inside the ``roi1`` window, whole frame by default; hinted),
    ``<name>_unique_id`` (the frame's unique id,
    stored per frame in the file at ``/entry/instrument/NDAttributes/NDArrayUniqueId``
    as areaDetector does) and ``<name>_num_captured`` (frames in the file once
    it was written); configuration ``<name>_acquire_time`` (s).
    """

    total = Cpt(Signal, value=0, kind="hinted")
    unique_id = Cpt(Signal, value=0, kind="normal")
    num_captured = Cpt(Signal, value=0, kind="normal")
    acquire_time = Cpt(Signal, value=0.0, kind="config")
    # the ROI counter, as the Maxipix's roi1/roistat1 (field <name>_roistat1_total, hinted)
    roi1 = Cpt(InProcessROI, "", kind="config")
    roistat1 = Cpt(InProcessROIStat, "", kind="normal")
    distance_m = Cpt(Signal, value=float("nan"), kind="config")
    pixel_m = Cpt(Signal, value=55e-6, kind="config")
    cch = Cpt(Signal, value=[float("nan"), float("nan")], kind="config")
    frame_shape = Cpt(Signal, value=[0, 0], kind="config")

    def __init__(self, *, render: Callable[[], np.ndarray], write_dir, shape, name="mpx1x4",
                 dtype="uint32", distance_m=None, pixel_m=None, cch=None, **kwargs):
        kwargs.setdefault("labels", {"detectors"})
        super().__init__(name=name, **kwargs)
        set_geometry(self, distance_m=distance_m, pixel_m=pixel_m, cch=cch, frame_shape=shape)
        self.roi1.size_x.put(int(shape[1]))  # the whole frame until an ROI is set
        self.roi1.size_y.put(int(shape[0]))
        self._render = render
        self._write_dir = Path(write_dir).expanduser()
        self._shape = (int(shape[0]), int(shape[1]))
        self._dtype = np.dtype(dtype)
        self._file: h5py.File | None = None
        self._dataset = None
        self._resource: dict | None = None
        self._asset_docs: deque = deque()
        self._point = 0
        self._unique_id = 0  # like areaDetector's ArrayCounter: not reset per file
        self._ids = None
        self._last_datum: str | None = None
        self._lock = threading.Lock()
        self.last_path: Path | None = None

    # -- bluesky protocols --------------------------------------------------
    @property
    def image_key(self) -> str:
        return f"{self.name}_image"

    def stage(self):
        self._write_dir.mkdir(parents=True, exist_ok=True)
        path = self._write_dir / f"{self.name}_{uuid.uuid4().hex[:12]}.h5"
        self._file = h5py.File(path, "w", libver="latest")
        self._dataset = self._file.create_dataset(
            "/entry/data/data", shape=(0,) + self._shape, maxshape=(None,) + self._shape,
            dtype=self._dtype, chunks=(1,) + self._shape)
        self._ids = self._file.create_dataset(UNIQUE_ID_DATASET, shape=(0,), maxshape=(None,),
                                              chunks=(1024,), dtype=np.int32)
        self._file.swmr_mode = True
        self._point = 0
        self.last_path = path
        self._resource = {
            "uid": str(uuid.uuid4()), "spec": "AD_HDF5", "root": "/",
            "resource_path": str(path).lstrip("/"), "resource_kwargs": {"frame_per_point": 1},
            "path_semantics": "posix",
        }
        self._asset_docs.append(("resource", dict(self._resource)))
        return super().stage()

    def unstage(self):
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except (OSError, RuntimeError) as exc:  # e.g. a full disk: the run's own error says so
                    warnings.warn(f"{self.name}: closing {self.last_path} failed: {exc}", stacklevel=2)
            self._file = self._dataset = self._ids = None
            self._asset_docs.clear()  # as ophyd's FileStoreBase: no datum of a cut point leaks into the next run
        return super().unstage()

    def trigger(self):
        if self._file is None:
            raise RuntimeError(f"{self.name} must be staged before trigger (plans stage it)")
        return _acquire(self, self._take_frame)

    def _take_frame(self):
        frame = np.asarray(self._render())
        if frame.shape != self._shape:
            raise ValueError(f"render() returned shape {frame.shape}, expected {self._shape}")
        with self._lock:
            n = self._point
            self._unique_id += 1
            self._dataset.resize(n + 1, axis=0)
            self._dataset[n] = frame.astype(self._dtype, copy=False)
            self._ids.resize(n + 1, axis=0)
            self._ids[n] = self._unique_id
            self._dataset.flush()
            self._ids.flush()
        self.total.put(int(frame.sum(dtype=np.int64)))
        if self.roistat1.use.get():
            roi = self.roi1
            r0, r1, c0, c1 = roi_bounds(self._shape, roi.min_x.get(), roi.min_y.get(), roi.size_x.get(),
                                        roi.size_y.get(), roi.enable_x.get(), roi.enable_y.get())
            self.roistat1.total.put(int(frame[r0:r1, c0:c1].sum(dtype=np.int64)))
        self.unique_id.put(self._unique_id)
        self.num_captured.put(n + 1)
        datum_id = f"{self._resource['uid']}/{n}"
        self._asset_docs.append(("datum", {"datum_id": datum_id, "resource": self._resource["uid"],
                                           "datum_kwargs": {"point_number": n}}))
        self._last_datum = datum_id
        self._point += 1

    def describe(self):
        out = super().describe()
        out[self.image_key] = {
            "source": f"HDF5:{self.last_path}", "dtype": "array", "shape": list(self._shape),
            "dtype_numpy": self._dtype.str, "external": "FILESTORE:",
        }
        return out

    def read(self):
        out = super().read()
        out[self.image_key] = {"value": self._last_datum, "timestamp": time.time()}
        return out

    def collect_asset_docs(self):
        while self._asset_docs:
            yield self._asset_docs.popleft()



class CountingDetector(Device):
    """A triggerable counter computed in-process (the fluorescence detector without EPICS).

    Parameters
    ----------
    count : callable
        ``count() -> int``, called once per trigger (e.g. the simulator's
        fluorescence at the motors' positions).
    name : str
        Device name; the field is ``<name>_counts`` (``xrf_counts``, hinted),
        as for :class:`braggscope.devices.fluorescence.FluorescenceDetector`.

    Notes
    -----
    Configuration ``<name>_acquire_time`` (s): the trigger sleeps that long
    (0 by default, like :class:`HDF5ImageDetector`).
    """

    #: The signal does not depend on the Bragg condition (see calibrate_eccentricity).
    bragg_independent = True

    counts = Cpt(Signal, value=0, kind="hinted")
    acquire_time = Cpt(Signal, value=0.0, kind="config")

    def __init__(self, *, count: Callable[[], int], name="xrf", **kwargs):
        kwargs.setdefault("labels", {"detectors"})
        super().__init__(name=name, **kwargs)
        self._count = count

    def trigger(self):
        return _acquire(self, lambda: self.counts.put(int(self._count())))


def _acquire(device, take) -> DeviceStatus:
    """Run ``take()`` and wait out ``device.acquire_time``; a failure is reported through the status."""
    status = DeviceStatus(device)
    try:
        t_exp = float(device.acquire_time.get())
        t0 = time.monotonic()
        take()
        remaining = t_exp - (time.monotonic() - t0)
        if remaining > 0:
            time.sleep(remaining)
    except Exception as exc:  # report through the status, as a real detector would
        status.set_exception(exc)
        return status
    status.set_finished()
    return status


class LimitedSynAxis(SynAxis):
    """``ophyd.sim.SynAxis`` with soft limits (``.limits``), like an EpicsMotor."""

    def __init__(self, *, limits=(0.0, 0.0), **kwargs):
        kwargs.setdefault("delay", 0)
        kwargs.setdefault("labels", {"motors"})
        super().__init__(**kwargs)
        self._limits = (float(limits[0]), float(limits[1]))

    @property
    def limits(self):
        return self._limits

    def set(self, value, **kwargs):
        low, high = self._limits
        if low != high and not (low <= value <= high):
            raise LimitError(f"{self.name}: {value} outside limits [{low}, {high}]")
        return super().set(value, **kwargs)


def make_inprocess_devices(beamline, write_dir, *, limits=None, exposure_s=0.01, name="mpx1x4"):
    """In-process motors and detector around a simulated beamline (no EPICS).

    Parameters
    ----------
    beamline : object with ``render(positions, exposure_s)`` and ``shape``
        e.g. ``braggscope.simulators.beamline.SimulatedBeamline``.
    write_dir : path-like
        Directory of the detector's HDF5 files.
    limits : dict, optional
        Motor name -> (low, high), e.g. ``cfg["limits"]``.
    exposure_s : float
        Exposure passed to ``render`` and ``fluorescence`` (s); the detectors do not sleep.

    Returns
    -------
    dict
        ``pix``, ``piy``, ``piz``, ``eta``, ``phi``, ``nu``, ``delta`` (motors),
        ``energy`` (keV, at ``beamline.energy_kev``, when the beamline has one),
        ``mpx1x4`` (the detector, its geometry configuration signals set from
        the beamline's ``distance_m``, ``pixel_m``, ``cch`` and ``shape``) and, when ``beamline`` has a
        ``fluorescence(positions, exposure_s)`` method, ``xrf``
        (:class:`CountingDetector`, field ``xrf_counts``), keyed by name.
    """
    limits = dict(limits or {})
    motors = {n: LimitedSynAxis(name=n, limits=limits.get(n, (0.0, 0.0)))
              for n in ("pix", "piy", "piz", "eta", "phi", "nu", "delta")}
    if getattr(beamline, "energy_kev", None) is not None:
        motors["energy"] = LimitedSynAxis(name="energy", limits=limits.get("energy", (0.0, 0.0)),
                                          value=float(beamline.energy_kev))

    def positions():
        return {n: m.position for n, m in motors.items()}

    det = HDF5ImageDetector(render=lambda: beamline.render(positions(), exposure_s), write_dir=write_dir,
                            shape=beamline.shape, name=name, distance_m=getattr(beamline, "distance_m", None),
                            pixel_m=getattr(beamline, "pixel_m", None), cch=getattr(beamline, "cch", None))
    devices = {**motors, name: det}
    if hasattr(beamline, "fluorescence"):
        devices["xrf"] = CountingDetector(count=lambda: beamline.fluorescence(positions(), exposure_s), name="xrf")
    return devices
