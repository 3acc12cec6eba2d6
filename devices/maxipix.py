"""Maxipix area detector: ``SingleTrigger`` + cam + HDF5 file plugin + stats.

The components are the areaDetector PVs ophyd uses (a subset of the standard
``cam1:``, ``HDF1:`` and ``Stats1:`` records), so the class works with the
braggscope simulator and with a real areaDetector IOC alike. Frames go to
HDF5 files written by the IOC; ophyd emits ``AD_HDF5`` Resource/Datum
documents (``FileStoreHDF5IterativeWrite``) and the event field
``<name>_image`` references them.
"""

from __future__ import annotations

import logging
import time

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignalRO, Signal, Staged
from ophyd.areadetector import ADComponent as ADCpt
from ophyd.areadetector import DetectorBase, EpicsSignalWithRBV, SingleTrigger
from ophyd.areadetector.base import ADBase, ad_group
from ophyd.areadetector.base import DynamicDeviceComponent as DDC
from ophyd.areadetector.filestore_mixins import FileStoreHDF5IterativeWrite
from ophyd.areadetector.plugins import EpicsPathSignal

from braggscope.core import compat

__all__ = ["Maxipix", "MaxipixCam", "MaxipixHDF5", "MaxipixROI", "MaxipixROIStat", "MaxipixStats", "set_geometry"]


class MaxipixCam(ADBase):
    """``cam1:`` acquisition control (the PVs ophyd's ``SingleTrigger`` and ``DetectorBase`` use)."""

    lazy_wait_for_connection = False  # construct offline; connect() checks
    _default_configuration_attrs = ("acquire_time", "acquire_period", "image_mode", "trigger_mode",
                                    "num_images", "data_type", "manufacturer", "model")
    acquire = ADCpt(EpicsSignalWithRBV, "Acquire", kind="omitted")
    acquire_time = ADCpt(EpicsSignalWithRBV, "AcquireTime", kind="config")
    acquire_period = ADCpt(EpicsSignalWithRBV, "AcquirePeriod", kind="config")
    image_mode = ADCpt(EpicsSignalWithRBV, "ImageMode", kind="config")
    trigger_mode = ADCpt(EpicsSignalWithRBV, "TriggerMode", kind="config")
    num_images = ADCpt(EpicsSignalWithRBV, "NumImages", kind="config", auto_monitor=True)
    num_exposures = ADCpt(EpicsSignalWithRBV, "NumExposures", kind="config")
    array_callbacks = ADCpt(EpicsSignalWithRBV, "ArrayCallbacks", kind="omitted")
    # not monitored: nothing here reads it, and its two monitors (the counter, its readback) cost the
    # client two callbacks on every frame
    array_counter = ADCpt(EpicsSignalWithRBV, "ArrayCounter", kind="omitted")
    data_type = ADCpt(EpicsSignalWithRBV, "DataType", kind="config")
    data_type_disabled = ADCpt(EpicsSignalRO, "DataType_RBV.DISA", kind="omitted")
    array_size = DDC(
        ad_group(EpicsSignalRO, (("array_size_x", "ArraySizeX_RBV"),
                                 ("array_size_y", "ArraySizeY_RBV"),
                                 ("array_size_z", "ArraySizeZ_RBV"))),
        kind="omitted",
    )
    detector_state = ADCpt(EpicsSignalRO, "DetectorState_RBV", string=True, kind="omitted", auto_monitor=True)
    manufacturer = ADCpt(EpicsSignalRO, "Manufacturer_RBV", string=True, kind="config")
    model = ADCpt(EpicsSignalRO, "Model_RBV", string=True, kind="config")
    port_name = ADCpt(EpicsSignalRO, "PortName_RBV", string=True, kind="omitted")
    # frames lost in external-trigger mode (fly scans); lazy: connected only by a fly scanner, so a detector
    # without this PV still connects for step scans
    dropped_frames = ADCpt(EpicsSignalRO, "DroppedFrames_RBV", kind="omitted", lazy=True)


