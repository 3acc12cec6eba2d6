"""Simulated Maxipix areaDetector IOC (caproto): ``cam1:``, ``HDF1:``, ``Stats1:``, ``image1:``, ``ROI1:``,
``ROIStat1:``.

Serves the subset of areaDetector PVs that ophyd's area-detector classes use
(setpoints with their ``_RBV`` readbacks), so ``braggscope.devices.Maxipix``
(``SingleTrigger`` + ``FileStoreHDF5IterativeWrite``) works unchanged against
this IOC or a real one. The plugins live in :mod:`.ad_cam`, :mod:`.ad_hdf5` and
:mod:`.ad_plugins`; the external-trigger (fly-scan) acquisition in :mod:`.ad_external`.

Internal trigger: on ``cam1:Acquire = 1`` the IOC takes ``NumImages`` frames: each is rendered
by a *renderer* ``(positions, exposure_s) -> uint32 (rows, cols)`` at the
current motor positions of the shared :class:`BeamlineState` (by default
``SimulatedBeamline.render``), appended to the open HDF5 file when
``HDF1:Capture`` is on (areaDetector layout: ``/entry/data/data``,
``(n, rows, cols)`` uint32, growing by one frame per image, SWMR mode and
flushed after every frame so live readers can follow; beside it, as the
areaDetector HDF5 plugin stores its NDAttributes,
``/entry/instrument/NDAttributes/NDArrayUniqueId`` (n,) int32: the unique id
of each frame, i.e. ``cam1:ArrayCounter_RBV`` after it was taken, also served
as ``HDF1:UniqueId_RBV`` and ``Stats1:UniqueId_RBV``), summarised in
``Stats1:`` (total, centroid, max) and served as ``image1:ArrayData`` (LONG). ``Acquire_RBV`` returns to 0
only once the frames are on disk. The ROI plugin ``ROI1:`` feeds the ROIStat plugin ``ROIStat1:``, whose
region ``ROIStat1:1:Total_RBV`` is the sum of each frame inside the window: the detector ROI counter of
alignment scans.

External trigger (``cam1:TriggerMode = External``, fly scans): one frame per pulse of the trigger unit,
rendered where the stage was during the exposure, written compressed (Blosc LZ4 + bit-shuffle) in row-block
chunks composed from pre-compressed background chunks (:mod:`.frame_chunks`) by a writer thread, flushed
every 50 ms and at the end of the line (:mod:`.ad_external`).
"""

from __future__ import annotations

import asyncio
import importlib
import time

import numpy as np
from caproto.server import PVGroup, SubGroup

from braggscope.core import compat

from .ad_cam import CamGroup
from .ad_external import ExternalAcquisition, as_uint32
from .ad_hdf5 import UNIQUE_ID_DATASET, HDF5Group
from .ad_plugins import ImageGroup, ROIGroup, ROIStatGroup, StatsGroup, roi_bounds
from .frame_chunks import ChunkPool, blosc_compressor, frame_stats, hdf5_filter
from .ioc_counter import exposure_flux
from .ioc_motors import post_if_changed

__all__ = ["MaxipixIOC", "UNIQUE_ID_DATASET", "frame_stats", "load_renderer", "make_renderer", "roi_bounds",
           "sparse_renderer"]


# ---------------------------------------------------------------------- renderers
def make_renderer(cfg, beamline=None):
    """The default renderer: ``SimulatedBeamline.from_config(cfg).render``.

    If the config has ``simulator.renderer = "module:function"``, that factory
    is called with ``cfg`` instead (see :func:`load_renderer`). ``beamline``:
    an existing ``SimulatedBeamline`` to render with (shared with the
    fluorescence detector, so both see one sample).
    """
    spec = cfg.get("simulator.renderer", "") or ""
    if spec:
        return load_renderer(spec)(cfg)
    if beamline is None:
        from braggscope.simulators.beamline import SimulatedBeamline

        beamline = SimulatedBeamline.from_config(cfg, seed=cfg.get("simulator.seed", None))
    return beamline.render


def load_renderer(spec: str):
    """Import a renderer factory given as ``"package.module:function"``."""
    if ":" not in spec:
        raise ValueError(f"simulator.renderer must be 'module:function', got {spec!r}")
    module, func = spec.split(":", 1)
    return getattr(importlib.import_module(module), func)


