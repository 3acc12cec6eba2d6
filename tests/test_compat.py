"""The upstream behaviour each function of ``braggscope.core.compat`` relies on.

One test per reach into a library's private names: when an upgrade changes one, its test fails here
naming it. A few tests also pin the upstream defect a workaround exists for, so that its fix is noticed
and the workaround can go.
"""

from __future__ import annotations

import inspect

import pytest
from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import RunEngineInterrupted

from braggscope.core import compat
from braggscope.storage.writer import keep_abort_reason


def _paused_run(RE, docs):
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    with pytest.raises(RunEngineInterrupted):
        RE(bpp.run_wrapper(bps.pause()))
    assert RE.state == "paused"


def _stop(docs):
    return next(doc for name, doc in docs if name == "stop")


def test_bluesky_still_drops_the_abort_reason():
    """Upstream defect (DiamondLightSource/blueapi#1306): without the workaround the reason is lost.
    When this fails, bluesky records the reason itself and keep_abort_reason can go."""
    RE, docs = RunEngine(), []
    _paused_run(RE, docs)
    RE.abort("sample moved")
    assert _stop(docs)["exit_status"] == "abort" and _stop(docs)["reason"] == ""


def test_wrapped_close_run_records_the_abort_reason():
    RE, docs = RunEngine(), []
    keep_abort_reason(RE)
    keep_abort_reason(RE)  # once only
    _paused_run(RE, docs)
    assert compat.abort_reason(RE) == ""
    RE.abort("sample moved")
    assert compat.abort_reason(RE) == "sample moved"
    assert _stop(docs)["reason"] == "sample moved"


def test_install_once_is_per_runengine():
    first, second = RunEngine(), RunEngine()
    assert compat.install_once(first, "x") and not compat.install_once(first, "x")
    assert compat.install_once(second, "x")


def test_command_registry_and_interruption_coroutines():
    RE = RunEngine()
    seen = []

    def wrap(original):
        async def create(msg):
            seen.append(msg.command)
            return await original(msg)
        return create

    compat.wrap_command(RE, "create", wrap)
    RE(bpp.run_wrapper(bps.trigger_and_read([])))
    assert seen == ["create"]
    for name in ("_abort_coro", "_stop_coro"):  # what wrap_interruptions replaces
        assert inspect.iscoroutinefunction(getattr(RE, name)), name


def test_run_bundlers_of_an_open_run():
    RE, docs = RunEngine(), []
    _paused_run(RE, docs)
    bundlers = compat.run_bundlers(RE)
    assert isinstance(bundlers, dict) and len(bundlers) == 1
    (bundler,) = bundlers.values()
    assert bundler.bundling is False  # the attribute interrupted_bundle reads
    RE.abort("done")
    assert compat.run_bundlers(RE) == {}


def test_during_task_of_an_existing_runengine():
    from bluesky.utils import DefaultDuringTask

    task = DefaultDuringTask()
    RE = RunEngine(during_task=task)
    assert compat.during_task(RE) is task
    other = DefaultDuringTask()
    compat.set_during_task(RE, other)
    assert compat.during_task(RE) is other
    RE(bps.null())  # the RunEngine still runs with it


def test_ophyd_file_plugins_keep_asset_documents_until_collected():
    from ophyd.areadetector.filestore_mixins import FileStoreBase

    assert "self._asset_docs_cache" in inspect.getsource(FileStoreBase)
    assert "self._asset_docs_cache" in inspect.getsource(FileStoreBase.collect_asset_docs)


def test_pyepics_and_ophyd_keep_the_channel_access_state_where_reset_looks():
    import epics.ca
    import epics.pv
    from ophyd import _pyepics_shim

    assert isinstance(epics.pv._PVcache_, dict)
    assert hasattr(_pyepics_shim, "_dispatcher") and callable(epics.ca.clear_cache)
    assert hasattr(epics.ca, "initial_context") and callable(epics.ca.current_context)


