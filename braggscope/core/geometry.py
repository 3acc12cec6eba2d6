"""Diffractometer geometry of an ID01-like six-circle with an area detector.

Conventions (docs/conventions.md), identical to xrayutilities
``QConversion(['y-', 'z-'], ['z-', 'y-'], [1, 0, 0])`` with
``init_area('z-', 'y+', ...)``:

* lab frame: primary beam along +x, z up, y completing a right-handed frame;
* sample circles, outermost first: ``eta`` about -y, then ``phi`` about -z;
* detector circles, outermost first: ``nu`` about -z, then ``delta`` about -y;
* detector rows run along -z and columns along +y when all detector angles
  are zero; ``cch = (row, col)`` is the direct-beam pixel at zero angles;
* Q = k_f - k_i is returned in the sample frame (sample rotations undone).

Units: energies in keV, lengths in Angstrom (wavelength, d-spacing), Q in
1/Angstrom, angles in degrees, detector distance / pixel / particle size in
metres.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = [
    "HC_KEV_ANGSTROM",
    "wavelength",
    "energy_from_wavelength",
    "bragg_angle",
    "q_from_d",
    "d_from_q",
    "rotation_matrix",
    "sample_rotation",
    "detector_rotation",
    "Geometry",
    "oversampling_detector",
    "oversampling_rocking",
    "rocking_step",
]

#: h*c in keV*Angstrom (CODATA 2018).
HC_KEV_ANGSTROM = 12.398419843320026

_AXES = {
    "x+": np.array([1.0, 0.0, 0.0]),
    "x-": np.array([-1.0, 0.0, 0.0]),
    "y+": np.array([0.0, 1.0, 0.0]),
    "y-": np.array([0.0, -1.0, 0.0]),
    "z+": np.array([0.0, 0.0, 1.0]),
    "z-": np.array([0.0, 0.0, -1.0]),
}


def wavelength(energy_kev: float) -> float:
    """X-ray wavelength in Angstrom for a photon energy in keV.

    >>> round(wavelength(8.33), 4)
    1.4884
    """
    energy_kev = float(energy_kev)
    if not energy_kev > 0:
        raise ValueError(f"energy_kev must be > 0 keV, got {energy_kev!r}")
    return HC_KEV_ANGSTROM / energy_kev


def energy_from_wavelength(wavelength_angstrom: float) -> float:
    """Photon energy in keV for a wavelength in Angstrom."""
    wavelength_angstrom = float(wavelength_angstrom)
    if not wavelength_angstrom > 0:
        raise ValueError(f"wavelength must be > 0 Angstrom, got {wavelength_angstrom!r}")
    return HC_KEV_ANGSTROM / wavelength_angstrom


def bragg_angle(d_spacing: float, energy_kev: float) -> float:
    """Bragg angle theta in degrees for a d-spacing (Angstrom) at an energy (keV).

    Raises ``ValueError`` when the reflection is not reachable
    (``lambda > 2 d``).
    """
    d_spacing = float(d_spacing)
    if not d_spacing > 0:
        raise ValueError(f"d_spacing must be > 0 Angstrom, got {d_spacing!r}")
    s = wavelength(energy_kev) / (2.0 * d_spacing)
    if s > 1.0:
        raise ValueError(
            f"reflection with d = {d_spacing} A is unreachable at {energy_kev} keV "
            f"(lambda / 2d = {s:.3f} > 1)"
        )
    return float(np.degrees(np.arcsin(s)))


def q_from_d(d_spacing):
    """|Q| in 1/Angstrom from a d-spacing in Angstrom (``2 pi / d``)."""
    return 2.0 * np.pi / np.asarray(d_spacing, dtype=float)


def d_from_q(q):
    """d-spacing in Angstrom from |Q| in 1/Angstrom (``2 pi / |Q|``)."""
    return 2.0 * np.pi / np.asarray(q, dtype=float)


def rotation_matrix(axis: str, angle_deg) -> np.ndarray:
    """Right-handed rotation about a signed lab axis (``'y-'``, ``'z+'``, ...).

    ``angle_deg`` may be a scalar (returns ``(3, 3)``) or an array of shape
    ``(n,)`` (returns ``(n, 3, 3)``).
    """
    u = _AXES[axis]
    a = np.radians(np.asarray(angle_deg, dtype=float))
    c, s = np.cos(a), np.sin(a)
    ux = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    outer = np.outer(u, u)
    c = c[..., None, None]
    s = s[..., None, None]
    return c * np.eye(3) + s * ux + (1.0 - c) * outer


def sample_rotation(eta, phi=0.0) -> np.ndarray:
    """Sample-to-lab rotation ``R_eta(-y) @ R_phi(-z)`` (outermost first)."""
    return rotation_matrix("y-", eta) @ rotation_matrix("z-", phi)


def detector_rotation(delta, nu=0.0) -> np.ndarray:
    """Detector-arm rotation ``R_nu(-z) @ R_delta(-y)`` (outermost first)."""
    return rotation_matrix("z-", nu) @ rotation_matrix("y-", delta)


@dataclass(frozen=True)
class Geometry:
    """An ID01-like diffractometer with a flat area detector.

    Parameters
    ----------
    energy_kev : float
        Photon energy in keV.
    distance_m : float
        Sample-to-detector distance in metres (to the direct-beam pixel).
    pixel_m : float or (float, float)
        Pixel size in metres, ``(row, col)`` if not square.
    cch : (float, float)
        Direct-beam pixel ``(row, col)`` with all detector angles at zero, in
        the coordinates of the frame array actually passed.

    Examples
    --------
    >>> g = Geometry(8.33, 0.5, 55e-6, (256, 256))
    >>> q = g.q_frame((512, 512), eta=10.0, delta=20.0)
    >>> q.shape
    (3, 512, 512)
    """

    energy_kev: float
    distance_m: float
    pixel_m: float | tuple[float, float]
    cch: tuple[float, float]

    def __post_init__(self):
        if not float(self.energy_kev) > 0:
            raise ValueError(f"energy_kev must be > 0, got {self.energy_kev!r}")
        if not float(self.distance_m) > 0:
            raise ValueError(f"distance_m must be > 0, got {self.distance_m!r}")
        pr, pc = self.pixel_size
        if not (pr > 0 and pc > 0):
            raise ValueError(f"pixel_m must be > 0, got {self.pixel_m!r}")
        if len(tuple(self.cch)) != 2:
            raise ValueError(f"cch must be (row, col), got {self.cch!r}")

    @property
    def wavelength(self) -> float:
        """Wavelength in Angstrom."""
        return wavelength(self.energy_kev)

    @property
    def k(self) -> float:
        """Wave number ``2 pi / lambda`` in 1/Angstrom."""
        return 2.0 * np.pi / self.wavelength

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Pixel size ``(row, col)`` in metres."""
        p = np.atleast_1d(np.asarray(self.pixel_m, dtype=float))
        return (float(p[0]), float(p[-1]))

    def replace(self, **changes) -> Geometry:
        """A copy with some fields changed (e.g. ``cch`` after a crop)."""
        return dataclasses.replace(self, **changes)

    def crop(self, row0: int, col0: int) -> Geometry:
        """Geometry for frames cropped to start at ``(row0, col0)``."""
        return self.replace(cch=(self.cch[0] - row0, self.cch[1] - col0))

    # -- core transforms --------------------------------------------------
    def pixel_directions(self, rows, cols, delta, nu=0.0) -> np.ndarray:
        """Unit vectors (lab frame) from the sample to detector pixels.

        ``rows`` and ``cols`` are broadcastable arrays of pixel coordinates
        (floats allowed); returns an array of shape ``(3,) + broadcast``.
        """
        rows = np.asarray(rows, dtype=float)
        cols = np.asarray(cols, dtype=float)
        pr, pc = self.pixel_size
        # detector at zero angles: distance along +x, rows along -z, cols along +y
        dz = -(rows - self.cch[0]) * pr
        dy = (cols - self.cch[1]) * pc
        dx = np.full(np.broadcast(rows, cols).shape, float(self.distance_m))
        v = np.stack(np.broadcast_arrays(dx, dy, dz))
        v = np.tensordot(detector_rotation(delta, nu), v, axes=(1, 0))
        return v / np.linalg.norm(v, axis=0)

    def q_lab(self, rows, cols, delta, nu=0.0) -> np.ndarray:
        """Q = k_f - k_i in the lab frame (1/Angstrom), shape ``(3,) + broadcast``."""
        kf = self.k * self.pixel_directions(rows, cols, delta, nu)
        kf[0] -= self.k
        return kf

    def q_pixels(self, rows, cols, eta, delta, nu=0.0, phi=0.0) -> np.ndarray:
        """Q in the sample frame for arbitrary pixel coordinates."""
        q = self.q_lab(rows, cols, delta, nu)
        r_inv = sample_rotation(eta, phi).T
        return np.tensordot(r_inv, q, axes=(1, 0))

    def q_frame(self, shape, eta, delta, nu=0.0, phi=0.0) -> np.ndarray:
        """Q of every pixel of a frame, sample frame.

        Parameters
        ----------
        shape : (int, int)
            Frame shape ``(rows, cols)``.
        eta, delta, nu, phi : float
            Angles in degrees.

        Returns
        -------
        ndarray, shape (3, rows, cols)
            ``(Qx, Qy, Qz)`` in 1/Angstrom.
        """
        nrows, ncols = (int(s) for s in shape)
        if nrows < 1 or ncols < 1:
            raise ValueError(f"shape must be positive (rows, cols), got {shape!r}")
        rows = np.arange(nrows, dtype=float)[:, None]
        cols = np.arange(ncols, dtype=float)[None, :]
        return self.q_pixels(rows, cols, eta, delta, nu, phi)

    def pixel_of_q(self, q_sample, eta, nu=None, delta=None, phi=0.0):
        """Detector pixel ``(row, col)`` where a sample-frame Q would land.

        The detector angles must be given; returns float pixel coordinates
        (possibly outside the frame) and the mismatch ``| |k_f| - k |`` in
        1/Angstrom, which is 0 only when the Bragg condition is met exactly.
        """
        if delta is None:
            raise ValueError("delta is required")
        nu = 0.0 if nu is None else nu
        q_lab = sample_rotation(eta, phi) @ np.asarray(q_sample, dtype=float)
        kf = q_lab + np.array([self.k, 0.0, 0.0])
        mismatch = abs(np.linalg.norm(kf) - self.k)
        v = detector_rotation(delta, nu).T @ kf  # detector frame at zero angles
        if v[0] <= 0:
            raise ValueError("scattered beam does not reach the detector plane")
        scale = float(self.distance_m) / v[0]
        pr, pc = self.pixel_size
        row = self.cch[0] - v[2] * scale / pr
        col = self.cch[1] + v[1] * scale / pc
        return float(row), float(col), float(mismatch)

    def detector_angles_for(self, q_sample, eta, phi=0.0, nu=None):
        """Detector angles ``(delta, nu)`` putting a sample-frame Q on the direct-beam pixel.

        Requires the Bragg condition to be reachable at this ``eta``: the
        returned angles are those of ``k_f = R(eta, phi) Q + k_i`` (whose
        length generally differs from k unless eta is on the rocking curve).
        """
        q_lab = sample_rotation(eta, phi) @ np.asarray(q_sample, dtype=float)
        kf = q_lab + np.array([self.k, 0.0, 0.0])
        kf = kf / np.linalg.norm(kf)
        # kf = R_nu(-z) R_delta(-y) x = (cos nu cos d, -sin nu cos d, sin d)
        delta = np.degrees(np.arcsin(np.clip(kf[2], -1, 1)))
        nu_c = np.degrees(np.arctan2(-kf[1], kf[0]))
        return float(delta), float(nu_c if nu is None else nu)


