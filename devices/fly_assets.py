"""The primary stream of a fly run as stream assets: a StreamResource per field, a StreamDatum per line.

The first accepted line brings one StreamResource per field (the run's detector file for the frames,
its capture file for the positions and times); every accepted line then brings one StreamDatum per
field naming its rows of those files, which bluesky-tiled-plugins' ``TiledWriter`` ingests.
"""

from __future__ import annotations

from collections import deque

from event_model import ComposeStreamResource, StreamRange

from .fly_report import FlyLineReport

__all__ = ["StreamAssets"]


class StreamAssets:
    """Asset documents of the accepted lines not yet collected.

    Parameters
    ----------
    image_key : str
        Field of the frames (``<detector>_image``).
    fast, slow, time_key : str
        Fields of the captured fast and slow positions (um) and of the pulse times (s).
    monitor : str, optional
        Field of the monitor counts per frame (the capture file's ``/mon1``); None: not recorded.
    """

    def __init__(self, image_key: str, fast: str, slow: str, time_key: str, monitor: str | None = None):
        self.image_key, self.fast, self.slow, self.time_key = image_key, fast, slow, time_key
        self.monitor = monitor
        self.index = 0  # points collected so far
        self._pending: deque = deque()
        self._bundles: dict = {}  # data key -> ComposeStreamResource bundle (one per field per run)

    def reset(self) -> None:
        """A new run: no resource yet, nothing pending."""
        self.index = 0
        self._pending.clear()
        self._bundles.clear()

    def add(self, report: FlyLineReport) -> None:
        """Queue an accepted line's rows for the next :meth:`docs`."""
        self._pending.append(report)

    def docs(self, frame_shape):
        """``(name, doc)`` pairs of the queued lines, a retried line's rows after its short attempt's."""
        rows, cols = frame_shape
        while self._pending:
            line = self._pending.popleft()
            n = line.expected
            sources = ((self.image_key, line.image_file, line.image_first, "/entry/data/data", [1, rows, cols]),
                       (self.fast, line.pcap_file, line.pcap_first, "/pix", [n]),
                       (self.slow, line.pcap_file, line.pcap_first, "/piy", [n]),
                       (self.time_key, line.pcap_file, line.pcap_first, "/time", [n]))
            if self.monitor:
                sources += ((self.monitor, line.pcap_file, line.pcap_first, "/mon1", [n]),)
            for data_key, path, first, dataset, chunks in sources:
                bundle = self._bundles.get(data_key)
                if bundle is None:  # the file is open for writing: read in SWMR mode
                    bundle = self._bundles[data_key] = ComposeStreamResource()(
                        mimetype="application/x-hdf5", uri=f"file://localhost{path}", data_key=data_key,
                        parameters={"dataset": dataset, "chunk_shape": chunks, "swmr": True})
                    yield "stream_resource", bundle.stream_resource_doc
                yield "stream_datum", bundle.compose_stream_datum(indices=StreamRange(start=first, stop=first + n))
            self.index += n
