"""The document bus: every run's documents published on NATS JetStream, and ``braggscope live`` reading them.

The acquisition ``RE.subscribe``-s a :class:`DocumentPublisher` (:mod:`.publisher`: bounded queue,
spill file, one publishing thread); ``braggscope live`` (:mod:`.consumer`, :mod:`.pull`, :mod:`.png`)
subscribes from another process or host. The message format is in :mod:`.format`, the ``[bus]``
settings in :mod:`.settings`. The names below are the bus's public API.

Frames are not on the bus: events carry datum ids and the resource documents name the detector's
HDF5 files.
"""

from braggscope.app.bus.format import (
                                       HEADER_INDEX,
                                       HEADER_RUN,
                                       HEADER_START_SEQ,
                                       decode_batch,
                                       decode_timed_batch,
                                       encode_document,
                                       ensure_stream,
                                       run_messages,
)
from braggscope.app.bus.publisher import BusOverflowError, DocumentPublisher
from braggscope.app.bus.settings import bus_settings, publisher_from_config

__all__ = ["DocumentPublisher", "BusOverflowError", "encode_document", "decode_batch", "decode_timed_batch",
           "ensure_stream", "run_messages", "publisher_from_config", "bus_settings", "HEADER_RUN", "HEADER_INDEX",
           "HEADER_START_SEQ"]