def oversampling_detector(energy_kev: float, distance_m: float, pixel_m: float, size_m: float) -> float:
    """Oversampling ratio in the detector plane, ``lambda * D / (p * size)``.

    >>> round(oversampling_detector(13.0, 1.4, 55e-6, 800e-9), 2)
    3.03
    """
    for name, v in (("distance_m", distance_m), ("pixel_m", pixel_m), ("size_m", size_m)):
        if not float(v) > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")
    lam_m = wavelength(energy_kev) * 1e-10
    return float(lam_m * distance_m / (pixel_m * size_m))


def oversampling_rocking(d_spacing: float, size_m: float, step_deg: float) -> float:
    """Oversampling along the rocking direction, ``d / (size * d_eta)``.

    ``d_spacing`` in Angstrom, ``size_m`` in metres, ``step_deg`` in degrees.
    """
    if not float(d_spacing) > 0:
        raise ValueError(f"d_spacing must be > 0, got {d_spacing!r}")
    if not float(size_m) > 0:
        raise ValueError(f"size_m must be > 0, got {size_m!r}")
    if not abs(float(step_deg)) > 0:
        raise ValueError(f"step_deg must be non-zero, got {step_deg!r}")
    return float(d_spacing * 1e-10 / (size_m * abs(np.radians(step_deg))))


def rocking_step(d_spacing: float, size_m: float, oversampling: float = 2.0) -> float:
    """Largest rocking step (degrees) giving the requested rocking oversampling.

    >>> round(rocking_step(8.17 / 4, 800e-9, 2.0), 4)
    0.0073
    """
    if not float(oversampling) > 0:
        raise ValueError(f"oversampling must be > 0, got {oversampling!r}")
    if not float(d_spacing) > 0 or not float(size_m) > 0:
        raise ValueError("d_spacing and size_m must be > 0")
    return float(np.degrees(d_spacing * 1e-10 / (size_m * oversampling)))
