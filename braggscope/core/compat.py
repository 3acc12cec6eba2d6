"""Every use of an upstream library's private names, in one place.

braggscope reaches into bluesky, ophyd, pyepics, caproto, matplotlib, tiled, bluesky-tiled-plugins and
bluesky-queueserver where they offer no public hook for what it needs. Each reach is a function here, with the upstream
issue or release that would let it go; ``tests/test_compat.py`` checks the upstream behaviour each one
relies on, so an upgrade that breaks one fails there, naming it, rather than somewhere in a scan.

Pinned versions (pyproject.toml): bluesky 1.15.1, ophyd 1.11.2, pyepics 3.5.10, caproto 1.3.0,
bluesky-tiled-plugins 2.0.12. ``storage.catalog_writer`` also overrides private methods of the run
writer it subclasses (``_update_consolidator``, ``_write_external_data``, ``_append_with_retry``,
``_update_data_source_for_node``) and reads its ``_consolidators``, ``_batch_size``,
``_max_array_size`` and ``_validate``: the compat tests check those names too.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

__all__ = ["run_writer_base", "abort_reason", "consolidator_state", "during_task", "forget_routed_run",
           "install_once", "run_bundlers", "pending_asset_docs", "reset_channel_access", "restore_consolidator",
           "routed_descriptor_callbacks", "set_during_task", "wrap_command", "wrap_interruptions",
           "set_initial_value", "set_max_length", "max_udp_datagram", "figure_managers", "limit_tiled_retries",
           "parser_actions", "check_queue_plans", "worker_request_timeout"]

# -- bluesky RunEngine ------------------------------------------------------------------------------

_INSTALLED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def install_once(RE, key: str) -> bool:
    """True the first time ``key`` is installed on ``RE`` (our own bookkeeping, kept off the RunEngine)."""
    done = _INSTALLED.setdefault(RE, set())
    if key in done:
        return False
    done.add(key)
    return True


def wrap_command(RE, name: str, wrap: Callable) -> None:
    """Register ``wrap(original)`` as the RunEngine's handler of message ``name``.

    bluesky has ``register_command`` but no public way to read the handler it replaces
    (``RunEngine._command_registry``).
    """
    RE.register_command(name, wrap(RE._command_registry[name]))


def wrap_interruptions(RE, wrap: Callable) -> None:
    """Wrap the coroutines ``RE.abort()`` and ``RE.stop()`` schedule (``_abort_coro``, ``_stop_coro``).

    Used to act on a paused run's state before bluesky throws the abort or stop into the plan;
    no public hook exists for it in bluesky 1.15.
    """
    for name in ("_abort_coro", "_stop_coro"):
        setattr(RE, name, wrap(getattr(RE, name)))


def abort_reason(RE) -> str:
    """The reason given to ``RE.abort(reason)`` (``RunEngine._reason``).

    bluesky's ``run_wrapper`` closes an aborted run without it, so the stop document said
    ``reason: ''`` (the same defect reported upstream as DiamondLightSource/blueapi#1306).
    """
    return getattr(RE, "_reason", "") or ""


def run_bundlers(RE) -> dict:
    """The RunEngine's event bundlers of its open runs, by run key (``RunEngine._run_bundlers``)."""
    return RE._run_bundlers


def during_task(RE):
    """The RunEngine's during-task (``RunEngine._during_task``)."""
    return getattr(RE, "_during_task", None)


def set_during_task(RE, task) -> None:
    """Replace the during-task of an existing RunEngine; bluesky takes one only at construction."""
    RE._during_task = task


# -- ophyd and pyepics ------------------------------------------------------------------------------

def pending_asset_docs(plugin):
    """The resource and datum documents an ophyd file plugin holds until ``collect_asset_docs``
    (``FileStoreBase._asset_docs_cache``, a deque of ``(name, doc)``), for amending a datum before it
    is sent."""
    return plugin._asset_docs_cache


def reset_channel_access() -> None:
    """A fresh pyepics Channel Access context read from the environment, and ophyd's dispatcher on it.

    pyepics keeps its PV cache (``epics.pv._PVcache_``) and ophyd its dispatcher
    (``ophyd._pyepics_shim._dispatcher``) as module globals, and ophyd's PV class does not take
    the ``clear_callbacks`` arguments pyepics' ``clear_cache`` passes, so the cached PVs are emptied
    here first. Each cached channel is detached, so that a finalizer of an old device never clears
    its id in the new context ("Unexpected channel ID").
    """
    # pyepics and ophyd belong to the beamline: imported only by a process that talks Channel Access
    import epics.ca
    import epics.pv
    import ophyd
    from ophyd import _pyepics_shim

    dispatcher = _pyepics_shim._dispatcher
    if dispatcher is not None and dispatcher.is_alive():
        dispatcher.stop()
    _pyepics_shim._dispatcher = None
    for pv in list(epics.pv._PVcache_.values()):
        try:
            pv.clear_callbacks()
            pv.clear_auto_monitor()
        except Exception:  # noqa: BLE001 - a channel of the dead context
            pass
        pv.chid = None
    epics.pv._PVcache_.clear()
    epics.ca.clear_cache()  # detach from the old context and create a new one from the environment
    epics.ca.initial_context = epics.ca.current_context()
    ophyd.set_cl("pyepics")


# -- caproto ---------------------------------------------------------------------------------------

def set_initial_value(channel, value) -> None:
    """Give an IOC's pvproperty a value from the group's constructor, before the server runs.

    caproto's public ``write`` is a coroutine (for the server's loop); a per-instance initial value,
    known only when the group is built, is set on ``ChannelData._data``.
    """
    channel._data["value"] = value


def set_max_length(channel, n: int) -> None:
    """An array pvproperty's element count, known only when the group is built (``ChannelData._max_length``)."""
    channel._max_length = int(n)


def max_udp_datagram() -> int:
    """The largest UDP datagram caproto reads (``caproto._constants.MAX_UDP_RECV``)."""
    # caproto is only needed by the simulator and the CA repeater: imported when they ask
    from caproto._constants import MAX_UDP_RECV

    return MAX_UDP_RECV


# -- matplotlib -------------------------------------------------------------------------------------

def figure_managers() -> list:
    """The open pyplot windows' managers (``matplotlib._pylab_helpers.Gcf``), to pump their events."""
    # matplotlib's pyplot state: imported only by a session that shows windows
    from matplotlib._pylab_helpers import Gcf

    return Gcf.get_all_fig_managers()


# -- tiled ------------------------------------------------------------------------------------------

def limit_tiled_retries(timeout_s: float) -> None:
    """Make the Tiled client give up a request after ``timeout_s`` of retries (its default is 45 s).

    Tiled reads ``TILED_RETRY_TIMEOUT`` and ``TILED_RETRY_ATTEMPTS`` from the environment once, at
    import, into ``tiled.client.utils``. A value set in the environment wins, read again here: a
    process that imported tiled before the variable was set (a test, a notebook) still gets it.
    """
    from tiled.client import utils

    utils.TILED_RETRY_TIMEOUT = float(os.environ.get("TILED_RETRY_TIMEOUT", timeout_s))
    if "TILED_RETRY_ATTEMPTS" in os.environ:
        utils.TILED_RETRY_ATTEMPTS = int(os.environ["TILED_RETRY_ATTEMPTS"])


# -- argparse -------------------------------------------------------------------------------------

def parser_actions(parser) -> list:
    """Every argument of an ``argparse`` parser, its groups' included (``ArgumentParser._actions``).

    argparse has no public walk of a parser's arguments (none up to Python 3.13); the completion
    script of ``braggscope completion`` is made from it. A sub-parsers action's ``choices`` is the
    dict of its parsers.
    """
    return list(parser._actions)


# -- bluesky-queueserver ----------------------------------------------------------------------------

def check_queue_plans(check: Callable) -> None:
    """Refuse a queue item that passed the RE Manager's own validation when ``check(item, allowed_plans)``
    returns a reason (a one-line string; None lets it in).

    The manager validates every plan it is given (``item_add``, ``item_add_batch``, ``item_update``,
    ``item_execute``, over 0MQ and so through the HTTP server) with ``validate_plan``, imported into
    ``bluesky_queueserver.manager.manager``; it offers no hook for a check of its own (0.0.25), and
    its parameter types let NaN and infinities through. Call before ``start_manager()`` in the
    process that starts the manager (the manager process is forked from it).
    """
    from bluesky_queueserver.manager import manager

    original = getattr(manager.validate_plan, "__wrapped__", manager.validate_plan)

    def validate_plan(item, *, allowed_plans, allowed_devices):
        ok, msg = original(item, allowed_plans=allowed_plans, allowed_devices=allowed_devices)
        reason = check(item, allowed_plans) if ok else None
        return (False, reason) if reason else (ok, msg)

    validate_plan.__wrapped__ = original
    manager.validate_plan = validate_plan


def worker_request_timeout(seconds: float) -> None:
    """Give the RE Manager's regular requests to its worker ``seconds`` to be answered (upstream: 0.5 s).

    The manager asks its worker for the plan's report with a 0.5 s time-out (0.0.25,
    ``RunEngineManager._comm_to_worker_timeout``, not configurable); on a loaded host (the worker's
    process busy with a scan, two cores shared with a simulator) the answer comes later, and the manager
    then marks a plan that ended well ``failed`` ("Failed to download plan report: Timeout") and stops
    the queue. Call before ``start_manager()`` in the process that starts the manager.
    """
    from bluesky_queueserver.manager import manager

    init = getattr(manager.RunEngineManager.__init__, "__wrapped__", manager.RunEngineManager.__init__)

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._comm_to_worker_timeout = max(float(seconds), self._comm_to_worker_timeout)

    __init__.__wrapped__ = init
    manager.RunEngineManager.__init__ = __init__


# -- bluesky-tiled-plugins and event-model ----------------------------------------------------------

def run_writer_base() -> type:
    """The TiledWriter's per-run writer class (``tiled_writer._RunWriter``), subclassed by
    ``storage.catalog_writer`` to make a failed write retryable: bluesky-tiled-plugins takes a
    pluggable normaliser (bluesky/bluesky#1916) but not a pluggable run writer."""
    # bluesky-tiled-plugins takes ~2 s to import: only a process that writes to the catalog pays for it
    from bluesky_tiled_plugins.writing.tiled_writer import _RunWriter

    return _RunWriter


def forget_routed_run(router, uid: str) -> None:
    """Drop a run whose ``start`` failed from an event-model RunRouter's tables, so it can be routed again."""
    for table in (router._start_to_start_doc, router._fillers, router._factory_cbs_by_start, router._subfactories):
        table.pop(uid, None)


def routed_descriptor_callbacks(router, uid: str):
    """The callbacks a RunRouter gave descriptor ``uid``, or None if it was never routed."""
    if uid not in router._descriptor_to_start:
        return None
    return router._factory_cbs_by_descriptor[uid]


def consolidator_state(consolidator) -> tuple:
    """What a consolidator has counted (rows, sequence numbers), to roll a failed write back."""
    return consolidator._num_rows, dict(consolidator._seqnums_to_indices_map)


def restore_consolidator(consolidator, state: tuple) -> None:
    """Set back what :func:`consolidator_state` returned."""
    consolidator._num_rows, consolidator._seqnums_to_indices_map = state[0], dict(state[1])
