"""Plugins of the simulated Maxipix: ``Stats1:``, ``image1:``, ``ROI1:`` and ``ROIStat1:``."""

from __future__ import annotations

import numpy as np
from caproto import ChannelType
from caproto.server import SubGroup

from .ad_pvs import DISABLE_ENABLE, NO_YES, Group, pair, ro
from .ioc_motors import post_if_changed

__all__ = ["ImageGroup", "ROIGroup", "ROIStatGroup", "StatsGroup", "roi_bounds"]


class StatsGroup(Group):
    """``Stats1:`` -- total counts, centroid and maximum of the last frame."""

    enable, enable_rbv = pair("EnableCallbacks", 1, enum=DISABLE_ENABLE)
    total = ro("Total_RBV", 0.0, dtype=ChannelType.DOUBLE)
    centroid_x = ro("CentroidX_RBV", 0.0, dtype=ChannelType.DOUBLE)
    centroid_y = ro("CentroidY_RBV", 0.0, dtype=ChannelType.DOUBLE)
    max_value = ro("MaxValue_RBV", 0.0, dtype=ChannelType.DOUBLE)
    array_counter = ro("ArrayCounter_RBV", 0, dtype=ChannelType.LONG)
    unique_id = ro("UniqueId_RBV", 0, dtype=ChannelType.LONG)

    async def update(self, stats: dict, unique_id: int) -> None:
        if self.enable.value != "Enable":
            return
        await self.unique_id.write(unique_id)
        await self.total.write(stats["total"])
        await self.centroid_x.write(stats["centroid_x"])
        await self.centroid_y.write(stats["centroid_y"])
        await self.max_value.write(stats["max"])
        await self.array_counter.write(self.array_counter.value + 1)


# ---------------------------------------------------------------------- image1:
class ImageGroup(Group):
    """``image1:`` -- the last frame as a LONG (int32) waveform for live display.

    Channel Access has no uint32, so frames are served as LONG; a frame with a
    pixel above 2**31 - 1 is refused (never silently wrapped). Clients need
    ``EPICS_CA_MAX_ARRAY_BYTES`` >= 4 x rows x cols (braggscope sets 64 MiB).
    """

    enable, enable_rbv = pair("EnableCallbacks", 1, enum=DISABLE_ENABLE)
    array_data = ro("ArrayData", [0], dtype=ChannelType.LONG, max_length=1)
    array_size0 = ro("ArraySize0_RBV", 0, dtype=ChannelType.LONG)
    array_size1 = ro("ArraySize1_RBV", 0, dtype=ChannelType.LONG)
    array_counter = ro("ArrayCounter_RBV", 0, dtype=ChannelType.LONG)

    async def update(self, frame: np.ndarray, max_value: float | None = None) -> None:
        """Publish ``frame``; ``max_value`` (its maximum, if known) saves a pass over it."""
        if self.enable.value != "Enable":
            return
        peak = float(frame.max(initial=0)) if max_value is None else max_value
        if peak > np.iinfo(np.int32).max:
            raise OverflowError(f"{self.prefix}ArrayData: a pixel exceeds the int32 range of CA LONG")
        await self.array_data.write(frame.astype(np.int32).ravel())
        await post_if_changed(self.array_size0, frame.shape[1])
        await post_if_changed(self.array_size1, frame.shape[0])
        await self.array_counter.write(self.array_counter.value + 1)


# ---------------------------------------------------------------------- ROI1: and ROIStat1:
def roi_bounds(shape, min_x, min_y, size_x, size_y, enable_x=1, enable_y=1) -> tuple[int, int, int, int]:
    """The frame window ``(row0, row1, col0, col1)`` (half-open) of an areaDetector ROI.

    As the ROI plugin does: X is the column (fast) axis, Y the row axis; a
    disabled axis (``EnableX``/``EnableY`` = 0) spans the whole frame; the
    window is clipped to the frame (``MinX`` past the edge leaves an empty window).

    Parameters
    ----------
    shape : (int, int)
        Frame shape ``(rows, cols)``.
    min_x, min_y, size_x, size_y : int
        First column, first row, number of columns, number of rows (pixels).
    enable_x, enable_y : int
        1: the axis is cut to the ROI; 0: the whole axis.
    """
    rows, cols = int(shape[0]), int(shape[1])

    def axis(enabled, start, size, n):
        if not enabled:
            return 0, n
        start = min(max(int(start), 0), n)
        return start, min(start + max(int(size), 0), n)

    r0, r1 = axis(enable_y, min_y, size_y, rows)
    c0, c1 = axis(enable_x, min_x, size_x, cols)
    return r0, r1, c0, c1