def test_caproto_channel_data_takes_an_initial_value_and_length():
    from caproto.server import PVGroup, pvproperty

    class Group(PVGroup):
        scalar = pvproperty(value=1.0, name="scalar")
        array = pvproperty(value=[0] * 4, name="array", max_length=4)

    group = Group(prefix="COMPAT:")
    compat.set_initial_value(group.scalar, 2.5)
    compat.set_max_length(group.array, 16)
    assert group.scalar.value == 2.5 and group.array.max_length == 16
    assert compat.max_udp_datagram() > 1000


def test_matplotlib_lists_its_figure_managers():
    assert isinstance(compat.figure_managers(), list)


def test_run_router_tables_a_retried_start_relies_on():
    from event_model import RunRouter, compose_run

    routed = []

    def factory(name, doc):
        return [lambda n, d: routed.append(n)], []

    router = RunRouter([factory])
    run = compose_run()
    router("start", run.start_doc)
    descriptor = run.compose_descriptor(name="primary", data_keys={"x": {"source": "x", "dtype": "number",
                                                                          "shape": []}}).descriptor_doc
    assert compat.routed_descriptor_callbacks(router, descriptor["uid"]) is None
    router("descriptor", descriptor)
    assert len(compat.routed_descriptor_callbacks(router, descriptor["uid"])) == 1
    compat.forget_routed_run(router, run.start_doc["uid"])
    router("start", run.start_doc)  # routed again without "the same 'start' document twice"
    assert routed.count("start") == 2


def test_consolidator_state_rolls_back():
    from bluesky_tiled_plugins.writing.consolidators import HDF5Consolidator
    from event_model import compose_run

    run = compose_run()
    descriptor = run.compose_descriptor(name="primary", data_keys={
        "img": {"source": "x", "dtype": "array", "shape": [1, 4, 4], "external": "STREAM:"}})
    resource = run.compose_stream_resource(mimetype="application/x-hdf5", uri="file://localhost/tmp/x.h5",
                                           data_key="img", parameters={"dataset": "/d", "chunk_shape": [1, 4, 4]})
    consolidator = HDF5Consolidator(resource.stream_resource_doc, descriptor.descriptor_doc)
    before = compat.consolidator_state(consolidator)
    consolidator.consume_stream_datum(resource.compose_stream_datum(indices={"start": 0, "stop": 2}))
    assert compat.consolidator_state(consolidator)[0] == 2
    compat.restore_consolidator(consolidator, before)
    assert compat.consolidator_state(consolidator)[0] == 0


def test_run_writer_has_what_the_catalog_writer_overrides():
    base = compat.run_writer_base()
    for method in ("_update_consolidator", "_write_external_data", "_append_with_retry",
                   "_update_data_source_for_node", "stop", "stream_datum", "descriptor"):
        assert callable(getattr(base, method, None)), method
    source = inspect.getsource(base.__init__)
    for attribute in ("_consolidators", "_batch_size", "_max_array_size", "_validate"):
        assert f"self.{attribute}" in source, attribute
    update = inspect.signature(base._update_data_source_for_node)
    assert list(update.parameters)[:3] == ["self", "node", "data_source"]


def test_tiled_reads_its_retry_time_out_where_limit_looks(monkeypatch):
    from tiled.client import utils

    monkeypatch.delenv("TILED_RETRY_TIMEOUT", raising=False)
    monkeypatch.setattr(utils, "TILED_RETRY_TIMEOUT", utils.TILED_RETRY_TIMEOUT)
    compat.limit_tiled_retries(3.0)
    assert utils.TILED_RETRY_TIMEOUT == 3.0
    assert "TILED_RETRY_TIMEOUT" in inspect.getsource(utils.retry_context)  # read at each request
    assert "TILED_RETRY_ATTEMPTS" in inspect.getsource(utils.retry_context)
    monkeypatch.setattr(utils, "TILED_RETRY_ATTEMPTS", utils.TILED_RETRY_ATTEMPTS)
    monkeypatch.setenv("TILED_RETRY_TIMEOUT", "7")  # set after tiled's import: read again
    monkeypatch.setenv("TILED_RETRY_ATTEMPTS", "99")
    compat.limit_tiled_retries(1.0)
    assert utils.TILED_RETRY_TIMEOUT == 7.0 and utils.TILED_RETRY_ATTEMPTS == 99  # the user's setting wins


