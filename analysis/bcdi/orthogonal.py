"""Detector frame -> orthonormal sample frame for BCDI objects.

A reconstruction lives on the detector-conjugate grid: array axes
``(rocking step, detector row, detector column)``. Around the central voxel
the scattering vector is linear in the indices, ``Q = Q0 + B n`` with the
columns of ``B`` the derivatives of Q (sample frame, ``braggscope.core.geometry``)
with respect to eta step, row and column. With the physical DFT convention
``exp(+2 pi i n.m / N)`` the real-space position of object index ``m``
(centred) is ``r = T m`` with ``T = 2 pi B^-T diag(1/N)`` (Angstrom).

:func:`orthogonalize` interpolates the object (``map_coordinates``, linear)
onto a regular grid of the sample frame with axes ``(z, y, x)`` (sample
frame of docs/conventions.md: for a symmetric reflection Q is along +z) and a
cubic voxel in nm.

Closed forms (checked in the tests): the spacing of the real-space planes
conjugate to each reciprocal axis, ``2 pi / (N_i |b_i|)``, is
``lambda D / (N p)`` for the detector axes and ``2 pi / (|G| * range)`` for
the rocking axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from braggscope.core.geometry import Geometry

__all__ = ["DetectorFrame", "detector_frame", "orthogonalize", "support_extent_shape", "OrthoObject"]


@dataclass(frozen=True)
class DetectorFrame:
    """Linearised reciprocal and real-space bases of a detector-frame array.

    Attributes
    ----------
    shape : (int, int, int)
        ``(n_eta, rows, cols)``.
    q_center : ndarray (3,)
        Q of the central voxel, sample frame, 1/Angstrom (the Bragg vector G
        when the peak is centred).
    b : ndarray (3, 3)
        Columns: dQ per eta step, per row, per column (1/Angstrom).
    t : ndarray (3, 3)
        Columns: real-space displacement per object index along each array
        axis (Angstrom), ``2 pi B^-T / N``.
    """

    shape: tuple
    q_center: np.ndarray
    b: np.ndarray
    t: np.ndarray

    @property
    def plane_spacing_nm(self) -> np.ndarray:
        """``2 pi / (N_i |b_i|)`` per array axis, in nm (the closed-form voxel sizes)."""
        return 2 * np.pi / (np.asarray(self.shape) * np.linalg.norm(self.b, axis=0)) / 10.0

    @property
    def g_unit(self) -> np.ndarray:
        """Unit vector of ``q_center`` (sample frame)."""
        return self.q_center / np.linalg.norm(self.q_center)


def detector_frame(shape, geometry: Geometry, eta_center, eta_step, delta, nu=0.0, phi=0.0) -> DetectorFrame:
    """Bases of a detector-frame array from the diffractometer geometry.

    Parameters
    ----------
    shape : (int, int, int)
        ``(n_eta, rows, cols)`` of the (cropped, padded) data.
    geometry : braggscope.core.geometry.Geometry
        With ``cch`` in the coordinates of the cropped frames.
    eta_center : float
        Eta (degrees) of the central rocking index ``n_eta // 2``.
    eta_step : float
        Rocking step (degrees, non-zero).
    delta, nu, phi : float
        Angles (degrees).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 2:
        raise ValueError(f"shape must be (n_eta, rows, cols) >= 2, got {shape}")
    if not abs(float(eta_step)) > 0:
        raise ValueError(f"eta_step must be non-zero, got {eta_step!r}")
    r0, c0 = shape[1] // 2, shape[2] // 2

    def q(e, r, c):
        return geometry.q_pixels(np.float64(r), np.float64(c), e, delta, nu, phi).ravel()

    q0 = q(eta_center, r0, c0)
    h = 0.5
    b = np.stack([
        (q(eta_center + h * eta_step, r0, c0) - q(eta_center - h * eta_step, r0, c0)) / (2 * h),
        (q(eta_center, r0 + h, c0) - q(eta_center, r0 - h, c0)) / (2 * h),
        (q(eta_center, r0, c0 + h) - q(eta_center, r0, c0 - h)) / (2 * h),
    ], axis=1)
    t = 2 * np.pi * np.linalg.inv(b).T / np.asarray(shape, dtype=float)[None, :]
    return DetectorFrame(shape=shape, q_center=q0, b=b, t=t)