class ROIGroup(Group):
    """``ROI1:`` -- the region-of-interest plugin (the window; its output feeds ``ROIStat1:``).

    ``MinX``/``SizeX`` are columns, ``MinY``/``SizeY`` rows (pixels); ``EnableX``/``EnableY``
    = Disable: the whole axis. The full frame at start-up.
    """

    enable, enable_rbv = pair("EnableCallbacks", 1, enum=DISABLE_ENABLE)
    min_x, min_x_rbv = pair("MinX", 0, dtype=ChannelType.LONG)
    min_y, min_y_rbv = pair("MinY", 0, dtype=ChannelType.LONG)
    size_x, size_x_rbv = pair("SizeX", 0, dtype=ChannelType.LONG)
    size_y, size_y_rbv = pair("SizeY", 0, dtype=ChannelType.LONG)
    enable_x, enable_x_rbv = pair("EnableX", 1, enum=DISABLE_ENABLE)
    enable_y, enable_y_rbv = pair("EnableY", 1, enum=DISABLE_ENABLE)
    max_size_x = ro("MaxSizeX_RBV", 0, dtype=ChannelType.LONG)
    max_size_y = ro("MaxSizeY_RBV", 0, dtype=ChannelType.LONG)

    @max_size_x.startup
    async def max_size_x(self, instance, async_lib):
        rows, cols = self.parent.shape
        for attr, value in (("max_size_x", cols), ("max_size_y", rows), ("size_x", cols), ("size_y", rows),
                            ("size_x_rbv", cols), ("size_y_rbv", rows)):
            await getattr(self, attr).write(value)

    async def on_put(self, attr, value):
        if attr in ("min_x", "min_y", "size_x", "size_y") and value < 0:
            raise ValueError(f"{self.prefix}{attr}: must be >= 0, got {value}")
        return value

    def window(self, shape) -> tuple[int, int, int, int]:
        """The current window ``(row0, row1, col0, col1)`` in a frame of ``shape``."""
        on = {"Enable": 1, "Disable": 0}
        return roi_bounds(shape, self.min_x.value, self.min_y.value, self.size_x.value, self.size_y.value,
                          on.get(self.enable_x.value, 1), on.get(self.enable_y.value, 1))


class ROIStatRegion(Group):
    """``ROIStat1:1:`` -- statistics of the ROI plugin's output (its whole array)."""

    use, use_rbv = pair("Use", 1, enum=NO_YES)
    total = ro("Total_RBV", 0.0, dtype=ChannelType.DOUBLE)
    net = ro("Net_RBV", 0.0, dtype=ChannelType.DOUBLE)


class ROIStatGroup(Group):
    """``ROIStat1:`` -- the ROIStat plugin, fed by ``ROI1:`` (``NDArrayPort`` ROI1); one region ``1:``."""

    enable, enable_rbv = pair("EnableCallbacks", 1, enum=DISABLE_ENABLE)
    nd_array_port, nd_array_port_rbv = pair("NDArrayPort", "ROI1", dtype=ChannelType.STRING)
    array_counter = ro("ArrayCounter_RBV", 0, dtype=ChannelType.LONG)
    unique_id = ro("UniqueId_RBV", 0, dtype=ChannelType.LONG)
    region1 = SubGroup(ROIStatRegion, prefix="1:")

    async def update(self, frame: np.ndarray, roi: ROIGroup, unique_id: int) -> None:
        """Sum ``frame`` inside ``roi``'s window (both plugins enabled and the region in use)."""
        if self.enable.value != "Enable" or roi.enable.value != "Enable":
            return
        region = self.region1
        if region.use.value == "Yes":
            r0, r1, c0, c1 = roi.window(frame.shape)
            total = float(frame[r0:r1, c0:c1].sum(dtype=np.float64))
            await region.total.write(total)
            await region.net.write(total)
        await self.unique_id.write(unique_id)
        await self.array_counter.write(self.array_counter.value + 1)


