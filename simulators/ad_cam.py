"""``cam1:`` of the simulated Maxipix: acquisition control (internal and external trigger)."""

from __future__ import annotations

from caproto import ChannelType

from .ad_pvs import DATA_TYPES, DISABLE_ENABLE, Group, pair, ro

__all__ = ["CamGroup"]


class CamGroup(Group):
    """``cam1:`` -- acquisition control."""

    acquire, acquire_rbv = pair("Acquire", 0, enum=("Done", "Acquire"))
    acquire_time, acquire_time_rbv = pair("AcquireTime", 0.01, dtype=ChannelType.DOUBLE)
    acquire_period, acquire_period_rbv = pair("AcquirePeriod", 0.01, dtype=ChannelType.DOUBLE)
    image_mode, image_mode_rbv = pair("ImageMode", 0, enum=("Single", "Multiple", "Continuous"))
    trigger_mode, trigger_mode_rbv = pair("TriggerMode", 0, enum=("Internal", "External"))
    num_images, num_images_rbv = pair("NumImages", 1, dtype=ChannelType.LONG)
    num_exposures, num_exposures_rbv = pair("NumExposures", 1, dtype=ChannelType.LONG)
    array_callbacks, array_callbacks_rbv = pair("ArrayCallbacks", 1, enum=DISABLE_ENABLE)
    array_counter, array_counter_rbv = pair("ArrayCounter", 0, dtype=ChannelType.LONG)
    data_type, data_type_rbv = pair("DataType", "UInt32", enum=DATA_TYPES)
    data_type_disa = ro("DataType_RBV.DISA", 0, dtype=ChannelType.LONG)
    array_size_x = ro("ArraySizeX_RBV", 0, dtype=ChannelType.LONG)
    array_size_y = ro("ArraySizeY_RBV", 0, dtype=ChannelType.LONG)
    array_size_z = ro("ArraySizeZ_RBV", 0, dtype=ChannelType.LONG)
    max_size_x = ro("MaxSizeX_RBV", 0, dtype=ChannelType.LONG)
    max_size_y = ro("MaxSizeY_RBV", 0, dtype=ChannelType.LONG)
    num_images_counter = ro("NumImagesCounter_RBV", 0, dtype=ChannelType.LONG)
    detector_state = ro("DetectorState_RBV", "Idle", dtype=ChannelType.ENUM,
                         enum_strings=("Idle", "Acquire", "Readout", "Error"))
    manufacturer = ro("Manufacturer_RBV", "braggscope", dtype=ChannelType.STRING)
    model = ro("Model_RBV", "Maxipix (simulated)", dtype=ChannelType.STRING)
    port_name = ro("PortName_RBV", "MPX1", dtype=ChannelType.STRING)
    # external-trigger (fly-scan) mode: read-out dead time and the frames lost to it
    readout_time = ro("ReadoutTime_RBV", 0.0003, dtype=ChannelType.DOUBLE)
    dropped_frames = ro("DroppedFrames_RBV", 0, dtype=ChannelType.LONG)

    @acquire_rbv.startup
    async def acquire_rbv(self, instance, async_lib):
        rows, cols = self.parent.shape
        await self.array_size_x.write(cols)
        await self.array_size_y.write(rows)
        await self.max_size_x.write(cols)
        await self.max_size_y.write(rows)

    async def on_put(self, attr, value):
        if attr == "acquire_time" and not 0 < value <= 3600:
            raise ValueError(f"{self.prefix}AcquireTime: must be in (0, 3600] s, got {value}")
        if attr == "acquire_period" and not 0 <= value <= 3600:
            raise ValueError(f"{self.prefix}AcquirePeriod: must be in [0, 3600] s, got {value}")
        if attr in ("num_images", "num_exposures") and value < 1:
            raise ValueError(f"{self.prefix}{attr}: must be >= 1, got {value}")
        if attr == "acquire":
            if value == "Acquire":
                if self.parent.busy:
                    return value  # already acquiring: like areaDetector, ignore
                self.parent.start_acquisition()
            else:
                self.parent.stop_acquisition()
        return value


