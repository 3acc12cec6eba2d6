"""PV helpers of the simulated areaDetector plugins: setpoint/readback pairs as areaDetector serves them."""

from __future__ import annotations

from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

__all__ = ["DATA_TYPES", "DISABLE_ENABLE", "NO_YES", "Group", "pair", "path_pair", "ro"]

DATA_TYPES = ("Int8", "UInt8", "Int16", "UInt16", "Int32", "UInt32", "Float32", "Float64")
NO_YES = ("No", "Yes")
DISABLE_ENABLE = ("Disable", "Enable")


async def _put_with_rbv(group, instance, value):
    """Generic setpoint putter: validate via ``group.on_put``, mirror to ``<attr>_rbv``."""
    attr = instance.pvspec.attr
    value = await group.on_put(attr, value)
    rbv = getattr(group, attr + "_rbv", None)
    if rbv is not None:
        await rbv.write(value)
    return value


def pair(name, value, *, dtype=None, enum=None, **kwargs):
    """A setpoint pvproperty ``name`` and its read-only ``name_RBV``."""
    if enum is not None:
        if isinstance(value, int):
            value = enum[value]  # caproto keeps an int initial value as int
        kwargs.update(dtype=ChannelType.ENUM, enum_strings=enum)
    elif dtype is not None:
        kwargs["dtype"] = dtype
    setpoint = pvproperty(name=name, value=value, put=_put_with_rbv, **kwargs)
    readback = pvproperty(name=name + "_RBV", value=value, read_only=True, **kwargs)
    return setpoint, readback


def path_pair(name, value=""):
    kwargs = dict(dtype=ChannelType.CHAR, max_length=1024, string_encoding="utf-8")
    return (pvproperty(name=name, value=value, put=_put_with_rbv, **kwargs),
            pvproperty(name=name + "_RBV", value=value, read_only=True, **kwargs))


def ro(name, value, **kwargs):
    return pvproperty(name=name, value=value, read_only=True, **kwargs)


class Group(PVGroup):
    async def on_put(self, attr, value):
        return value


