"""Live SXDM reduction: a bluesky callback that fills maps as frames arrive.

Subscribe :class:`LiveSXDM` to a ``RunEngine`` (directly, or through
:class:`braggscope.analysis.live.dispatch.LiveMapDispatcher` so that the
RunEngine never waits for it). For every frame it computes six sums in one
matrix product with a precomputed ``(6, rows * cols)`` float32 weight matrix
of the frame's eta::

    [1, row - row0, col - col0, Qx - Qx0, Qy - Qy0, Qz - Qz0]

(Q of every pixel from :class:`braggscope.core.geometry.Geometry`, sample frame,
1/Angstrom; the reference ``Q0`` is subtracted so that float32 keeps
microstrain precision). The sums are accumulated per map pixel across etas;
frames are never kept. When all etas of a map pixel are in, its Q centre of
mass is final; :meth:`LiveSXDM.maps` returns the maps as an
``xarray.Dataset`` with the same variable names as the offline reduction.

What it reduces: a run that :func:`braggscope.storage.layout.map_layout`
accepts (``sxdm_map``, or a bluesky ``grid_scan`` over rocking angle, slow and
fast piezo axes) and whose :class:`braggscope.core.setup.ScanSetup` is complete
(read at the primary stream's descriptor from the start document, the
detector's configuration and the baseline). Events of stream ``"primary"``
carry the setup's image field (inline array, datum id or stream datum) in
raster order: eta outermost, then y, then x. Frames of an ``sxdm_fly`` run (stream datums, one
line each) are placed by their captured positions instead: the nearest point of the commanded
grid to the captured fast (and slow) position less the run's eccentricity offset at the frame's
angle, so a line flown off its commanded positions lands where it was measured; a frame
captured more than half a step off the grid is not placed (:attr:`LiveSXDM.off_grid` counts them).

When the run records an incident-flux monitor (the primary field the start document names as
``monitor``, else ``mon1``), every frame's sums are scaled by ``reference / monitor`` (the reference:
the first reading with beam, kept in the maps' attributes); a frame whose monitor reads 0 (no beam) is
left out, never divided by.

Any other run (``count``, ``scan``, a BCDI rocking scan, a map without its
setup) is declined with one line on stderr saying why, and the callback
never raises into the RunEngine: an error while reducing a map also ends that
run's reduction with one line (:attr:`LiveSXDM.declined` keeps the reason).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections import OrderedDict

import numpy as np
from bluesky.callbacks.core import CallbackBase

from braggscope.analysis.live.frames import FrameResolver
from braggscope.analysis.live.maps import derive_maps, frame_weights, grid_index, point_index
from braggscope.analysis.sxdm.filters import clipped_background
from braggscope.analysis.sxdm.options import MapOptions
from braggscope.core.eccentricity import EccentricityModel
from braggscope.core.setup import ScanSetup
from braggscope.core.stacks import DEFAULT_COUNTERS
from braggscope.storage.layout import NotAMap, map_layout

__all__ = ["LiveSXDM", "frame_backgrounds", "frame_weights"]

#: The monitor field of a run whose start document names none.
MONITOR_FIELD = DEFAULT_COUNTERS["monitor"][0]

@functools.lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's controller (made once: it scans the loaded libraries); None without threadpoolctl."""
    try:  # optional dependency
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def _one_blas_thread():
    """Run the frames' product on this thread alone: it is memory-bound, and the BLAS threads of a
    multi-threaded product spin on another core for a while after it (seconds of CPU over a fly map,
    taken from the RunEngine's process). No limit without threadpoolctl."""
    controller = _blas_controller()
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


