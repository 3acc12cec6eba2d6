"""Abort or stop a RunEngine paused in the middle of a point without failing the run.

An immediate pause (``RE.request_pause(defer=False)``, the queue server's
``re_pause immediate``, Ctrl-C twice) cancels the plan wherever it waits. When
that is between the ``create`` and the ``save`` of an event (the detector
being triggered or read, a baseline reading), bluesky (1.15) leaves the event
bundle open. A *resume* closes it (it rewinds to the last checkpoint), but
``abort`` and ``stop`` throw into the plan straight away, and then either:

- the exception reaches the plan at its ``create`` or ``save``, and the
  plan does not drop the bundle: its clean-up reads the baseline at the end
  of the run, that ``create`` meets the open bundle, and the run ends
  ``fail`` with "A second 'create' message is not allowed ..." instead of
  ``abort``; or
- it reaches the plan inside ``trigger_and_read``'s reads (a pause during a
  baseline reading or a point's ``read``), and the plan drops the bundle
  itself. When a resume came in between, its rewind has closed the bundle
  already (the pause then landed in the messages replayed before the
  ``create``), so that ``drop`` fails the run: "A 'create' message must be
  sent ... before that bundle can be dropped".

:func:`drop_interrupted_bundle` marks the run's bundlers at an abort or stop of
a paused run. For the rest of that run, a ``create`` that meets an open bundle
drops it first, as the plan would with ``Msg('drop')`` (the interrupted point
emits no event, as on a resume), and a ``drop`` with no open bundle does
nothing.
"""

from __future__ import annotations

import weakref

from bluesky.utils import Msg

from braggscope.core import compat

__all__ = ["drop_interrupted_bundle"]

_INTERRUPTED = weakref.WeakSet()  # the run bundlers of a paused run that is aborted or stopped


def drop_interrupted_bundle(RE) -> None:
    """Make ``RE.abort()`` and ``RE.stop()`` of a paused run end it cleanly when the pause left an event
    bundle open.

    Idempotent. The wrapped coroutines run on the RunEngine's loop, where the
    bundle state lives.

    Parameters
    ----------
    RE : bluesky.RunEngine
    """
    if not compat.install_once(RE, "drop_interrupted_bundle"):
        return
    compat.wrap_interruptions(RE, lambda original: _marking(RE, original))
    compat.wrap_command(RE, "create", lambda original: _dropping_create(RE, original))
    compat.wrap_command(RE, "drop", lambda original: _tolerant_drop(RE, original))


def _marking(RE, original):
    async def interrupt(*args, **kwargs):
        if RE.state == "paused":
            _INTERRUPTED.update(compat.run_bundlers(RE).values())
        return await original(*args, **kwargs)

    return interrupt


def _dropping_create(RE, original):
    async def create(msg):
        bundler = compat.run_bundlers(RE).get(msg.run)
        if bundler is not None and bundler in _INTERRUPTED and bundler.bundling:
            await bundler.drop(Msg("drop"))  # left open by the interruption: the plan did not drop it
        return await original(msg)

    return create


def _tolerant_drop(RE, original):
    async def drop(msg):
        bundler = compat.run_bundlers(RE).get(msg.run)
        if bundler is not None and bundler in _INTERRUPTED and not bundler.bundling:
            return None  # the bundle the plan drops on its way out is closed already
        return await original(msg)

    return drop