def test_argparse_lists_every_argument_where_parser_actions_looks():
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--level", choices=("a", "b"))
    parser.add_mutually_exclusive_group().add_argument("--either")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run").add_argument("--fast", action="store_true")
    actions = compat.parser_actions(parser)
    assert {o for a in actions for o in a.option_strings} == {"-h", "--help", "--level", "--either"}
    subparsers = next(a for a in actions if isinstance(a.choices, dict))
    assert "--fast" in {o for a in compat.parser_actions(subparsers.choices["run"]) for o in a.option_strings}


def test_the_queue_manager_validates_every_plan_item_where_check_queue_plans_looks(monkeypatch):
    from bluesky_queueserver.manager import manager

    monkeypatch.setattr(manager, "validate_plan", manager.validate_plan)
    assert "validate_plan(item, allowed_plans=allowed_plans, allowed_devices=allowed_devices)" in \
        inspect.getsource(manager.RunEngineManager._prepare_item)
    allowed = {"count": {"name": "count", "parameters": [{"name": "detectors", "kind": {"name": "POSITIONAL_OR_KEYWORD",
                                                                                      "value": 1}},
                                                        {"name": "num", "kind": {"name": "POSITIONAL_OR_KEYWORD",
                                                                                "value": 1}}]}}
    item = {"item_type": "plan", "name": "count", "args": [["det"]], "kwargs": {"num": float("nan")}}
    assert manager.validate_plan(item, allowed_plans=allowed, allowed_devices={"det": {}})[0]  # upstream lets NaN in
    compat.check_queue_plans(lambda item, plans: "num must be finite, got nan")
    compat.check_queue_plans(lambda item, plans: "num must be finite, got nan")  # twice: wrapped once
    assert manager.validate_plan(item, allowed_plans=allowed, allowed_devices={"det": {}}) == \
        (False, "num must be finite, got nan")
    assert manager.validate_plan.__wrapped__.__module__ == "bluesky_queueserver.manager.profile_ops"


def test_the_queue_manager_asks_its_worker_with_the_timeout_worker_request_timeout_sets(monkeypatch):
    from bluesky_queueserver.manager import manager

    monkeypatch.setattr(manager.RunEngineManager, "__init__", manager.RunEngineManager.__init__)
    source = inspect.getsource(manager.RunEngineManager)
    assert "self._comm_to_worker_timeout = 0.5" in inspect.getsource(manager.RunEngineManager.__init__)
    # the worker's pipe takes it as the time-out of every regular request (the plan report among them)
    assert "timeout=self._comm_to_worker_timeout," in source
    assert 'send_msg("request_plan_report")' in source
    compat.worker_request_timeout(5.0)
    compat.worker_request_timeout(5.0)  # twice: wrapped once
    assert manager.RunEngineManager.__init__.__wrapped__.__qualname__ == "RunEngineManager.__init__"

    class Probe:  # the wrapped __init__ sets the attribute after upstream's
        _comm_to_worker_timeout = None

    def upstream(self, *args, **kwargs):
        self._comm_to_worker_timeout = 0.5

    monkeypatch.setattr(manager.RunEngineManager.__init__, "__wrapped__", upstream)
    compat.worker_request_timeout(5.0)
    probe = Probe()
    manager.RunEngineManager.__init__(probe)
    assert probe._comm_to_worker_timeout == 5.0