class LiveSXDM(CallbackBase):
    """Bluesky callback reducing an ``sxdm_map`` run to live maps.

    Parameters
    ----------
    detector_field : str, optional
        Event data key of the detector frames; default the image field of
        the run's setup (``<detector>_image``).
    stream_name : str
        Event stream holding the frames.
    threshold : float
        Mask threshold, fraction of the map maximum (conventions: 0.2).
    background : "constant", "none" or float
        ``"constant"`` (the default, as the offline reduction's): each frame's background is the
        sigma-clipped mean of its pixels, estimated frame by frame (the offline reduction pools the
        frames of a map pixel), subtracted from the intensity; voxels weigh in the centres of mass
        by their excess over the background plus ``noise_sigma`` times its spread (the offline
        reduction's soft threshold). The background scales with the exposure, the flux and the
        sample, so a fixed number is right for one setting only. A number: that constant (counts per
        pixel per frame) subtracted from every frame before the sums (linearly: exact, no per-pixel
        pass); ``"none"`` or 0: nothing subtracted. The threshold, background and ``detector_roi`` are
        checked as the offline reduction's (:class:`~braggscope.analysis.sxdm.options.MapOptions`,
        kept as ``options``).
    noise_sigma : float
        With ``background="constant"``: the noise cut, in units of the frame's background spread (3).
    clip_background : bool
        With a number as ``background``: subtract it pixel-wise and clip at zero instead
        (one extra pass over every frame).
    batch_size : int
        Frames buffered before a reduction; larger batches reuse the weight
        matrix (one float32 matrix-matrix product per batch). Pending frames
        are reduced at :meth:`flush`, at an eta change and at the stop document.
    snake_scope : {"run", "map"} or None
        Snake row parity (see :func:`live_maps.point_index`); ``None`` reads
        ``raster["snake_scope"]`` from the start document, default ``"map"``
        (odd rows reversed, counted afresh at each eta: the order of
        ``braggscope.plans.sxdm`` and ``braggscope.storage.layout.raster_order``);
        ``"run"`` is the order of ``bluesky.plans.grid_scan`` over
        ``(eta, y, x)`` (what the layout of a grid_scan run says).
    frame_timeout_s : float
        Retry budget when reading file-backed frames.
    weight_cache : int
        Number of per-eta weight matrices kept (each ``24 * rows * cols`` bytes).
    progress : bool
        Show a tqdm progress bar of the frames reduced.
    detector_roi : (row0, row1, col0, col1), optional
        Reduce only this detector window (half-open, full-frame pixel
        coordinates), as ``reduce_stack(detector_roi=...)``: around a weak
        reflection the Poisson noise of the background elsewhere on the
        detector otherwise dominates the centre of mass.
    announce : bool
        Print the one line saying why a run is declined (stderr).
    monitor : "auto", str or None
        Normalise by this primary field: ``"auto"`` the run's monitor (the start document's ``monitor``,
        else ``mon1`` when recorded), a field name, or None for none.

    Attributes
    ----------
    declined : str or None
        Why the current run is not reduced (None while it is).

    Examples
    --------
    >>> from bluesky import RunEngine                        # doctest: +SKIP
    >>> live = LiveSXDM(batch_size=32)                       # doctest: +SKIP
    >>> RE.subscribe(live); RE(sxdm_map(...))                # doctest: +SKIP
    >>> live.maps().d_spacing.plot()                         # doctest: +SKIP
    """

    def __init__(self, *, detector_field=None, stream_name="primary",
                 threshold=0.2, background="constant", noise_sigma=3.0, clip_background=False, batch_size=1,
                 snake_scope=None, frame_timeout_s=10.0, weight_cache=2, progress=False,
                 detector_roi=None, announce=True, monitor="auto"):
        super().__init__()
        self.monitor = monitor
        if background == "snip":
            raise ValueError("live maps subtract background='constant' (each frame's clipped mean), 'none' or a "
                             "number of counts per pixel per frame, not 'snip' (an offline reduction's option)")
        self.options = MapOptions(threshold=threshold, background=background, noise_sigma=noise_sigma, median=1,
                                  detector_roi=detector_roi)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if snake_scope not in (None, "run", "map"):
            raise ValueError(f"snake_scope must be None, 'run' or 'map', got {snake_scope!r}")
        if int(weight_cache) < 1:
            raise ValueError(f"weight_cache must be >= 1, got {weight_cache!r}")
        self.detector_roi = self.options.detector_roi
        self.detector_field = None if detector_field is None else str(detector_field)
        self.field = self.detector_field
        self.stream_name = str(stream_name)
        self.announce = bool(announce)
        self.threshold = self.options.threshold
        background = self.options.background
        self.background = 0.0 if background == "none" else background  # "constant" or counts per pixel per frame
        self.noise_sigma = self.options.noise_sigma
        self.clip_background = bool(clip_background)
        self.batch_size = int(batch_size)
        self.snake_scope = snake_scope
        self.weight_cache = int(weight_cache)
        self.progress = bool(progress)
        self.resolver = FrameResolver(timeout_s=frame_timeout_s)
        self._lock = threading.RLock()
        self._start = None  # start document of the map being (or last) reduced
        self._run_start = None  # start document of the current run, map or not
        self._candidate = None  # (start document, layout) of a run awaiting its primary descriptor
        self._descriptors = set()
        self._baseline_descriptors = set()
        self._baseline = {}
        self._pending = []
        self._bar = None
        self.declined = None
        self.version = 0  # increments whenever the maps change
        self.n_frames = 0
        self.off_grid = 0
        self.monitor_field = None  # the run's monitor field, set at its primary descriptor
        self.monitor_reference = None
        self.no_beam = 0
        self._readings = {}
        self.finished = False
        self._fly = None

    # -- never into the RunEngine ------------------------------------------
    def __call__(self, name, doc, *args, **kwargs):
        """Handle one document; a failure declines the run with one line instead of raising."""
        if self.declined is not None and name != "start":
            return None
        try:
            return super().__call__(name, doc, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a live view must not fail a measurement
            self._decline(f"{type(exc).__name__}: {exc}")
            return None

    def _decline(self, reason):
        """Stop reducing the current run; say why in one line."""
        self.declined = str(reason).replace("\n", " ")
        self._candidate = None
        self._descriptors = set()
        self._pending = []
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.announce:
            uid = str((self._run_start or {}).get("uid", ""))[:8]
            print(f"live maps: run {uid} not reduced: {self.declined}", file=sys.stderr, flush=True)

    @property
    def active(self) -> bool:
        """Whether there are maps to show (a map run accepted now or before)."""
        return self._start is not None

    # -- documents ---------------------------------------------------------
    def start(self, doc):
        """A new run: keep it if its layout is a map; the setup is read at the primary descriptor."""
        self._run_start = doc
        self.declined = None
        self._candidate = None
        self._descriptors = set()
        self._baseline_descriptors = set()
        self._baseline = {}
        try:
            layout = map_layout(doc)
        except NotAMap as exc:
            self._decline(exc)
            return
        self._candidate = (doc, layout)

    def descriptor(self, doc):
        if self._candidate is None and not self._descriptors:
            return
        name = doc.get("name", "primary")
        if name == "baseline":
            self._baseline_descriptors.add(doc["uid"])
            return
        if name != self.stream_name:
            return
        if self._candidate is None:  # a further descriptor of the accepted run's stream
            if self.field in doc.get("data_keys", {}):
                self._descriptors.add(doc["uid"])
            return
        start, layout = self._candidate
        setup = ScanSetup.from_start_doc(start, [doc], self._baseline)
        field = self.detector_field or setup.image_field
        if field not in doc.get("data_keys", {}):
            raise ValueError(f"stream {self.stream_name!r} has no field {field!r}; "
                             f"fields: {sorted(doc.get('data_keys', {}))}")
        self.monitor_field = self._monitor_field(start, doc.get("data_keys", {}))
        self._accept(start, layout, setup, field)
        self._candidate = None
        self._descriptors.add(doc["uid"])

    def _monitor_field(self, start, data_keys):
        """The primary field to normalise by (see ``monitor``), or None."""
        if self.monitor is None:
            return None
        if self.monitor != "auto":
            if self.monitor not in data_keys:
                raise ValueError(f"monitor {self.monitor!r} is not recorded (fields: {sorted(data_keys)})")
            return self.monitor
        named = start.get("monitor")
        name = named if isinstance(named, str) else MONITOR_FIELD
        return name if name in data_keys else None

    def _accept(self, start, layout, setup, field):
        """Set up the accumulators of a map run."""
        n_eta, ny, nx = layout.shape
        rows, cols = setup.frame_shape
        geometry = setup.geometry()
        delta, nu, phi = setup.angles(n_eta)
        mid = n_eta // 2
        q0 = geometry.q_pixels((rows - 1) / 2.0, (cols - 1) / 2.0, layout.eta[mid], delta[mid], nu[mid], phi[mid])
        s0 = setup.detector_roi or (0, rows, 0, cols)  # stored window, full-frame pixels
        r0, r1, c0, c1 = self.detector_roi or (s0[0], s0[0] + rows, s0[2], s0[2] + cols)
        r0, r1, c0, c1 = r0 - s0[0], r1 - s0[0], c0 - s0[2], c1 - s0[2]
        if r0 < 0 or c0 < 0 or r1 > rows or c1 > cols:
            raise ValueError(f"detector_roi {self.detector_roi} exceeds the detector shape "
                             f"{setup.detector_shape} (stored frames {setup.frame_shape})")
        with self._lock:
            self._start = start
            self.setup = setup
            self.field = field
            self._window = (slice(r0, r1), slice(c0, c1))
            self.geometry = geometry
            self.eta, self.delta, self.nu, self.phi = np.asarray(layout.eta, float), delta, nu, phi
            self.map_shape = (n_eta, ny, nx)
            self.frame_shape = (rows, cols)
            self.snake = layout.snake
            self._scope = self.snake_scope or layout.snake_scope
            self.x, self.y = np.asarray(layout.x, float), np.asarray(layout.y, float)
            self._ref = (float(geometry.cch[0]), float(geometry.cch[1]), np.asarray(q0, float))
            self._sums = np.zeros((6, ny, nx))  # the centre-of-mass weight and moments
            self._intensity = np.zeros((ny, nx))  # the background-subtracted counts
            self._intensity_eta = np.zeros((n_eta, ny, nx))
            self._seen = np.zeros((n_eta, ny, nx), dtype=bool)
            self._weights = OrderedDict()
            self._weight_totals = {}
            self._pending = []
            self.resolver.clear()
            self.n_frames = 0
            self.off_grid = 0
            self.no_beam = 0
            self.monitor_reference = None
            self._readings = {}
            self.finished = False
            self._fly = self._fly_placement(start, layout, setup)
            self.version += 1
        if self.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=n_eta * ny * nx, desc="live SXDM", unit="frame")

    def resource(self, doc):
        self.resolver.resource(doc)

    def datum(self, doc):
        self.resolver.datum(doc)

    def datum_page(self, doc):
        self.resolver.datum_page(doc)

    def stream_resource(self, doc):
        self.resolver.stream_resource(doc)

    def stream_datum(self, doc):
        if doc["descriptor"] not in self._descriptors:
            return
        res = self.resolver.stream_resource_of(doc)
        key = res.get("data_key", self.field)
        fly = self._fly
        if key != self.field and (fly is None or key not in fly["captured"]):
            if fly is None and key == self.monitor_field:
                seq_nums, values = self.resolver.stream_frames(doc)
                self._readings.update(zip((int(s) for s in seq_nums), (float(v) for v in values)))
            return
        seq_nums, values = self.resolver.stream_frames(doc)
        if fly is None:
            for s, f in zip(seq_nums, values):
                self._add(int(s), f, monitor=self._readings.pop(int(s), None))
            return
        # a fly run: keep frames and captured positions until each frame has all its positions
        store = fly["frames"] if key == self.field else fly["captured"][key]
        store.update(zip((int(s) for s in seq_nums), values))
        ready = [s for s in sorted(fly["frames"]) if all(s in c for c in fly["captured"].values())]
        for s in ready:
            self._place(s, fly["frames"].pop(s), {k: float(c.pop(s)) for k, c in fly["captured"].items()})

    def _fly_placement(self, start, layout, setup):
        """What places the frames of an ``sxdm_fly`` run by captured positions (None for other runs)."""
        raster = start.get("raster") or {}
        if start.get("plan_name") != "sxdm_fly" or "fast" not in raster:
            return None
        model = EccentricityModel.coerce(start.get("eccentricity"), "eccentricity")
        dx, dy = (np.broadcast_to(np.asarray(v, float), self.eta.shape) for v in model.offset(self.eta))
        captured = {raster["fast"]: {}}
        if raster.get("slow"):
            captured[raster["slow"]] = {}
        if self.monitor_field:  # captured with every frame, as the positions are
            captured[self.monitor_field] = {}
        return {"fast": raster["fast"], "slow": raster.get("slow"), "dx": dx, "dy": dy,
                "frames": {}, "captured": captured}

    def _place(self, seq_num, frame, positions):
        """Queue a fly frame at the grid point nearest to where it was captured."""
        fly = self._fly
        i_eta, iy, _ = point_index(seq_num, self.map_shape, self.snake, self._scope)
        ix = int(grid_index(positions[fly["fast"]] - fly["dx"][i_eta], self.x))
        if fly["slow"] in positions:
            iy = int(grid_index(positions[fly["slow"]] - fly["dy"][i_eta], self.y))
        if ix < 0 or iy < 0:
            self.off_grid += 1
            return
        self._add(seq_num, frame, where=(iy, ix), monitor=positions.get(self.monitor_field))

    def event(self, doc):
        if doc["descriptor"] in self._baseline_descriptors:
            self._baseline = self._baseline or dict(doc["data"])  # the reading at the run's start
            return
        if doc["descriptor"] not in self._descriptors:
            return
        value = doc["data"].get(self.field)
        if value is not None:  # absent when the frames come as stream_datum
            self._add(int(doc["seq_num"]), value, monitor=doc["data"].get(self.monitor_field))

    def event_page(self, doc):
        if doc["descriptor"] in self._baseline_descriptors:
            self._baseline = self._baseline or {k: v[0] for k, v in doc["data"].items() if len(v)}
            return
        if doc["descriptor"] not in self._descriptors:
            return
        values = doc["data"].get(self.field)
        if values is None:
            return
        readings = doc["data"].get(self.monitor_field) if self.monitor_field else None
        for k, (s, v) in enumerate(zip(doc["seq_num"], values)):
            self._add(int(s), v, monitor=None if readings is None else readings[k])

    def stop(self, doc):
        self._candidate = None
        if not self._descriptors:
            return
        self._descriptors = set()
        self.flush()
        self.resolver.clear()  # close the detector files
        with self._lock:
            self.finished = True
            self.version += 1
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # -- reduction ---------------------------------------------------------
    def _add(self, seq_num, value, where=None, monitor=None):
        """Queue one frame (array, or a datum id string) for the next flush; ``where``: its map pixel
        ``(iy, ix)`` when not the raster position of ``seq_num``; ``monitor``: its monitor reading."""
        if self._start is None:
            raise RuntimeError("event before any start document")
        if isinstance(value, str):  # external: datum id
            value = self.resolver.frame(value)
        frame = np.asarray(value)
        if frame.shape != self.frame_shape:
            raise ValueError(f"frame of seq_num {seq_num} has shape {frame.shape}, the setup says "
                             f"{self.frame_shape}")
        i_eta = point_index(seq_num, self.map_shape)[0]
        if self._pending and self._pending[-1][1] != i_eta:
            self.flush()
        self._pending.append((seq_num, i_eta, frame, where, self._frame_scale(monitor)))
        if len(self._pending) >= self.batch_size:
            self.flush()

    def _frame_scale(self, monitor) -> float:
        """``reference / monitor`` of one frame (1 without a monitor, 0 for a frame without beam)."""
        if not self.monitor_field:
            return 1.0
        if monitor is None:
            raise ValueError(f"a frame arrived without its {self.monitor_field} reading")
        reading = float(monitor)
        if not np.isfinite(reading) or reading < 0:
            raise ValueError(f"{self.monitor_field} read {reading!r}: a monitor reads a finite count >= 0")
        if reading == 0:
            self.no_beam += 1
            return 0.0
        if self.monitor_reference is None:
            self.monitor_reference = reading  # the first reading with beam: the counts refer to it
        return self.monitor_reference / reading

    def flush(self):
        """Reduce the pending frames (one matrix product per eta in the batch)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        seq = np.array([p[0] for p in pending])
        i_eta = pending[0][1]
        weights = self._weights_for(i_eta)
        stack = np.empty((len(pending), weights.shape[1]), dtype=np.float32)
        for k, p in enumerate(pending):
            stack[k] = p[2][self._window].reshape(-1)  # integer frames cast once, here
        intensity = None
        fixed = 0.0 if self.background == "constant" else self.background  # counts per pixel per frame
        if self.background == "constant":
            intensity = _subtract_frame_backgrounds(stack, self.noise_sigma)
        elif fixed > 0 and self.clip_background:
            np.subtract(stack, np.float32(fixed), out=stack)
            np.maximum(stack, 0.0, out=stack)
        with _one_blas_thread():
            sums = (stack @ weights.T).astype(np.float64)
        if fixed > 0 and not self.clip_background:
            sums -= fixed * self._weight_totals[i_eta]
        scale = np.array([p[4] for p in pending])  # the monitor normalisation, 0 without beam
        sums *= scale[:, None]
        intensity = sums[:, 0] if intensity is None else intensity * scale
        _, iy, ix = point_index(seq, self.map_shape, self.snake, self._scope)
        for k, p in enumerate(pending):
            if p[3] is not None:  # placed by its captured positions
                iy[k], ix[k] = p[3]
        with self._lock:
            for c in range(6):
                np.add.at(self._sums[c], (iy, ix), sums[:, c])
            np.add.at(self._intensity, (iy, ix), intensity)
            np.add.at(self._intensity_eta[i_eta], (iy, ix), intensity)
            self._seen[i_eta, iy, ix] = True
            self.n_frames += len(pending)
            self.version += 1
        if self._bar is not None:
            self._bar.update(len(pending))

    def _weights_for(self, i_eta):
        w = self._weights.get(i_eta)
        if w is None:
            row0, col0, q0 = self._ref
            rows, cols = self._window
            w = frame_weights(self.geometry.crop(rows.start, cols.start),
                              (rows.stop - rows.start, cols.stop - cols.start), self.eta[i_eta],
                              self.delta[i_eta], self.nu[i_eta], self.phi[i_eta],
                              row0=row0 - rows.start, col0=col0 - cols.start, q0=q0)
            self._weight_totals[i_eta] = w.sum(axis=1, dtype=np.float64)
            self._weights[i_eta] = w
            while len(self._weights) > self.weight_cache:
                self._weights.popitem(last=False)
        else:
            self._weights.move_to_end(i_eta)
        return w

    # -- results -----------------------------------------------------------
    def maps(self):
        """The current maps as an ``xarray.Dataset`` (dims ``y``, ``x``; ``eta``).

        Variables: ``intensity`` (counts), ``mask``, ``qx``, ``qy``, ``qz``
        (1/Angstrom), ``d_spacing`` (Angstrom), ``strain`` (microstrain),
        ``tilt_altitude``, ``tilt_azimuth`` (degrees), ``com_row``, ``com_col``
        (detector pixels), ``complete`` (all etas seen), ``intensity_eta``.
        Derived maps use only pixels whose rocking set is complete; ``intensity`` is NaN where no
        frame has arrived yet, ``intensity_eta`` where that angle's frame has not.
        """
        import xarray as xr

        if self._start is None:
            raise RuntimeError("no run started yet: maps() needs a start document")
        with self._lock:
            sums = self._sums.copy()
            seen = self._seen.copy()
            # points not reached yet are blank (NaN), not 0: a 0 would pull the colour scale and read as
            # "no diffraction there"; a frame without beam is reached and weighs 0
            intensity = np.where(seen.any(axis=0), self._intensity, np.nan)
            intensity_eta = np.where(seen, self._intensity_eta, np.nan)
            complete = seen.all(axis=0)
            n_frames, finished = self.n_frames, self.finished
        row0, col0, q0 = self._ref
        weight = sums[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            com = sums[1:] / np.where(weight > 0, weight, np.nan)
        q = np.where(complete, com[2:] + q0[:, None, None], np.nan)
        derived = derive_maps(intensity, q[0], q[1], q[2], complete, threshold=self.threshold)
        dims = ("y", "x")
        data = {name: (dims, derived[name]) for name in
                ("mask", "qx", "qy", "qz", "d_spacing", "strain", "tilt_altitude", "tilt_azimuth")}
        data["intensity"] = (dims, intensity)
        data["com_row"] = (dims, com[0] + row0)
        data["com_col"] = (dims, com[1] + col0)
        data["complete"] = (dims, complete)
        data["intensity_eta"] = (("eta",) + dims, intensity_eta)
        ds = xr.Dataset(data, coords={"y": self.y, "x": self.x, "eta": self.eta})
        normalisation = {"normalisation": "none"} if not self.monitor_field else {
            "normalisation": f"counts x monitor_reference / {self.monitor_field}", "monitor": self.monitor_field,
            "monitor_reference": float(self.monitor_reference or np.nan), "frames_without_beam": self.no_beam}
        ds.attrs.update(threshold=self.threshold, background=self.background, noise_sigma=self.noise_sigma,
                        **normalisation,
                        n_frames=n_frames, finished=int(finished),
                        q_bar=derived["q_bar"].tolist(), d_mean=derived["d_mean"],
                        units="counts; 1/Angstrom; Angstrom; microstrain; degrees; um")
        for name, unit in (("x", "um"), ("y", "um"), ("eta", "deg"), ("qx", "1/Angstrom"),
                           ("qy", "1/Angstrom"), ("qz", "1/Angstrom"), ("d_spacing", "Angstrom"),
                           ("strain", "microstrain"), ("tilt_altitude", "deg"),
                           ("tilt_azimuth", "deg"), ("intensity", "counts")):
            ds[name].attrs["units"] = unit
        return ds


def frame_backgrounds(frames, max_samples=8192):
    """Each frame's background: the sigma-clipped mean and spread of its pixels.

    The offline reduction's estimator (:func:`~braggscope.analysis.sxdm.filters.clipped_background`) on a
    regular subsample of at most ``max_samples`` pixels of each frame, copied contiguous first (a strided
    sample costs twice the time). ``frames``: ``(n, pixels)`` or ``(n, rows, cols)``.

    Returns
    -------
    level, spread : ndarray of float32, shape (n,)
    """
    flat = np.asarray(frames).reshape(len(frames), -1)
    step = max(1, int(np.ceil(flat.shape[1] / max_samples)))
    return clipped_background(np.ascontiguousarray(flat[:, ::step], dtype=np.float32), max_samples=None)


def _subtract_frame_backgrounds(stack, noise_sigma):
    """Each row of ``stack`` (a frame's window, float32) less its background; returns the intensities.

    The intensity is the frame's counts less its background level (:func:`frame_backgrounds`) over its
    pixels; the rows are then left with each pixel's excess over the level plus ``noise_sigma`` spreads,
    zero below (the centre-of-mass weights, the offline reduction's soft threshold).
    """
    level, spread = frame_backgrounds(stack)
    intensity = stack.sum(axis=1, dtype=np.float64) - level.astype(np.float64) * stack.shape[1]
    np.subtract(stack, (level + np.float32(noise_sigma) * spread)[:, None], out=stack)
    np.maximum(stack, 0.0, out=stack)
    return intensity
