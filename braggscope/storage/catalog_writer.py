"""A ``TiledWriter`` that survives a lost catalog and gives every event its own frame.

:class:`CatalogWriter` is bluesky-tiled-plugins' ``TiledWriter`` with three changes:

* **Documents delivered again write once.** While the catalog server is
  unreachable, ``storage.background`` keeps the documents and delivers them
  again later. A retried ``start`` or descriptor reaches the run's writer once
  (the stock ``RunRouter`` lists a descriptor's callbacks again at each routing),
  an event whose table write failed keeps the reference to its frame, a failed
  ``stop`` is rolled back so that its retry does not count frames twice, and a
  batch of rows the server stored without answering is not appended again
  (``storage.append_once``).
* **Each event's frame, not the file's first n.** An interrupted exposure
  leaves a frame in the detector file that no event names.
  :class:`IndexedHDF5Consolidator` records the frame index of every event (the
  datum's ``point_number``) and, when they are not simply 0..n-1, gives the
  catalog's HDF5 adapter that list as its ``slice``: any Tiled reader of the
  run (a remote server's included) gets event i's own frame at row i.
* **Who wrote the run.** The start document stored in the catalog carries
  ``braggscope_writer`` (host, pid and the process's start time), so a run
  left open by a writer that was killed can be recognised and closed
  (``storage.recovery``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict

from bluesky_tiled_plugins.writing import consolidators as _consolidators
from bluesky_tiled_plugins.writing.consolidators import HDF5Consolidator, Patch
from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer, TiledWriter
from event_model import RunRouter, unpack_event_page
from packaging.version import Version
from tiled.client.utils import handle_error, retry_context
from tiled.utils import safe_json_dump

from braggscope.core import compat
from braggscope.storage.append_once import append_with_retry
from braggscope.storage.background import KeptByWriter, unreachable
from braggscope.storage.fly_stream import streamed_only
from braggscope.storage.recovery import WRITER_KEY, writer_identity

__all__ = ["CatalogWriter", "IndexedHDF5Consolidator"]

def _with_writer(doc: dict) -> dict:
    """The start document as stored in the catalog: with ``braggscope_writer``."""
    return dict(doc, **{WRITER_KEY: writer_identity()}) if WRITER_KEY not in doc else doc


def _one_frame_per_point(doc: dict) -> dict:
    """Drop ``frame_per_point == 1`` from AD_HDF5 resources.

    With it the catalog advertises ``(N, 1, rows, cols)``, a different rank
    from the file's ``(N, rows, cols)``, and Tiled then refuses to read a run
    whose detector file holds one frame more than the events (an abort or a
    failure between the detector's write and the event).
    """
    kwargs = doc.get("resource_kwargs") or {}
    if kwargs.get("frame_per_point") == 1:
        doc = dict(doc, resource_kwargs={k: v for k, v in kwargs.items() if k != "frame_per_point"})
    return doc


class IndexedHDF5Consolidator(HDF5Consolidator):
    """The HDF5 consolidator, serving each event's own frame of the file.

    Rows are the events' frames in event order: row i is the file frame the
    i-th datum names (its ``indices``, from the datum's ``point_number``).
    When these are 0, 1, ..., n-1 the data source gets ``slice = ":n"`` (a
    file may hold a frame after the last event: a run that failed during an
    exposure); otherwise ``slice = [i0, i1, ...]`` (Tiled's HDF5 adapter
    indexes the file's dataset with it). A dataset spread over several files keeps the stock
    behaviour (frame numbers restart in each file).
    """

    def __init__(self, stream_resource, descriptor):
        super().__init__(stream_resource, descriptor)
        self.frame_index: list[int] = []

    def consume_stream_datum(self, doc):
        self.frame_index.extend(range(doc["indices"]["start"], doc["indices"]["stop"]))
        return super().consume_stream_datum(doc)

    def adapter_parameters(self) -> dict:
        params = super().adapter_parameters()
        if len(self.assets) == 1 and "slice" not in params:
            n = len(self.frame_index)
            # the file may hold frames no event names after the last one (a run that failed mid-exposure)
            params["slice"] = f":{n}" if self.frame_index == list(range(n)) else list(self.frame_index)
        return params

    def state(self) -> tuple:
        return (*compat.consolidator_state(self), list(self.frame_index))

    def restore(self, state) -> None:
        compat.restore_consolidator(self, state[:2])
        self.frame_index = list(state[2])


def _register_consolidator() -> None:
    """Use :class:`IndexedHDF5Consolidator` for HDF5 resources (the registry is the library's extension point)."""
    _consolidators.CONSOLIDATOR_REGISTRY["application/x-hdf5"] = IndexedHDF5Consolidator


class _RetrySafeRouter(RunRouter):
    """A RunRouter to which a document whose write failed can be routed again."""

    def start(self, start_doc):
        try:
            with warnings.catch_warnings():  # event-model warns about a factory forwarding 'start'; not ours
                warnings.filterwarnings("ignore", message="The callback .* raised", category=UserWarning)
                super().start(start_doc)
        except Exception:  # forget the half-opened run: routed again, it starts afresh
            compat.forget_routed_run(self, start_doc["uid"])
            raise

    def descriptor(self, descriptor_doc):
        callbacks = compat.routed_descriptor_callbacks(self, descriptor_doc["uid"])
        if callbacks is not None:  # routed before: its callbacks are listed already
            for callback in callbacks:
                callback("descriptor", descriptor_doc)
            return
        super().descriptor(descriptor_doc)


class _RetrySafeNormalizer(RunNormalizer):
    """RunNormalizer that hands an event's row and all its frames to the run writer even when a write fails.

    The stock normaliser converts an event's datums to StreamDatums after the event's row is written, so a
    failed row write (the catalog lost) would skip them, and such an event is not delivered again (its
    row stays buffered in the run writer; ``storage.background``). Here every write of the event is
    tried and the first error is raised after them; the run writer keeps a frame it could not register
    (``_RetrySafeRunWriter``). An event page: every event.
    """

    _errors = None  # while an event is converted: the errors of its writes, raised after them

    def event(self, doc):
        self._errors = []
        try:
            super().event(doc)
        finally:
            errors, self._errors = self._errors, None
        if errors:
            raise errors[0]

    def event_page(self, doc):
        errors = []
        for event in unpack_event_page(doc):
            try:
                self.event(event)
            except Exception as exc:  # noqa: BLE001 - the page's other events are buffered too; raised below
                errors.append(exc)
        if errors:
            raise errors[0]

    def emit(self, name, doc):
        if self._errors is None:
            return super().emit(name, doc)
        try:
            super().emit(name, doc)
        except Exception as exc:  # noqa: BLE001 - raised by event() after the event's other writes
            self._errors.append(exc)


class _RetrySafeRunWriter(compat.run_writer_base()):
    """A run writer whose ``stop`` can be retried after a failure without counting frames twice, and
    that registers streamed frames at most once a second per field.

    A fly scan's primary stream is StreamDatum documents only, for four fields at every line (a few per
    second). The stock writer sends each to the server as it comes (a request for the data source's id
    and one to update it), so the catalog could fall behind the map. Here the consolidators take every
    StreamDatum at once (in memory) and the server gets one update per field with the union of the new
    rows, at the first document after ``update_interval_s`` (or five times the last update's duration,
    if longer) and always before the stop document is written. A failed update is retried with the next
    document (the fields stay marked until the server has them); nothing is consumed twice, because the
    update is sent before the next document is taken in.

    Every StreamDatum taken is registered once, whatever the catalog does: one whose node the server
    could not create (the first of a field) waits, not consumed, and one whose update failed stays
    marked; both are tried again before the next document (a step scan's, whose frames keep in step
    with their rows) or at the next update (a fly scan's), and before the stop document, which fails
    while they cannot be sent. A lost catalog is then raised as :class:`KeptByWriter`, so that the
    document is not delivered again (it would be consumed twice).
    """

    _append_with_retry = append_with_retry  # a batch stored by a request whose answer was lost: not appended again
    update_interval_s = 1.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._unsent: dict[int, list] = {}  # id(node) -> [node, consolidator, [Patch, ...]]
        self._last_update = 0.0
        self._interval = self.update_interval_s
        self._send_at_once = False
        self._data_source_ids: dict[str, int] = {}
        self._streamed: dict[str, bool] = {}  # descriptor uid -> all its fields are StreamDatum
        self._pending: list[dict] = []  # StreamDatums not consumed yet: their node is not created
        self._behind = False  # a step scan's frames wait for the server: sent with the next document

    def __call__(self, name, doc, *args, **kwargs):
        due = self._behind or time.monotonic() - self._last_update >= self._interval
        if name != "stop" and (self._pending or self._unsent and due):
            try:
                self._take_in()
                self._send_unsent()
            except Exception:  # noqa: BLE001 - kept: tried again later, and the stop sends them or fails
                self._last_update = time.monotonic()
        return super().__call__(name, doc, *args, **kwargs)

    def descriptor(self, doc):
        super().descriptor(doc)
        self._streamed[doc["uid"]] = streamed_only(doc)

    def _deferred(self, doc) -> bool:
        """Whether a StreamDatum's registration waits for the next update: in a stream of StreamDatum only
        (a fly scan's). A stream of events (a step scan's frames come as datums) keeps its frames in step
        with its table rows, so that a writer killed mid-run leaves records that agree; with
        ``batch_size`` 1 everything is written at once."""
        return self._batch_size > 1 and self._streamed.get(doc["descriptor"], False)

    def stream_datum(self, doc):
        if not self._deferred(doc):
            return super().stream_datum(doc)
        # taken in at once (the stock writer held each file's first StreamDatum until the stop document,
        # so a fly scan's frames were all registered at its end); the server hears of them at the next
        # update
        self._write_external_data(doc)

    def _write_external_data(self, doc):
        deferred = self._deferred(doc)
        self._pending.append(doc)
        self._behind = self._behind or not deferred
        try:
            self._take_in()
            if not deferred or self._send_at_once:
                self._send_unsent()
        except Exception as exc:
            if unreachable(exc):  # kept here (waiting or marked): the document must not come again
                raise KeptByWriter(f"frames of {doc['stream_resource']!r} kept until the catalog answers") from exc
            raise

    def _take_in(self) -> None:
        """Consume the waiting StreamDatums in order (the first of a field creates its node, which may fail)."""
        while self._pending:
            node, consolidator, patch = self._update_consolidator(self._pending[0])
            del self._pending[0]
            self._unsent.setdefault(id(node), [node, consolidator, []])[2].append(patch)

    def _send_unsent(self) -> None:
        t0 = time.monotonic()
        for key, (node, consolidator, patches) in list(self._unsent.items()):
            known = [p for p in patches if p is not None]
            patch = Patch.combine_patches(known) if known and len(known) == len(patches) else None
            self._update_data_source_for_node(node, consolidator.get_data_source(), patch)
            del self._unsent[key]
        self._last_update = time.monotonic()
        self._behind = False
        # an update lists every file of the field so far: on a long map or a slow server it grows, and the
        # writer then spends at most a fifth of its time on updates
        self._interval = max(self.update_interval_s, 5.0 * (self._last_update - t0))

    def _update_data_source_for_node(self, node, data_source, patch=None):
        """The stock update, the data source's id asked once per node (it does not change) instead of at
        every update."""
        uri = node.uri
        if uri not in self._data_source_ids:
            self._data_source_ids[uri] = node.data_sources()[0].id
        data_source.id = self._data_source_ids[uri]
        if Version(node.context.server_info.library_version) < Version("0.2.4"):  # no "properties" before
            data_source = {k: v for k, v in asdict(data_source).items() if k != "properties"}
        params = ({"patch_shape": ",".join(map(str, patch.shape)), "patch_offset": ",".join(map(str, patch.offset))}
                  if patch else None)
        for attempt in retry_context():
            with attempt:
                handle_error(node.context.http_client.put(uri.replace("/metadata/", "/data_source/", 1),
                                                          content=safe_json_dump({"data_source": data_source}),
                                                          params=params))

    def stop(self, doc):
        self._take_in()  # the frames streamed or kept so far; then the stop's own flush goes out at once
        self._send_unsent()
        self._send_at_once = True
        try:
            self._retry_safe_stop(doc)
        finally:
            self._send_at_once = False

    def _retry_safe_stop(self, doc):
        consolidators = {id(c): c for c in self._consolidators.values()}
        saved = {key: c.state() for key, c in consolidators.items() if hasattr(c, "state")}
        try:
            super().stop(doc)
        except Exception:
            for key, c in {id(c): c for c in self._consolidators.values()}.items():
                if key in saved:
                    c.restore(saved[key])
                elif hasattr(c, "restore"):  # created during this stop: back to empty
                    c.restore((0, {}, []))
            raise


class CatalogWriter(TiledWriter):
    """``TiledWriter`` for braggscope's catalogs (see the module docstring).

    Parameters
    ----------
    client : tiled client
    batch_size : int
        Events buffered before a write.
    """

    def __init__(self, client, *, batch_size: int = 50):
        _register_consolidator()
        super().__init__(client, normalizer=_RetrySafeNormalizer, batch_size=int(batch_size),
                         patches={"start": _with_writer, "resource": _one_frame_per_point})
        self._run_router = _RetrySafeRouter([self._factory])

    def _factory(self, name, doc):
        run_writer = _RetrySafeRunWriter(self.client, batch_size=self._batch_size,
                                         max_array_size=self._max_array_size, validate=self._validate,
                                         ignore_errors=self.ignore_errors)
        normalizer = self._normalizer(patches=self.patches, spec_to_mimetype=self.spec_to_mimetype)
        normalizer.subscribe(run_writer)
        return [normalizer], []