class MaxipixHDF5(ADBase, FileStoreHDF5IterativeWrite):
    """``HDF1:`` file writer; emits ``AD_HDF5`` Resource/Datum documents.

    Parameters
    ----------
    write_path_template : str
        Directory as the IOC sees it (``detector.write_path`` in the config).
    read_path_template : str
        The same directory as this computer sees it (``detector.read_path``).
    """

    lazy_wait_for_connection = False
    _default_configuration_attrs = ("file_write_mode", "file_template")
    enable = ADCpt(EpicsSignalWithRBV, "EnableCallbacks", string=True, kind="config", auto_monitor=True)
    blocking_callbacks = ADCpt(EpicsSignalWithRBV, "BlockingCallbacks", string=True, kind="config")
    nd_array_port = ADCpt(EpicsSignalWithRBV, "NDArrayPort", string=True, kind="config")
    array_counter = ADCpt(EpicsSignalWithRBV, "ArrayCounter", kind="omitted")
    file_path = ADCpt(EpicsPathSignal, "FilePath", string=True, path_semantics="posix", kind="config")
    file_name = ADCpt(EpicsSignalWithRBV, "FileName", string=True, kind="config")
    file_template = ADCpt(EpicsSignalWithRBV, "FileTemplate", string=True, kind="config")
    full_file_name = ADCpt(EpicsSignalRO, "FullFileName_RBV", string=True, kind="omitted")
    file_number = ADCpt(EpicsSignalWithRBV, "FileNumber", kind="omitted")
    auto_increment = ADCpt(EpicsSignalWithRBV, "AutoIncrement", kind="omitted")
    auto_save = ADCpt(EpicsSignalWithRBV, "AutoSave", kind="omitted")
    file_write_mode = ADCpt(EpicsSignalWithRBV, "FileWriteMode", kind="config")
    num_capture = ADCpt(EpicsSignalWithRBV, "NumCapture", kind="omitted")
    num_captured = ADCpt(EpicsSignalRO, "NumCaptured_RBV", kind="omitted")
    capture = ADCpt(EpicsSignalWithRBV, "Capture", kind="omitted")
    create_directory = ADCpt(EpicsSignalWithRBV, "CreateDirectory", kind="omitted")
    file_path_exists = ADCpt(EpicsSignalRO, "FilePathExists_RBV", kind="omitted")
    write_status = ADCpt(EpicsSignalRO, "WriteStatus", kind="omitted")  # 1: the last open or write failed
    write_message = ADCpt(EpicsSignalRO, "WriteMessage", string=True, kind="omitted")
    plugin_type = ADCpt(EpicsSignalRO, "PluginType_RBV", string=True, kind="omitted")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stage_sigs.update([("enable", "Enable"), ("blocking_callbacks", "Yes")])
        self.stage_sigs.move_to_end("capture")  # open the file last


class MaxipixStats(Device):
    """``Stats1:`` -- total counts (hinted) and intensity centroid of the last frame."""

    enable = Cpt(EpicsSignalWithRBV, "EnableCallbacks", string=True, kind="omitted")
    total = Cpt(EpicsSignalRO, "Total_RBV", kind="hinted", auto_monitor=True)
    centroid_x = Cpt(EpicsSignalRO, "CentroidX_RBV", kind="normal", auto_monitor=True)
    centroid_y = Cpt(EpicsSignalRO, "CentroidY_RBV", kind="normal", auto_monitor=True)
    max_value = Cpt(EpicsSignalRO, "MaxValue_RBV", kind="normal", auto_monitor=True)


class MaxipixROI(Device):
    """``ROI1:`` -- the detector window of the ROI counter (pixels; X = column, Y = row).

    Set it with ``braggscope.app.commands.set_roi`` (``roi(...)`` in the session);
    configuration signals, so each event descriptor records the window the
    ROI counter summed.
    """

    enable = Cpt(EpicsSignalWithRBV, "EnableCallbacks", string=True, kind="omitted")
    min_x = Cpt(EpicsSignalWithRBV, "MinX", kind="config")
    min_y = Cpt(EpicsSignalWithRBV, "MinY", kind="config")
    size_x = Cpt(EpicsSignalWithRBV, "SizeX", kind="config")
    size_y = Cpt(EpicsSignalWithRBV, "SizeY", kind="config")
    enable_x = Cpt(EpicsSignalWithRBV, "EnableX", kind="config")
    enable_y = Cpt(EpicsSignalWithRBV, "EnableY", kind="config")


class MaxipixROIStat(Device):
    """``ROIStat1:`` -- region 1 of the ROIStat plugin fed by ``ROI1:``: the ROI total (hinted)."""

    enable = Cpt(EpicsSignalWithRBV, "EnableCallbacks", string=True, kind="omitted")
    use = Cpt(EpicsSignalWithRBV, "1:Use", kind="omitted")
    total = Cpt(EpicsSignalRO, "1:Total_RBV", kind="hinted", auto_monitor=True)