@dataclass
class OrthoObject:
    """An object on an orthonormal sample-frame grid.

    Attributes
    ----------
    obj : ndarray, complex64, (nz, ny, nx)
        Axes (z, y, x) of the sample frame, centred.
    voxel_nm : float
        Cubic voxel size in nm.
    q_bragg : ndarray (3,)
        Bragg vector (x, y, z) in the sample frame, 1/Angstrom.
    axes : str
        ``"z,y,x (sample frame)"``.
    """

    obj: np.ndarray
    voxel_nm: float
    q_bragg: np.ndarray
    axes: str = "z,y,x (sample frame)"

    @property
    def g_unit_zyx(self) -> np.ndarray:
        """Unit vector of G in the array axis order (z, y, x)."""
        g = self.q_bragg / np.linalg.norm(self.q_bragg)
        return g[::-1].copy()


def support_extent_shape(support, frame: DetectorFrame, voxel_nm: float, margin: int = 4) -> tuple:
    """Output shape (z, y, x) covering a detector-frame support plus ``margin`` voxels per side."""
    m = np.argwhere(np.asarray(support, bool)).T - (np.asarray(frame.shape)[:, None] // 2)
    if m.size == 0:
        raise ValueError("support is empty")
    r = (frame.t / 10.0) @ m  # nm, (x, y, z)
    half = np.abs(r).max(axis=1) + np.abs(frame.t / 10.0).sum(axis=1)
    return tuple(int(2 * (np.ceil(h / voxel_nm) + margin)) for h in half[::-1])


def orthogonalize(obj, frame: DetectorFrame, *, voxel_nm: float | None = None, shape=None) -> OrthoObject:
    """Interpolate a detector-frame object onto a cubic sample-frame grid.

    Parameters
    ----------
    obj : ndarray (n_eta, rows, cols)
        Complex (or real) object, centred, on the grid of ``frame``.
    frame : DetectorFrame
    voxel_nm : float, optional
        Output voxel (nm); default the smallest of ``frame.plane_spacing_nm``.
    shape : (int, int, int), optional
        Output shape (z, y, x); default: the bounding box of the input grid.

    Returns
    -------
    OrthoObject
    """
    from scipy.ndimage import map_coordinates

    obj = np.asarray(obj)
    if obj.shape != frame.shape:
        raise ValueError(f"obj shape {obj.shape} differs from the frame shape {frame.shape}")
    v = float(np.min(frame.plane_spacing_nm)) if voxel_nm is None else float(voxel_nm)
    if not v > 0:
        raise ValueError(f"voxel_nm must be > 0, got {voxel_nm!r}")
    t_nm = frame.t / 10.0
    if shape is None:
        half = 0.5 * np.abs(t_nm) @ np.asarray(frame.shape, dtype=float)  # (x, y, z) half extent
        shape = tuple(int(2 * np.ceil(h / v)) for h in half[::-1])
    shape = tuple(int(s) for s in shape)
    nz, ny, nx = shape
    z, y, x = (np.indices(shape, dtype=np.float64).reshape(3, -1) - np.array([[nz // 2], [ny // 2], [nx // 2]])) * v
    r = np.stack([x, y, z])  # sample frame, nm
    m = np.linalg.solve(t_nm, r) + (np.asarray(frame.shape)[:, None] // 2)
    out = np.zeros(int(np.prod(shape)), dtype=np.complex64 if np.iscomplexobj(obj) else np.float32)
    if np.iscomplexobj(obj):
        out.real = map_coordinates(obj.real, m, order=1, cval=0.0)
        out.imag = map_coordinates(obj.imag, m, order=1, cval=0.0)
    else:
        out[:] = map_coordinates(obj, m, order=1, cval=0.0)
    return OrthoObject(obj=out.reshape(shape), voxel_nm=v, q_bragg=frame.q_center.copy())
