"""Abort or stop a RunEngine paused in the middle of a point without failing the run.

An immediate pause (``RE.request_pause(defer=False)``, the queue server's
``re_pause immediate``, Ctrl-C twice) cancels the plan wherever it waits. When
that is between the ``create`` and the ``save`` of an event (the detector
being triggered or read), bluesky (1.15) leaves the event bundle open. A
*resume* closes it (it rewinds to the last checkpoint), but ``abort`` and
``stop`` throw into the plan straight away: the plan's clean-up then reads the
baseline at the end of the run, its ``create`` meets the open bundle, and the
run ends ``fail`` with "A second 'create' message is not allowed ..." instead
of ``abort``. :func:`drop_interrupted_bundle` drops the open bundle first, as
the plan itself would with ``Msg('drop')``: the interrupted point emits no
event, as on a resume.
"""

from __future__ import annotations

from bluesky.utils import Msg

__all__ = ["drop_interrupted_bundle"]


def drop_interrupted_bundle(RE) -> None:
    """Make ``RE.abort()`` and ``RE.stop()`` of a paused run drop an event bundle left open by the pause.

    Idempotent. The wrapped coroutines run on the RunEngine's loop, where the
    bundle state lives.

    Parameters
    ----------
    RE : bluesky.RunEngine
    """
    if getattr(RE, "_braggscope_drops_bundle", False):
        return
    for name in ("_abort_coro", "_stop_coro"):
        setattr(RE, name, _dropping(RE, getattr(RE, name)))
    RE._braggscope_drops_bundle = True


def _dropping(RE, original):
    async def interrupt(*args, **kwargs):
        if RE.state == "paused":
            for bundler in list(RE._run_bundlers.values()):
                if bundler.bundling:
                    await bundler.drop(Msg("drop"))
        return await original(*args, **kwargs)

    return interrupt
