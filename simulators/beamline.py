"""The simulated beamline: detector frames for a set of motor positions.

``SimulatedBeamline.render(positions, exposure_s)`` is what the caproto IOCs
call for every detector frame (pure Python, no EPICS, thread-safe). The
sample sits on the piezo grid at its nominal position at ``eta0`` and
appears at ``(x + dx(eta), y + dy(eta))`` where ``dx, dy`` is the *true*
eccentricity drift (``[simulator.eccentricity]`` in the configuration,
distinct from ``[eccentricity]``, the beamline's calibrated correction).
An electrochemical cell (``simulators/ioc_cell.py``) swaps the sample for the one its
state stands for (:meth:`SimulatedBeamline.set_sample`) and moves it
(:meth:`SimulatedBeamline.set_drift`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np

from braggscope.core.eccentricity import EccentricityModel
from braggscope.core.geometry import Geometry, bragg_angle, oversampling_detector, rocking_step, wavelength
from braggscope.core.setup import ScanSetup
from braggscope.core.stacks import MapStack

from .bcdi_forward import BCDIForwardModel
from .fluorescence import FluorescenceModel
from .noise import PoissonPool
from .samples import BCDIParticle, SXDMSample, make_sample
from .sxdm_forward import FWHM_TO_SIGMA, SXDMForwardModel

__all__ = ["SimulatedBeamline", "DEFAULT_SIM_ECCENTRICITY", "REQUIRED_POSITIONS"]

#: True drift used when the configuration has no ``[simulator.eccentricity]``.
DEFAULT_SIM_ECCENTRICITY = {"eta0": 9.0, "x": [0.08, 0.004], "y": [-0.05, 0.0]}
#: Keys ``render`` needs; ``piz`` (ignored), ``phi``, ``nu`` default to 0 and
#: ``energy`` to the configured energy.
REQUIRED_POSITIONS = ("pix", "piy", "eta", "delta")


class SimulatedBeamline:
    """Detector frames of a simulated sample on an ID01-like diffractometer.

    Parameters
    ----------
    sample : SXDMSample, BCDIParticle or str
        A sample object or a preset name (``nmc622``, ``lno_cluster``, ``lmno_bcdi``).
    shape : (int, int)
        Detector shape (rows, cols).
    distance_m, pixel_m : float
        Detector distance and pixel size (m).
    cch : (float, float)
        Direct-beam pixel at zero detector angles.
    saturation : int
        Pixel saturation (counts).
    energy_kev : float
        Default energy when ``positions`` has no ``energy``.
    eccentricity : EccentricityModel or dict, optional
        The true drift of the sample with eta (default :data:`DEFAULT_SIM_ECCENTRICITY`).
    probe_fwhm_um : float
        SXDM nano-probe FWHM (um).
    peak_rate, background_rate : float
        SXDM peak counts/s per um of crystal at the Bragg condition; flat
        background counts/pixel/s.
    bcdi_peak_rate : float
        BCDI counts/s at the Bragg peak of the fully illuminated particle.
    bcdi_beam_fwhm_um : float
        BCDI (micro-)beam FWHM (um).
    xrf_rate, xrf_background_rate : float
        Fluorescence (e.g. Ni K-alpha) counts/s per um of particle thickness at
        the probe centre, and the flat fluorescence background in counts/s
        (:meth:`fluorescence`, :mod:`.fluorescence`).
    seed : int or None
        Seed for the sample preset and the noise.
    """

    def __init__(self, sample="nmc622", *, shape=(512, 512), distance_m=0.5, pixel_m=55e-6,
                 cch=(256.0, 256.0), saturation=401540, energy_kev=8.33, eccentricity=None,
                 probe_fwhm_um=0.08, peak_rate=2.0e5, background_rate=100.0,
                 bcdi_peak_rate=1.0e6, bcdi_beam_fwhm_um=1.0, xrf_rate=5.0e4, xrf_background_rate=500.0,
                 seed=0):
        if isinstance(sample, str):
            sample = make_sample(sample, seed)
        if not isinstance(sample, (SXDMSample, BCDIParticle)):
            raise TypeError(f"sample must be a preset name, SXDMSample or BCDIParticle, got {type(sample).__name__}")
        if not float(energy_kev) > 0:
            raise ValueError(f"energy_kev must be > 0, got {energy_kev!r}")
        if not (bcdi_peak_rate >= 0 and bcdi_beam_fwhm_um > 0):
            raise ValueError("bcdi_peak_rate must be >= 0 and bcdi_beam_fwhm_um > 0")
        if eccentricity is None:
            eccentricity = DEFAULT_SIM_ECCENTRICITY
        eccentricity = EccentricityModel.coerce(eccentricity, "eccentricity")
        self.sample = sample
        self.eccentricity = eccentricity
        self.shape = (int(shape[0]), int(shape[1]))
        self.distance_m = float(distance_m)
        self.pixel_m = float(pixel_m)
        self.cch = (float(cch[0]), float(cch[1]))
        self.saturation = int(saturation)
        self.energy_kev = float(energy_kev)
        self.seed = seed
        self.background_rate = float(background_rate)
        self.bcdi_peak_rate = float(bcdi_peak_rate)
        self.bcdi_beam_fwhm_um = float(bcdi_beam_fwhm_um)
        self._lock = threading.RLock()
        self.drift_um = np.zeros(3)  # the particle's own motion (x, y, z), set by a simulated cell
        self._rng = np.random.default_rng(None if seed is None else int(seed) + 1)
        self._xrf_rng = np.random.default_rng(None if seed is None else int(seed) + 2)
        # the SXDM probe for SXDM samples, the BCDI beam for a BCDI particle
        xrf_fwhm = probe_fwhm_um if isinstance(sample, SXDMSample) else self.bcdi_beam_fwhm_um
        self.xrf = FluorescenceModel(sample, probe_fwhm_um=xrf_fwhm, rate=xrf_rate,
                                     background_rate=xrf_background_rate)
        if isinstance(sample, SXDMSample):
            self.forward = SXDMForwardModel(
                sample, shape=self.shape, distance_m=self.distance_m, pixel_m=self.pixel_m,
                cch=self.cch, probe_fwhm_um=probe_fwhm_um, peak_rate=peak_rate,
                background_rate=background_rate, saturation=self.saturation,
                seed=None if seed is None else int(seed) + 1)
            self._pool = None
        else:
            self.forward = BCDIForwardModel(sample)
            self._pool = PoissonPool(self._rng)

    # -- construction ---------------------------------------------------------
    @classmethod
    def from_config(cls, cfg, sample=None, seed=None) -> SimulatedBeamline:
        """Build from a :class:`braggscope.core.config.Config`.

        Reads ``detector.{shape, pixel_m, cch, distance_m, saturation}``,
        ``energy.energy_kev``, ``simulator.{sample, seed, probe_fwhm_um,
        peak_rate, background_rate, bcdi_peak_rate, bcdi_beam_fwhm_um}`` and
        the table ``simulator.eccentricity`` (the true drift). ``sample`` and
        ``seed`` override the configuration.
        """
        sim = cfg.get("simulator", {}) or {}
        seed = sim.get("seed", 0) if seed is None else seed
        sample = sim.get("sample", "nmc622") if sample is None else sample
        return cls(
            sample,
            shape=tuple(cfg["detector.shape"]),
            distance_m=float(cfg["detector.distance_m"]),
            pixel_m=float(cfg["detector.pixel_m"]),
            cch=tuple(cfg["detector.cch"]),
            saturation=int(cfg.get("detector.saturation", 401540)),
            energy_kev=float(cfg["energy.energy_kev"]),
            eccentricity=sim.get("eccentricity", DEFAULT_SIM_ECCENTRICITY),
            probe_fwhm_um=float(sim.get("probe_fwhm_um", 0.08)),
            peak_rate=float(sim.get("peak_rate", 2.0e5)),
            background_rate=float(sim.get("background_rate", 100.0)),
            bcdi_peak_rate=float(sim.get("bcdi_peak_rate", 1.0e6)),
            bcdi_beam_fwhm_um=float(sim.get("bcdi_beam_fwhm_um", 1.0)),
            xrf_rate=float(sim.get("xrf_rate", 5.0e4)),
            xrf_background_rate=float(sim.get("xrf_background_rate", 500.0)),
            seed=seed,
        )

    # -- public -----------------------------------------------------------------
    @property
    def is_bcdi(self) -> bool:
        return isinstance(self.sample, BCDIParticle)

    def geometry(self, energy_kev=None) -> Geometry:
        """Detector geometry at an energy (keV; default the configured one)."""
        e = self.energy_kev if energy_kev is None else float(energy_kev)
        return Geometry(e, self.distance_m, self.pixel_m, self.cch)

    def render(self, positions: Mapping[str, float], exposure_s: float = 0.01) -> np.ndarray:
        """One detector frame (uint32, ``self.shape``) at the given motor positions.

        Parameters
        ----------
        positions : mapping
            ``pix``, ``piy`` (um), ``eta``, ``delta`` (deg) required; ``phi``,
            ``nu`` (deg, default 0), ``energy`` (keV, default configured),
            ``piz`` (um, accepted and ignored: the probe is always in focus).
        exposure_s : float
            Exposure time (s), > 0.
        """
        missing = [k for k in REQUIRED_POSITIONS if k not in positions]
        if missing:
            raise ValueError(f"positions is missing {missing} (needs {list(REQUIRED_POSITIONS)})")
        vals = {k: float(positions[k]) for k in REQUIRED_POSITIONS}
        for k in ("phi", "nu"):
            vals[k] = float(positions.get(k, 0.0))
        vals["energy"] = float(positions.get("energy", self.energy_kev))
        bad = [k for k, v in vals.items() if not np.isfinite(v)]
        if bad:
            raise ValueError(f"positions {bad} are not finite")
        if not vals["energy"] > 0:
            raise ValueError(f"positions['energy'] must be > 0 keV, got {vals['energy']!r}")
        exposure_s = float(exposure_s)
        if not exposure_s > 0:
            raise ValueError(f"exposure_s must be > 0, got {exposure_s!r}")
        xs, ys = self.beam_on_sample(vals["pix"], vals["piy"], vals["eta"])
        with self._lock:
            if self.is_bcdi:
                return self._render_bcdi(xs, ys, vals, exposure_s)
            return self.forward.render(xs, ys, vals["eta"], vals["delta"], vals["nu"], vals["phi"],
                                       vals["energy"], exposure_s)

    def fluorescence(self, positions: Mapping[str, float], exposure_s: float = 0.01) -> int:
        """Fluorescence counts (Poisson) of the particle at the given motor positions.

        The sample is where the diffraction sees it (the same true drift
        :attr:`eccentricity`: the sample moves, not the beam); the counts
        follow its projected thickness under the probe and do not depend on
        the Bragg condition (see :mod:`.fluorescence`).

        Parameters
        ----------
        positions : mapping
            ``pix``, ``piy`` (um) and ``eta`` (deg) required; other motors are
            accepted and ignored.
        exposure_s : float
            Counting time (s), > 0.

        Returns
        -------
        int
            Counts in the fluorescence line's region of interest.
        """
        xs, ys, eta = self._beam_on_sample(positions, ("pix", "piy", "eta"))
        lam = self.xrf.expected(xs, ys, eta, exposure_s)
        with self._lock:
            return int(self._xrf_rng.poisson(lam))

    def expected_fluorescence(self, positions: Mapping[str, float], exposure_s: float = 0.01) -> float:
        """Noise-free mean of :meth:`fluorescence` (counts)."""
        xs, ys, eta = self._beam_on_sample(positions, ("pix", "piy", "eta"))
        return self.xrf.expected(xs, ys, eta, exposure_s)

    def sxdm_stack(self, x_um, y_um, etas, *, delta=None, nu=0.0, phi=0.0, energy_kev=None,
                   exposure_s=0.01, crop=None, eccentricity=None, progress=False, max_bytes=2**31):
        """Simulate a whole SXDM acquisition in memory (no EPICS, no files).

        Parameters
        ----------
        x_um, y_um : array_like, 1-D
            Raster axes (piezo pix, piy, um).
        etas : array_like, 1-D
            Rocking angles (deg).
        delta, nu, phi : float
            Detector and phi angles (deg); ``delta`` defaults to ``bragg_setup()``.
        energy_kev : float, optional
        exposure_s : float
        crop : (row0, row1, col0, col1), optional
            Keep only this detector region (the setup's ``cch`` is shifted to match).
        eccentricity : EccentricityModel, optional
            A correction applied as a plan would: the piezo goes to
            ``raster + offset(eta)``. None: no correction (the crystal slides).
        progress : bool
            tqdm progress bar.
        max_bytes : int
            Refuse (before simulating) a stack larger than this.

        Returns
        -------
        MapStack
            Frames ``(n_eta, ny, nx, rows, cols)`` uint32 in memory, the setup of the (cropped)
            detector, ``x``/``y`` the raster, ``eccentricity`` the correction applied and
            ``metadata["sample"]`` the sample's description.
        """
        x = np.atleast_1d(np.asarray(x_um, dtype=float))
        y = np.atleast_1d(np.asarray(y_um, dtype=float))
        etas = np.atleast_1d(np.asarray(etas, dtype=float))
        for name, v in (("x_um", x), ("y_um", y), ("etas", etas)):
            if v.ndim != 1 or v.size < 1 or not np.all(np.isfinite(v)):
                raise ValueError(f"{name} must be a non-empty 1-D sequence of finite numbers")
        r0, r1, c0, c1 = (0, self.shape[0], 0, self.shape[1]) if crop is None else (int(v) for v in crop)
        if not (0 <= r0 < r1 <= self.shape[0] and 0 <= c0 < c1 <= self.shape[1]):
            raise ValueError(f"crop must be (row0, row1, col0, col1) inside {self.shape}, got {crop!r}")
        nbytes = etas.size * y.size * x.size * (r1 - r0) * (c1 - c0) * 4
        if nbytes > max_bytes:
            raise ValueError(f"the stack would take {nbytes / 2**30:.1f} GiB (> max_bytes); use crop= "
                             "or fewer points")
        setup = self.bragg_setup(energy_kev)
        delta = setup["delta"] if delta is None else float(delta)
        e = setup["energy_kev"]
        frames = np.empty((etas.size, y.size, x.size, r1 - r0, c1 - c0), dtype=np.uint32)
        total = etas.size * y.size
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="SXDM rows", unit="row")
        for i, eta in enumerate(etas):
            ox, oy = eccentricity.offset(eta) if eccentricity is not None else (0.0, 0.0)
            for j, yy in enumerate(y):
                for k, xx in enumerate(x):
                    f = self.render({"pix": xx + ox, "piy": yy + oy, "eta": eta, "delta": delta,
                                     "nu": nu, "phi": phi, "energy": e}, exposure_s)
                    frames[i, j, k] = f[r0:r1, c0:c1]
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        setup = ScanSetup(e, self.distance_m, self.pixel_m, (self.cch[0] - r0, self.cch[1] - c0),
                          (r1 - r0, c1 - c0), delta, float(nu), float(phi))
        return MapStack(frames, etas, setup, source=f"simulated {self.sample.name}",
                        metadata={"sample": self.sample.to_dict()}, x=x, y=y,
                        eccentricity=None if eccentricity is None else eccentricity.to_dict())

    def apparent_center(self, eta) -> tuple[float, float]:
        """Piezo position (um) where the sample's centre appears at ``eta`` (deg)."""
        cx, cy = self._center()
        xs, ys = self.beam_on_sample(0.0, 0.0, eta)
        return cx - xs, cy - ys

    def beam_on_sample(self, pix: float, piy: float, eta: float) -> tuple[float, float]:
        """Where the beam is in the sample's coordinates (um) with the piezo at ``pix``, ``piy`` and ``eta``.

        The true eccentricity drift and the particle's own drift :attr:`drift_um` are taken off; a
        particle raised by ``dz`` meets the grazing beam ``dz / tan(eta)`` upstream, so it appears
        that much further along x (as a buried crystal appears the other way).
        """
        dx, dy = self.eccentricity.offset(eta)
        ox, oy, oz = self.drift_um
        cot = 1.0 / np.tan(np.radians(max(abs(float(eta)), 1e-3)))
        return pix - dx - ox - oz * cot, piy - dy - oy

    def set_drift(self, offset_um) -> None:
        """Move the particle by ``offset_um`` (x, y, z; um) from where it was made."""
        offset = np.asarray(offset_um, float).reshape(3)
        if not np.all(np.isfinite(offset)):
            raise ValueError(f"offset_um must be finite, got {offset_um!r}")
        self.drift_um = offset

    def set_sample(self, sample) -> None:
        """Replace the sample (same kind, same place: a cell changed its lattice); thread-safe.

        The forward model is rebuilt before the lock is taken, so a frame being rendered is never held
        up by more than the swap.
        """
        if isinstance(sample, BCDIParticle) != self.is_bcdi:
            raise TypeError(f"set_sample: a {type(sample).__name__} cannot replace a {type(self.sample).__name__}")
        forward = BCDIForwardModel(sample) if self.is_bcdi else None
        columns = None if self.is_bcdi else self.forward.columns_of(sample)
        with self._lock:
            self.sample = sample
            if forward is not None:
                self.forward = forward
            else:
                self.forward.use_columns(sample, columns)

    def bragg_setup(self, energy_kev=None) -> dict:
        """Angles to park at and a suggested rocking range for the preset's reflection.

        Returns
        -------
        dict
            ``eta``, ``delta``, ``nu``, ``phi`` (deg, symmetric Bragg
            condition of the nominal d-spacing), ``eta_start``, ``eta_stop``,
            ``eta_num`` (suggested rocking scan), ``d_spacing`` (Angstrom),
            ``reflection``, ``center_um`` (apparent centre at ``eta``),
            ``extent_um`` (raster half-width covering the sample); for BCDI
            also ``size_m``, ``oversampling_detector`` and the ``distance_m``
            giving an oversampling of 3.
        """
        e = self.energy_kev if energy_kev is None else float(energy_kev)
        d = self.sample.d_spacing
        theta = bragg_angle(d, e)
        out = {"eta": theta, "delta": 2 * theta, "nu": 0.0, "phi": 0.0, "energy_kev": e,
               "d_spacing": float(d)}
        if self.is_bcdi:
            size = float(self.sample.extent_m().max())
            step = rocking_step(d, size, 3.0)
            half = 0.2
            out.update(reflection="".join(str(h) for h in self.sample.hkl), size_m=size,
                       eta_start=theta - half, eta_stop=theta + half,
                       eta_num=int(np.ceil(2 * half / step)) + 1,
                       oversampling_detector=oversampling_detector(e, self.distance_m, self.pixel_m, size),
                       distance_m=3.0 * self.pixel_m * size / (wavelength(e) * 1e-10),
                       extent_um=1.0)
        else:
            tilts = [abs(c.edge_tilt_deg) + np.max(np.abs(np.asarray(c.domains)[:, 2:4]), initial=0.0)
                     for c in self.sample.crystallites if max(map(abs, c.orientation_deg)) < 0.5]
            half = float(max(tilts, default=0.3)) + 0.2
            out.update(reflection=self.sample.reflection, eta_start=theta - half,
                       eta_stop=theta + half, eta_num=int(round(2 * half / 0.05)) + 1,
                       extent_um=float(max(np.hypot(c.center_um[0] - self._center()[0],
                                                    c.center_um[1] - self._center()[1]) + c.extent_um()
                                           for c in self.sample.crystallites)) + 0.5)
        out["center_um"] = list(self.apparent_center(theta))
        return out

    def truth(self) -> dict:
        """Ground truth for tests: sample description, true eccentricity, maps.

        ``maps(x, y)`` (SXDM samples) evaluates :meth:`SXDMSample.truth_maps`
        on a piezo grid (positions at ``eta0``); BCDI samples give the voxel
        object (``rho``, ``u_angstrom``, axes, G) under ``object``.
        """
        out = {"sample": self.sample.to_dict(), "kind": self.sample.kind, "seed": self.seed,
               "eccentricity": self.eccentricity.to_dict(), "center_um": list(self._center())}
        if self.is_bcdi:
            out["object"] = self.forward.truth()
        else:
            out["maps"] = self.sample.truth_maps
            out["probe_fwhm_um"] = self.forward.probe_fwhm_um
        return out

    # -- helpers --------------------------------------------------------------------
    def _beam_on_sample(self, positions, required):
        """Beam position in sample coordinates (drift removed) and eta, checked."""
        missing = [k for k in required if k not in positions]
        if missing:
            raise ValueError(f"positions is missing {missing} (needs {list(required)})")
        vals = [float(positions[k]) for k in required]
        if not all(np.isfinite(vals)):
            raise ValueError(f"positions {list(required)} must be finite, got {vals}")
        x, y, eta = vals
        xs, ys = self.beam_on_sample(x, y, eta)
        return xs, ys, eta

    def _center(self) -> tuple[float, float]:
        if self.is_bcdi:
            return tuple(float(c) for c in self.sample.center_um)
        w = np.array([c.scale * c.thickness_um for c in self.sample.crystallites])
        xy = np.array([c.center_um for c in self.sample.crystallites])
        return tuple(float(v) for v in (w[:, None] * xy).sum(0) / w.sum())

    def _render_bcdi(self, xs, ys, vals, exposure_s):
        geo = self.geometry(vals["energy"])
        bg = self.background_rate * exposure_s
        frame = self._pool.background(bg, self.shape)
        sigma = self.bcdi_beam_fwhm_um * FWHM_TO_SIGMA
        cx, cy = self.sample.center_um
        overlap = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
        scale = self.bcdi_peak_rate * exposure_s * overlap
        if scale <= 0:
            return frame
        win = self.forward.window(geo, self.shape, vals["eta"], vals["delta"], vals["nu"], vals["phi"])
        if win is None:
            return frame
        (r0, r1, c0, c1), inten = win
        counts = self._rng.poisson(scale * inten + bg)
        frame[r0:r1, c0:c1] = np.minimum(counts, self.saturation).astype(np.uint32)
        return frame
