"""``HDF1:`` of the simulated Maxipix: the HDF5 file writer in areaDetector's layout."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
from caproto import ChannelType

from .ad_pvs import DISABLE_ENABLE, NO_YES, Group, pair, path_pair, ro
from .ioc_motors import post_if_changed

__all__ = ["HDF5Group", "UNIQUE_ID_DATASET"]

#: Where the HDF5 plugin stores each frame's NDArrayUniqueId (areaDetector's NDAttributes layout).
UNIQUE_ID_DATASET = "/entry/instrument/NDAttributes/NDArrayUniqueId"


def _create_file(filename: str, shape, layout: dict):
    """A new frame file in areaDetector's layout, in SWMR mode (``layout``: the frame dataset's keywords)."""
    import h5py

    rows, cols = shape
    h5 = h5py.File(filename, "w", libver="latest")
    entry = h5.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    data = entry.create_group("data")
    data.attrs["NX_class"] = "NXdata"
    data.create_dataset("data", shape=(0, rows, cols), maxshape=(None, rows, cols), dtype=np.uint32, **layout)
    h5.create_dataset(UNIQUE_ID_DATASET, shape=(0,), maxshape=(None,), chunks=(1024,), dtype=np.int32)
    h5.swmr_mode = True
    return h5


class HDF5Group(Group):
    """``HDF1:`` -- the HDF5 file-writer plugin (areaDetector layout)."""

    enable, enable_rbv = pair("EnableCallbacks", 1, enum=DISABLE_ENABLE)
    blocking, blocking_rbv = pair("BlockingCallbacks", 1, enum=NO_YES)
    nd_array_port, nd_array_port_rbv = pair("NDArrayPort", "MPX1", dtype=ChannelType.STRING)
    array_counter, array_counter_rbv = pair("ArrayCounter", 0, dtype=ChannelType.LONG)
    file_path, file_path_rbv = path_pair("FilePath")
    file_name, file_name_rbv = path_pair("FileName")
    file_template, file_template_rbv = path_pair("FileTemplate", "%s%s_%6.6d.h5")
    full_file_name = ro("FullFileName_RBV", "", dtype=ChannelType.CHAR, max_length=2048,
                         string_encoding="utf-8")
    file_number, file_number_rbv = pair("FileNumber", 0, dtype=ChannelType.LONG)
    auto_increment, auto_increment_rbv = pair("AutoIncrement", 1, enum=NO_YES)
    auto_save, auto_save_rbv = pair("AutoSave", 1, enum=NO_YES)
    file_write_mode, file_write_mode_rbv = pair("FileWriteMode", 2,
                                                 enum=("Single", "Capture", "Stream"))
    num_capture, num_capture_rbv = pair("NumCapture", 0, dtype=ChannelType.LONG)
    num_captured = ro("NumCaptured_RBV", 0, dtype=ChannelType.LONG)
    unique_id = ro("UniqueId_RBV", 0, dtype=ChannelType.LONG)
    capture, capture_rbv = pair("Capture", 0, enum=("Done", "Capture"))
    create_directory, create_directory_rbv = pair("CreateDirectory", 0, dtype=ChannelType.LONG)
    file_path_exists = ro("FilePathExists_RBV", 0, dtype=ChannelType.LONG)
    write_status = ro("WriteStatus", 0, dtype=ChannelType.LONG)
    write_message = ro("WriteMessage", "", dtype=ChannelType.CHAR, max_length=512,
                        string_encoding="utf-8")
    plugin_type = ro("PluginType_RBV", "NDFileHDF5", dtype=ChannelType.STRING)
    array_size0 = ro("ArraySize0_RBV", 0, dtype=ChannelType.LONG)
    array_size1 = ro("ArraySize1_RBV", 0, dtype=ChannelType.LONG)
    array_size2 = ro("ArraySize2_RBV", 0, dtype=ChannelType.LONG)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h5 = None  # open h5py.File while capturing
        self.lock = threading.Lock()  # the external-trigger writer thread and close
        self._datasets = None

    async def on_put(self, attr, value):
        if attr == "file_path":
            path = Path(value)
            if self.create_directory.value < 0 and not path.exists():
                depth = len(path.parts) - 1 + int(self.create_directory.value)  # existing prefix
                if Path(*path.parts[:max(depth, 1)]).is_dir():
                    path.mkdir(parents=True, exist_ok=True)
            await self.file_path_exists.write(int(path.is_dir()))
        elif attr == "capture":
            if value == "Capture":
                await self._open()
            else:
                await self._close()
        elif attr == "num_capture" and value < 0:
            raise ValueError(f"{self.prefix}NumCapture must be >= 0, got {value}")
        return value

    def current_filename(self) -> str:
        template = self.file_template.value or "%s%s_%6.6d.h5"
        return template % (self.file_path.value, self.file_name.value, self.file_number.value)

    async def _open(self) -> None:
        await self._close()
        if not Path(self.file_path.value).is_dir():
            # like areaDetector: Capture is accepted, the error is reported in
            # WriteStatus/WriteMessage and FilePathExists_RBV (ophyd checks it)
            await self.write_status.write(1)
            await self.write_message.write(f"directory does not exist: {self.file_path.value}")
            return
        filename = self.current_filename()
        # HDF5 calls off the event loop: a slow disk or the writer thread's flush must not stall the server
        self.h5 = await asyncio.get_running_loop().run_in_executor(
            None, _create_file, filename, self.parent.shape, self.parent.frame_layout())
        await self.full_file_name.write(filename)
        await self.num_captured.write(0)
        await self.write_status.write(0)
        await self.write_message.write("")
        if self.auto_increment.value == "Yes":
            await self.file_number.write(self.file_number.value + 1)
            await self.file_number_rbv.write(self.file_number.value)

    async def _close(self) -> None:
        if self.h5 is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._close_file)
            await self.capture_rbv.write("Done")

    def _close_file(self) -> None:
        with self.lock:  # not while the writer thread appends
            if self.h5 is not None:
                self.h5.close()
                self.h5 = self._datasets = None

    def append_chunks(self, chunks, chunk_rows: int, unique_ids) -> int:
        """Append frames given as compressed row-block chunks (``write_direct_chunk``: no filter pipeline),
        one list of chunk payloads per frame, and their unique ids. No flush: :meth:`flush` (worker thread).

        Returns the number of frames in the file.
        """
        dset, ids = self.datasets()
        n = dset.shape[0]
        dset.resize(n + len(chunks), axis=0)
        write = dset.id.write_direct_chunk
        for i, payloads in enumerate(chunks):
            for j, payload in enumerate(payloads):
                write((n + i, j * chunk_rows, 0), payload)
        ids.resize(n + len(chunks), axis=0)
        ids[n:] = unique_ids
        return n + len(chunks)

    def datasets(self):
        """The open file's frame and unique-id datasets (looked up once per file: h5py's path lookup
        costs more than a frame's chunk writes)."""
        if self._datasets is None or self._datasets[0] is not self.h5:
            self._datasets = (self.h5, self.h5["entry/data/data"], self.h5[UNIQUE_ID_DATASET])
        return self._datasets[1:]

    def flush(self) -> None:
        """Make what was appended visible to SWMR readers and durable in the file (worker thread)."""
        for dset in self.datasets():
            dset.flush()
        self.h5.flush()

    def append(self, frame: np.ndarray, unique_id: int) -> int:
        """Append one frame and its unique id, then flush (runs in a worker thread).

        Returns the number of frames in the file.
        """
        dset, ids = self.datasets()
        n = dset.shape[0]
        dset.resize(n + 1, axis=0)
        dset[n] = frame
        ids.resize(n + 1, axis=0)
        ids[n] = unique_id
        self.flush()
        return n + 1

    def replace(self, index: int, frame: np.ndarray, unique_id: int) -> bool:
        """Write ``frame`` over frame ``index`` of the open file if that frame is ``unique_id``'s, and flush
        (a frame whose exposure the beam changed, re-rendered; worker thread). Returns whether it did."""
        with self.lock:
            if self.h5 is None:
                return False
            dset, ids = self.datasets()
            if not 0 <= index < dset.shape[0] or int(ids[index]) != unique_id:
                return False
            dset[index] = frame
            dset.flush()
            self.h5.flush()
            return True

    async def frame_written(self, count: int, shape, unique_id: int, new: int = 1) -> None:
        """Post that the file holds ``count`` frames, the last ``unique_id``, ``new`` of them since the last call."""
        await self.unique_id.write(unique_id)
        await self.num_captured.write(count)
        await self.array_counter.write(self.array_counter.value + new)  # the putter mirrors _RBV
        await post_if_changed(self.array_size0, shape[1])
        await post_if_changed(self.array_size1, shape[0])
        limit = self.num_capture.value
        if limit and count >= limit and self.file_write_mode.value != "Single":
            await self._close()
            await self.capture.write("Done", verify_value=False)


