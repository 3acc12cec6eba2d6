"""A faceted sub-micrometre particle on a 3D voxel grid, for coherent diffraction (BCDI).

Its displacement field projected on the reflection's G feeds the coherent
forward model (:mod:`braggscope.simulators.bcdi_forward`); the preset is
:func:`braggscope.simulators.samples.lmno_particle`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BCDIParticle"]


@dataclass(frozen=True)
class BCDIParticle:
    """A faceted sub-micrometre particle for coherent diffraction.

    The displacement projected on G, ``u(r)`` (Angstrom), is::

        u = eps_core * z + (eps_shell - eps_core) * z * s**4
            + sum_k b_k * exp(-|r - r_k|**2 / (2 w_k**2))

    with ``s`` the normalized "octahedral radius" (1 on the facets) and
    ``z`` along G, i.e. a slightly different lattice parameter in the core and
    near the surface plus a few localized distortions (defects).

    Parameters
    ----------
    name : str
    size_m : float
        Vertex-to-vertex size of the particle (m) before truncation.
    lattice_a : float
        Cubic lattice parameter (Angstrom).
    hkl : (int, int, int)
        Reflection (Q along sample +z for hkl along [00l]).
    voxel_m : float
        Real-space voxel (m).
    shape : {"octahedron", "box", "sphere"}
        ``octahedron``: {111} facets, truncated by {100} at ``truncation``.
        ``box``: a rectangular box with edges ``box_m`` (for tests).
    truncation : float
        {100} truncation as a fraction of the half size.
    box_m : (float, float, float)
        Box edges (m) along sample x, y, z for ``shape="box"``.
    eps_core, eps_shell : float
        Strains (dimensionless) of the core and surface.
    defects : ndarray (k, 5)
        ``(x, y, z, w, b)`` in Angstrom: centre, width and displacement amplitude.
    center_um : (float, float)
        Position on the piezo grid (um) at ``eta0``.
    seed : int or None
    """

    name: str = "lmno_bcdi"
    size_m: float = 800e-9
    lattice_a: float = 8.17
    hkl: tuple[int, int, int] = (0, 0, 4)
    voxel_m: float = 20e-9
    shape: str = "octahedron"
    truncation: float = 0.8
    box_m: tuple[float, float, float] = (600e-9, 600e-9, 600e-9)
    eps_core: float = 0.0
    eps_shell: float = 3e-4
    defects: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    center_um: tuple[float, float] = (50.0, 50.0)
    seed: int | None = None
    kind: str = "bcdi"

    def __post_init__(self):
        if self.shape not in ("octahedron", "box", "sphere"):
            raise ValueError(f"shape must be 'octahedron', 'box' or 'sphere', got {self.shape!r}")
        if not (self.size_m > 0 and self.voxel_m > 0 and self.lattice_a > 0):
            raise ValueError("size_m, voxel_m and lattice_a must be > 0")
        if tuple(self.hkl) == (0, 0, 0):
            raise ValueError("hkl must not be (0, 0, 0)")

    @property
    def d_spacing(self) -> float:
        """d-spacing of the reflection (Angstrom)."""
        return float(self.lattice_a / np.linalg.norm(self.hkl))

    def q_nominal(self) -> np.ndarray:
        """G in the sample frame (1/Angstrom): along +z."""
        return np.array([0.0, 0.0, 2 * np.pi / self.d_spacing])

    def extent_m(self) -> np.ndarray:
        """Full extent (m) along sample x, y, z."""
        if self.shape == "box":
            return np.asarray(self.box_m, float)
        if self.shape == "octahedron":
            return np.full(3, self.size_m * min(1.0, self.truncation))
        return np.full(3, self.size_m)

    def voxel_grid(self, margin: int = 4):
        """The particle on a cubic voxel grid.

        Returns
        -------
        axes : tuple of 3 ndarray
            Voxel-centre coordinates (Angstrom) along sample x, y, z (centred on 0).
        rho : ndarray (nx, ny, nz), float
            Electron-density-like occupancy in [0, 1].
        u : ndarray (nx, ny, nz), float
            Displacement along G (Angstrom), 0 outside.
        """
        v = self.voxel_m * 1e10
        ext = self.extent_m() * 1e10
        n = [int(np.ceil(e / v)) + 2 * margin for e in ext]
        n = [k + (k % 2) for k in n]  # even sizes
        axes = tuple((np.arange(k) - k / 2 + 0.5) * v for k in n)
        x, y, z = np.meshgrid(*axes, indexing="ij")
        half = self.size_m * 1e10 / 2
        if self.shape == "octahedron":
            s = (np.abs(x) + np.abs(y) + np.abs(z)) / half
            t = self.truncation
            inside = (s <= 1.0) & (np.abs(x) <= t * half) & (np.abs(y) <= t * half) & (np.abs(z) <= t * half)
        elif self.shape == "box":
            bx, by, bz = (np.asarray(self.box_m) * 1e10) / 2
            s = np.maximum.reduce([np.abs(x) / bx, np.abs(y) / by, np.abs(z) / bz])
            inside = s <= 1.0
        else:
            s = np.sqrt(x**2 + y**2 + z**2) / half
            inside = s <= 1.0
        rho = inside.astype(float)
        u = self.eps_core * z + (self.eps_shell - self.eps_core) * z * np.clip(s, 0, 1) ** 4
        for dx, dy, dz, w, b in np.asarray(self.defects, float).reshape(-1, 5):
            u = u + b * np.exp(-((x - dx) ** 2 + (y - dy) ** 2 + (z - dz) ** 2) / (2 * w**2))
        return axes, rho, np.where(inside, u, 0.0)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": self.shape,
            "size_m": float(self.size_m),
            "lattice_a": float(self.lattice_a),
            "hkl": [int(h) for h in self.hkl],
            "reflection": "".join(str(int(h)) for h in self.hkl),
            "d_spacing": self.d_spacing,
            "voxel_m": float(self.voxel_m),
            "center_um": [float(c) for c in self.center_um],
            "eps_core": float(self.eps_core),
            "eps_shell": float(self.eps_shell),
            "defects": np.asarray(self.defects, float).tolist(),
            "seed": self.seed,
        }