class Maxipix(SingleTrigger, DetectorBase):
    """The Maxipix detector (``mpx1x4`` at ID01): one frame per trigger, saved by HDF1.

    Parameters
    ----------
    prefix : str
        areaDetector prefix, e.g. ``"BSSIM:mpx1x4:"``.
    name : str
        ophyd name; the image field is ``<name>_image`` (``mpx1x4_image``).
    write_path, read_path : str
        Detector file directory as the IOC and as this computer see it.
    distance_m, pixel_m, cch, frame_shape
        The detector's geometry (sample distance in m, pixel size in m,
        direct-beam pixel (row, col) at all detector angles zero, frame
        shape (rows, cols)); configuration signals, so every event
        descriptor records them (``braggscope.core.setup.ScanSetup``).
        ``make_devices`` sets them from the ``[detector]`` configuration.

    Notes
    -----
    Reading gives ``<name>_image`` (kind ``normal``: a Datum reference, with
    ``dtype_numpy`` ``<u4`` in ``describe()``) and ``<name>_stats_total``
    (hinted, for BestEffortCallback), ``<name>_roistat1_total`` (the ROI
    counter: the frame summed inside the ``roi1`` window; hinted), plus the centroid, ``<name>_unique_id``
    (the frame's ``NDArrayUniqueId``, stored per frame in the file) and
    ``<name>_num_captured`` (frames in the file once this one was written):
    readers pair events and frames by them (``storage.sxdm_stack``). Configuration:
    the cam settings and ``<name>_distance_m``, ``<name>_pixel_m``,
    ``<name>_cch``, ``<name>_frame_shape``.
    """

    lazy_wait_for_connection = False
    _default_read_attrs = ("hdf5", "stats", "roistat1", "unique_id", "num_captured")
    _default_configuration_attrs = ("cam", "roi1", "distance_m", "pixel_m", "cch", "frame_shape")
    cam = Cpt(MaxipixCam, "cam1:", kind="config")
    hdf5 = Cpt(MaxipixHDF5, "HDF1:", kind="normal", write_path_template="/tmp/",
               read_path_template="/tmp/", root="/")
    stats = Cpt(MaxipixStats, "Stats1:", kind="normal")
    # the ROI counter: the sum of each frame inside the ROI1: window (hinted: alignment scans plot it)
    roi1 = Cpt(MaxipixROI, "ROI1:", kind="config")
    roistat1 = Cpt(MaxipixROIStat, "ROIStat1:", kind="normal")
    # which frame of the HDF5 file this event is: areaDetector's NDArrayUniqueId of the frame the
    # file plugin wrote last (stored per frame in the file) and the frame count of the file;
    # monitored, so a point reads them without a round trip (read() asks the IOC when they lag)
    unique_id = Cpt(EpicsSignalRO, "HDF1:UniqueId_RBV", kind="normal", auto_monitor=True)
    num_captured = Cpt(EpicsSignalRO, "HDF1:NumCaptured_RBV", kind="normal", auto_monitor=True)
    _last_frame = None  # the unique id before the latest trigger
    distance_m = Cpt(Signal, value=float("nan"), kind="config")
    pixel_m = Cpt(Signal, value=55e-6, kind="config")
    cch = Cpt(Signal, value=[float("nan"), float("nan")], kind="config")
    frame_shape = Cpt(Signal, value=[516, 516], kind="config")

    def __init__(self, prefix, *, name, write_path=None, read_path=None, distance_m=None, pixel_m=None,
                 cch=None, frame_shape=None, **kwargs):
        kwargs.setdefault("labels", {"detectors"})  # bluesky's %ct and %wa find it
        super().__init__(prefix, name=name, **kwargs)
        set_geometry(self, distance_m=distance_m, pixel_m=pixel_m, cch=cch, frame_shape=frame_shape)
        if write_path is not None:
            self.hdf5.write_path_template = _dir(write_path)
            self.hdf5.read_path_template = _dir(read_path if read_path is not None else write_path)
        self.stage_sigs.update([("cam.acquire", 0), ("cam.image_mode", "Multiple"),
                                ("cam.trigger_mode", "Internal"), ("cam.num_images", 1)])


    def __repr__(self):
        # bluesky takes the repr of a message's device at every message; ophyd's lists every attribute
        return f"{type(self).__name__}(prefix={self.prefix!r}, name={self.name!r})"

    def trigger(self):
        """Start one acquisition; the status finishes when ``Acquire_RBV`` returns to 0.

        As ophyd's ``SingleTrigger.trigger``, but returns a local reference:
        with a fast IOC the acquisition can end (and ophyd's callback clear
        ``self._status``) before ``SingleTrigger.trigger`` returns, which made
        it return None.
        """
        if self._staged != Staged.yes:
            raise RuntimeError(f"{self.name} is not staged; stage it (or use a plan) before trigger()")
        status = self._status = self._status_type(self)
        self._last_frame = self.unique_id.get()  # the monitored id before this frame (see read())
        self._acquisition_signal.put(1, wait=False)
        self.generate_datum(self._image_name, time.time(), {})
        return status


    def read(self):
        """As ophyd's, and the frame's datum names the frame's index in the HDF5 file.

        ophyd numbers datums by triggers since staging (``point_number``); the
        frame is the file's ``NumCaptured_RBV - 1``, read with the event. They
        agree unless the file plugin skipped or added a frame; the datum (still
        unsent: asset documents are collected after ``read``) then takes the
        file's number, so the catalog serves each event its own frame.
        """
        reading = super().read()
        self._fresh_frame_ids(reading)
        image, captured = reading.get(self._image_name), reading.get(f"{self.name}_num_captured")
        if image is not None and captured is not None and int(captured["value"]) >= 1:
            for name, doc in compat.pending_asset_docs(self.hdf5):
                if name == "datum" and doc["datum_id"] == image["value"]:
                    doc["datum_kwargs"]["point_number"] = int(captured["value"]) - 1
        return reading

    def _fresh_frame_ids(self, reading) -> None:
        """Ask the IOC for the frame ids when their monitors have not brought this frame's yet.

        The IOC posts them before ``Acquire_RBV`` returns to 0, so their updates normally arrive
        first on the same circuit; a record processed later (another scan thread of a real IOC)
        would leave the previous frame's ids in the monitor, and the point would be refused by
        the plans' guard. One round trip each, only then.
        """
        key = f"{self.name}_unique_id"
        last = self._last_frame
        if last is None or key not in reading or reading[key]["value"] > last:
            return
        for signal in (self.unique_id, self.num_captured):
            name = signal.name
            if name in reading:
                reading[name] = {"value": signal.get(use_monitor=False), "timestamp": time.time()}

    def unstage(self):
        """As ophyd's, but a detector whose IOC is gone is left as it is, with a warning.

        Restoring the staged PVs of a lost IOC can only fail; raising then
        would replace the run's real error (the lost connection, named by the
        plan) with a clean-up error such as ``HDF1:Capture_RBV could not connect``.
        """
        try:
            return super().unstage()
        except Exception as exc:  # noqa: BLE001 - re-raised unless the IOC is gone
            if self.connected:
                raise
            logging.getLogger(__name__).warning(
                "%s: IOC unreachable, staged settings not restored (%s: %s)", self.name, type(exc).__name__, exc)
            self._staged = Staged.no
            return [self]

    def _acquire_changed(self, value=None, old_value=None, **kwargs):
        # As SingleTrigger's, but a failed acquisition (DetectorState_RBV =
        # Error: no frame written) fails the status instead of passing silently.
        status = self._status
        if status is None or not (old_value == 1 and value == 0):
            return
        self._status = None
        if status.done:  # failed already (a lost IOC); a restarted IOC's Acquire_RBV = 0 changes nothing
            return
        if self.cam.detector_state.get() == "Error":
            status.set_exception(RuntimeError(
                f"{self.name}: acquisition failed on the IOC (DetectorState_RBV = Error); "
                "no frame was written, see the IOC log"))
        else:
            status.set_finished()


def set_geometry(detector, *, distance_m=None, pixel_m=None, cch=None, frame_shape=None) -> None:
    """Put the geometry configuration signals of an area detector (None leaves a signal as it is).

    Units: metres, pixels ``(row, col)``, ``(rows, cols)``.
    """
    if distance_m is not None:
        detector.distance_m.put(float(distance_m))
    if pixel_m is not None:
        detector.pixel_m.put(float(pixel_m))
    if cch is not None:
        detector.cch.put([float(c) for c in cch])
    if frame_shape is not None:
        detector.frame_shape.put([int(n) for n in frame_shape])


def _dir(path) -> str:
    path = str(path)
    return path if path.endswith("/") else path + "/"