def sparse_renderer(renderer):
    """The sparse form of ``renderer`` when it is ``SimulatedBeamline.render`` of an SXDM sample, else None.

    Returns ``f(positions, exposure_s) -> SparseFrame`` (the background level and the signal
    pixels' counts, :meth:`.sxdm_forward.SXDMForwardModel.render_sparse`): the same frame as the
    renderer's, its background left to the detector's pre-drawn chunks.
    """
    from braggscope.simulators.beamline import REQUIRED_POSITIONS, SimulatedBeamline

    beamline = getattr(renderer, "__self__", None)
    if (not isinstance(beamline, SimulatedBeamline) or beamline.is_bcdi
            or getattr(renderer, "__func__", None) is not SimulatedBeamline.render):
        return None

    def render(positions, exposure_s):
        missing = [k for k in REQUIRED_POSITIONS if k not in positions]
        if missing:
            raise ValueError(f"positions is missing {missing} (needs {list(REQUIRED_POSITIONS)})")
        eta, delta = float(positions["eta"]), float(positions["delta"])
        nu, phi = float(positions.get("nu", 0.0)), float(positions.get("phi", 0.0))
        energy = float(positions.get("energy", beamline.energy_kev))
        xs, ys = beamline.beam_on_sample(float(positions["pix"]), float(positions["piy"]), eta)
        with beamline._lock:  # the forward model's buffer and noise generator
            return beamline.forward.render_sparse(xs, ys, eta, delta, nu, phi, energy, float(exposure_s))

    render.background = lambda exposure_s: beamline.forward.background_rate * float(exposure_s)
    return render


# ---------------------------------------------------------------------- detector
class MaxipixIOC(PVGroup):
    """The simulated Maxipix areaDetector.

    Parameters
    ----------
    prefix : str
        areaDetector prefix, e.g. ``"BSSIM:mpx1x4:"``.
    state : BeamlineState
        Shared motor positions (read at each frame).
    renderer : callable
        ``renderer(positions: dict, exposure_s: float) -> ndarray (rows, cols)``
        of non-negative integer counts.
    shape : tuple of int
        Frame shape ``(rows, cols)``.
    realtime : bool
        Wait out ``max(AcquireTime, AcquirePeriod)`` per frame, as a real
        detector does (default). False (``simulator.realtime = false``): a
        frame takes only the time to render and save it (AcquireTime still
        sets the counts), to measure the control-system overhead alone.
    beam : IncidentBeam, optional
        The flux the frames follow (:mod:`.beam`): each frame is rendered with its exposure
        scaled by the mean flux over it (none: the full flux always).
    """

    cam = SubGroup(CamGroup, prefix="cam1:")
    hdf = SubGroup(HDF5Group, prefix="HDF1:")
    stats = SubGroup(StatsGroup, prefix="Stats1:")
    image = SubGroup(ImageGroup, prefix="image1:")
    roi = SubGroup(ROIGroup, prefix="ROI1:")
    roistat = SubGroup(ROIStatGroup, prefix="ROIStat1:")

    def __init__(self, prefix, *, state, renderer, shape, realtime=True, beam=None, **kwargs):
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be (rows, cols) > 0, got {shape!r}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.state = state
        self.renderer = renderer
        self.realtime = bool(realtime)
        self.beam = beam
        self.busy = False
        self.abort = False
        self._task = None
        self._ext = None
        self.sparse = sparse_renderer(renderer)
        compressor = blosc_compressor()
        self.chunks = None if compressor is None else ChunkPool(self.shape, compressor, np.random.default_rng())
        super().__init__(prefix, **kwargs)
        compat.set_max_length(self.image.array_data, self.shape[0] * self.shape[1])  # CA element count

    def start_acquisition(self) -> None:
        self.busy, self.abort = True, False
        if self.cam.trigger_mode.value == "External":  # fly scans: frames on external pulses
            self._task = asyncio.get_running_loop().create_task(self._acquire_external())
            return
        self._task = asyncio.get_running_loop().create_task(self._acquire())

    def stop_acquisition(self) -> None:
        """``Acquire = 0``: stop after the current frame (internal) or take no more pulses (external)."""
        self.abort = True
        if self._ext is not None:
            self._ext.stop()

    # ------------------------------------------------------------------ external trigger (fly scans)
    def frame_layout(self) -> dict:
        """h5py ``create_dataset`` keywords of the frame dataset: in external-trigger mode (fly scans,
        hundreds of frames/s) row-block chunks compressed with Blosc LZ4 + bit-shuffle; one uncompressed
        chunk per frame otherwise."""
        rows, cols = self.shape
        if self.cam.trigger_mode.value != "External":
            return {"chunks": (1, rows, cols)}
        chunks = (1, rows, cols) if self.chunks is None else self.chunks.chunk_shape
        return {"chunks": chunks, **hdf5_filter()}

    def render_frame(self, positions, exposure_s, flux=1.0):
        """One external-trigger frame at the mean ``flux`` over its exposure, compressed in chunks (writer
        thread): composed from the background pool when the renderer has a sparse form (the background's
        flux rounded to 1 %, so that a decaying beam does not draw a new pool per frame), else rendered
        whole and split (or, without numcodecs, the whole uint32 frame)."""
        if self.chunks is None:
            frame = self._render(positions, exposure_s, flux)
            return _Whole(frame, frame_stats(frame))
        if self.sparse is None:
            return self.chunks.split(self._render(positions, exposure_s, flux))
        if flux <= 0:
            return self.chunks.compose(0.0, np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.uint32))
        background, flat, counts = self.sparse(positions, exposure_s * flux)
        if flux != 1.0:
            background = self.sparse.background(exposure_s * round(flux, 2))
        return self.chunks.compose(background, flat, counts)

    def frame_flux(self, t_start: float, exposure_s: float) -> float:
        """Mean flux over an exposure that started at ``t_start`` (monotonic clock, s); in real time,
        waits for the exposure to be over (writer thread) so that a change of the beam during it counts."""
        if self.beam is None:
            return 1.0
        end = t_start + exposure_s
        if self.realtime:
            time.sleep(max(0.0, end - time.monotonic()))  # the clock moves between a test and a subtraction
        return self.beam.mean_flux(t_start, end)

    def warm(self, exposure_s: float) -> None:
        """Draw and compress the background chunks of an exposure now rather than at its first frame."""
        if self.chunks is not None and self.sparse is not None:
            flux = 1.0 if self.beam is None else round(self.beam.flux(time.monotonic()), 2)
            self.chunks.pool(self.sparse.background(exposure_s * flux))

    def append_frames(self, frames, unique_ids) -> int:
        """Append external-trigger frames to the open file (writer thread, HDF1's lock held)."""
        if self.chunks is None:
            for frame, unique_id in zip(frames, unique_ids):
                count = self.hdf.append(frame.frame(), unique_id)
            return count
        return self.hdf.append_chunks([f.payloads for f in frames], self.chunks.chunk_rows, unique_ids)

    async def _acquire_external(self) -> None:
        """Armed: one frame per :meth:`external_trigger` until NumImages frames or Acquire = 0.

        ``Acquire_RBV`` returns to 0 once every accepted frame is in the file and flushed.
        """
        cam = self.cam
        await cam.dropped_frames.write(0)
        await cam.num_images_counter.write(0)
        await cam.acquire_rbv.write("Acquire")
        loop = asyncio.get_running_loop()
        # the background chunks of this exposure drawn before the detector reports armed (once per exposure)
        await loop.run_in_executor(None, self.warm, float(cam.acquire_time.value))
        await cam.detector_state.write("Acquire")
        self._ext = ext = ExternalAcquisition(self, loop)
        try:
            await ext.finished
            await ext.post()
            if ext.error is not None:  # as areaDetector's file plugin reports a failed write
                await self.hdf.write_status.write(1)
                await self.hdf.write_message.write(f"{type(ext.error).__name__}: {ext.error}"[:500])
            elif ext.stats is not None:
                await self.stats.update(ext.stats, ext.last_written_id)  # the last frame's Stats1, once a line
        finally:
            self._ext = None
            await cam.detector_state.write("Error" if ext.error is not None else "Idle")
            self.busy = False
            await cam.acquire.write("Done", verify_value=False)
            await cam.acquire_rbv.write("Done")

    async def external_trigger(self, t_s: float, positions: dict, *, drop: bool = False) -> bool:
        """One trigger pulse at time ``t_s`` (s, any monotonic origin) with the stage at ``positions``.

        Returns whether a frame was taken (False: not armed, dead time, or ``drop``).
        """
        ext = self._ext
        if not self.busy or ext is None or self.cam.trigger_mode.value != "External":
            return False
        dropped = ext.dropped
        taken = ext.trigger(t_s, positions, drop)
        if ext.dropped != dropped:
            await self.cam.dropped_frames.write(ext.dropped)
        return taken

    async def _acquire(self) -> None:
        """Take NumImages frames (1 in Single mode), then set Acquire back to Done."""
        cam, hdf = self.cam, self.hdf
        loop = asyncio.get_running_loop()
        try:
            await post_if_changed(cam.acquire_rbv, "Acquire")  # the Acquire putter has posted it already
            await cam.detector_state.write("Acquire")
            n_frames = 1 if cam.image_mode.value == "Single" else max(int(cam.num_images.value), 1)
            for i in range(n_frames):
                if self.abort:
                    break
                t0 = time.monotonic()
                exposure = float(cam.acquire_time.value)
                positions = self.state.snapshot()
                if self.beam is not None:
                    self.beam.exposure_started(t0)
                flux, revision = exposure_flux(self.beam, t0, exposure)  # as the beam's schedule foresees
                if hdf.capture.value == "Capture" and hdf.h5 is None:
                    raise OSError(f"{hdf.prefix}Capture is on but no file is open: "
                                  f"{hdf.write_message.value}")
                append = hdf.append if hdf.h5 is not None and hdf.enable.value == "Enable" else None
                # areaDetector's NDArrayUniqueId: the array counter this frame brings it to
                unique_id = int(cam.array_counter.value) + 1
                # render, stats and file write in one worker-thread call: the
                # server stays responsive, with one thread hand-over per frame
                frame, stats, count = await loop.run_in_executor(
                    None, self._take_frame, positions, exposure, flux, append, unique_id)
                if count is not None:
                    await hdf.frame_written(count, frame.shape, unique_id)
                await self.stats.update(stats, unique_id)
                await self.roistat.update(frame, self.roi, unique_id)  # the detector ROI counter
                await self.image.update(frame, stats["max"])
                await cam.array_counter.write(unique_id)  # the putter mirrors _RBV
                await cam.num_images_counter.write(i + 1)
                if self.realtime:
                    period = max(exposure, float(cam.acquire_period.value))
                    remaining = period - (time.monotonic() - t0)
                    if remaining > 0:
                        await asyncio.sleep(remaining)
                    if self.beam is not None and self.beam.revision != revision:  # a dump, the shutter
                        await self._retake(positions, (t0, exposure, flux), count, unique_id)
        except Exception as exc:  # keep the IOC alive; report on the cam
            await cam.detector_state.write("Error")
            await hdf.write_status.write(1)
            await hdf.write_message.write(f"{type(exc).__name__}: {exc}"[:500])
            raise
        else:
            await cam.detector_state.write("Idle")
        finally:
            self.busy = False
            await cam.acquire.write("Done", verify_value=False)
            await cam.acquire_rbv.write("Done")

    def _take_frame(self, positions, exposure, flux, append, unique_id):
        """Render one frame, its stats and (``append`` given) its HDF5 write (worker thread)."""
        frame = self._render(positions, exposure, flux)
        stats = frame_stats(frame)
        return frame, stats, append(frame, unique_id) if append is not None else None

    async def _retake(self, positions, exposure, count, unique_id) -> None:
        """The frame again, at the flux the beam really gave during ``exposure`` = (start, length, flux
        foreseen), when it differs: written over the file's frame ``count`` and posted."""
        t0, length, foreseen = exposure
        flux = self.beam.mean_flux(t0, t0 + length)
        if abs(flux - foreseen) < 1e-9:
            return
        frame = await asyncio.get_running_loop().run_in_executor(None, self._render, positions, length, flux)
        stats = frame_stats(frame)
        if count is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.hdf.replace, count - 1, frame, unique_id)
        await self.stats.update(stats, unique_id)
        await self.roistat.update(frame, self.roi, unique_id)
        await self.image.update(frame, stats["max"])

    def _render(self, positions, exposure, flux=1.0):
        """A frame of ``exposure`` s at mean ``flux`` (no beam: no photons, not even the background)."""
        if flux <= 0:
            return np.zeros(self.shape, dtype=np.uint32)
        return as_uint32(self.renderer(positions, exposure * flux), self.shape)


class _Whole:
    """An uncompressed frame where no chunk compressor is installed (the h5py filter then compresses)."""

    def __init__(self, frame, stats):
        self._frame, self.stats = frame, stats

    def frame(self):
        return self._frame
