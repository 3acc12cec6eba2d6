"""Sample models for the simulated beamline: crystals on the piezo grid.

Two kinds of sample:

* :class:`SXDMSample` - one or several :class:`Crystallite` objects, each a
  laterally extended crystal (convex faceted polygon or ellipse) with a
  thickness along the beam, smooth local d-spacing and lattice-tilt fields
  and intrinsic peak widths. Fields are analytic functions of the piezo
  position, so ground-truth maps can be evaluated on any grid.
* :class:`BCDIParticle` - a sub-micrometre faceted particle on a 3D voxel grid
  with a displacement field ``u`` (projected on the reflection's G), used by the
  coherent forward model (:mod:`braggscope.simulators.bcdi_forward`).

Conventions (docs/conventions.md): lengths of the piezo grid in
micrometres, d-spacings in Angstrom, tilts in degrees. The sample frame is the
diffractometer's sample frame (z = surface normal, x = beam direction at
eta = 0); piezo ``pix`` runs along sample x and ``piy`` along sample y. A local
tilt ``(tilt_x, tilt_y)`` rotates the reflection's Q right-handedly about the
sample x axis by ``tilt_x`` then about the sample y axis by ``tilt_y``, so a
positive ``tilt_y`` leans Q towards +x and a positive ``tilt_x`` towards -y.
Positions are those at the eccentricity reference angle ``eta0``; the
simulator moves them with :class:`braggscope.core.eccentricity.EccentricityModel`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Crystallite",
    "SXDMSample",
    "BCDIParticle",
    "tilt_rotation",
    "nmc622_single_crystal",
    "lno_cluster",
    "lmno_particle",
    "make_sample",
    "SAMPLE_NAMES",
]


def tilt_rotation(tilt_x_deg, tilt_y_deg) -> np.ndarray:
    """Rotation ``R_y(tilt_y) @ R_x(tilt_x)`` (right-handed, sample frame).

    Scalars give ``(3, 3)``; arrays of shape ``S`` give ``S + (3, 3)``.
    """
    a = np.radians(np.asarray(tilt_x_deg, dtype=float))
    b = np.radians(np.asarray(tilt_y_deg, dtype=float))
    ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
    z, o = np.zeros_like(a), np.ones_like(a)
    rx = np.stack([np.stack([o, z, z], -1), np.stack([z, ca, -sa], -1), np.stack([z, sa, ca], -1)], -2)
    z, o = np.zeros_like(b), np.ones_like(b)
    ry = np.stack([np.stack([cb, z, sb], -1), np.stack([z, o, z], -1), np.stack([-sb, z, cb], -1)], -2)
    return ry @ rx


@dataclass(frozen=True)
class Crystallite:
    """One crystal (grain) seen by SXDM.

    Parameters
    ----------
    name : str
        Label.
    center_um : (float, float)
        Centre ``(x, y)`` on the piezo grid (micrometres) at ``eta0``.
    d_spacing : float
        Nominal d-spacing of the reflection (Angstrom).
    vertices_um : ndarray (n, 2), optional
        Convex polygon (counter-clockwise) relative to the centre (um).
    semi_axes_um : (float, float), optional
        Ellipse semi-axes (um), used when ``vertices_um`` is None.
    angle_deg : float
        Ellipse rotation (degrees).
    thickness_um : float
        Path length through the crystal along the beam at its thickest (um);
        scales the diffracted intensity of each column.
    edge_soft_um : float
        Thickness ramps from 0 at the edge to ``thickness_um`` over this width.
    orientation_deg : (float, float)
        Nominal misorientation ``(tilt_x, tilt_y)`` of Q away from sample +z (deg).
    depth_um : float
        Depth of the crystal's top below the surface (um): the grazing beam
        reaches it ``depth_um / tan(eta)`` further downstream, so it appears
        shifted by ``-depth_um / tan(eta)`` in x.
    strain_bumps : ndarray (k, 4)
        Gaussian strain bumps ``(x, y, sigma_um, strain)`` relative to the centre.
    strain_gradient : (float, float)
        Linear strain gradient (1/um) along x and y.
    domains : ndarray (m, 4)
        Tilt sub-domains: seed points ``(x, y)`` relative to the centre and
        their tilts ``(tilt_x, tilt_y)`` in degrees (nearest seed wins).
    edge_tilt_deg, edge_width_um : float
        Extra tilt, leaning Q outwards, ``edge_tilt_deg * exp(-dist/edge_width)``
        with ``dist`` the distance to the edge (bending near facets).
    sigma_radial : float
        Intrinsic relative width of the peak along Q (sigma of |Q| / |Q|).
    sigma_angular_deg : float
        Intrinsic angular (mosaic) width across Q, sigma in degrees.
    scale : float
        Relative scattering power.
    """

    name: str
    center_um: tuple[float, float]
    d_spacing: float
    vertices_um: np.ndarray | None = None
    semi_axes_um: tuple[float, float] = (1.0, 1.0)
    angle_deg: float = 0.0
    thickness_um: float = 1.0
    edge_soft_um: float = 0.1
    orientation_deg: tuple[float, float] = (0.0, 0.0)
    depth_um: float = 0.0
    strain_bumps: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    strain_gradient: tuple[float, float] = (0.0, 0.0)
    domains: np.ndarray = field(default_factory=lambda: np.zeros((1, 4)))
    edge_tilt_deg: float = 0.0
    edge_width_um: float = 0.3
    sigma_radial: float = 5e-4
    sigma_angular_deg: float = 0.04
    scale: float = 1.0

    def __post_init__(self):
        if not self.d_spacing > 0:
            raise ValueError(f"d_spacing must be > 0 Angstrom, got {self.d_spacing!r}")
        if not self.thickness_um > 0:
            raise ValueError(f"thickness_um must be > 0, got {self.thickness_um!r}")
        if not (self.sigma_radial > 0 and self.sigma_angular_deg > 0):
            raise ValueError("sigma_radial and sigma_angular_deg must be > 0")

    # -- geometry of the lateral shape -------------------------------------
    def edge_distance(self, x, y) -> np.ndarray:
        """Signed distance (um) to the crystal's edge, > 0 inside."""
        px = np.asarray(x, float) - self.center_um[0]
        py = np.asarray(y, float) - self.center_um[1]
        if self.vertices_um is not None:
            v = np.asarray(self.vertices_um, float)
            e = np.roll(v, -1, axis=0) - v
            n = np.stack([e[:, 1], -e[:, 0]], axis=1)  # outward normals for CCW
            n /= np.linalg.norm(n, axis=1)[:, None]
            h = np.sum(n * v, axis=1)
            dist = h[:, None] - (n[:, 0, None] * px.ravel()[None] + n[:, 1, None] * py.ravel()[None])
            return dist.min(axis=0).reshape(px.shape)
        a, b = self.semi_axes_um
        c, s = np.cos(np.radians(self.angle_deg)), np.sin(np.radians(self.angle_deg))
        u, w = c * px + s * py, -s * px + c * py
        rho = np.sqrt((u / a) ** 2 + (w / b) ** 2)
        return (1.0 - rho) * min(a, b)

    def extent_um(self) -> float:
        """Radius (um) of a circle around the centre enclosing the crystal."""
        if self.vertices_um is not None:
            return float(np.max(np.linalg.norm(np.asarray(self.vertices_um), axis=1)))
        return float(max(self.semi_axes_um))

    # -- fields -------------------------------------------------------------
    def fields(self, x, y) -> dict:
        """Ground-truth fields at piezo points ``(x, y)`` (um, at ``eta0``).

        Returns
        -------
        dict
            ``support`` (bool), ``thickness_um``, ``d_spacing`` (Angstrom),
            ``strain`` (dimensionless, relative to ``self.d_spacing``),
            ``tilt_x``, ``tilt_y`` (deg, local tilt on top of the nominal
            orientation), all of the broadcast shape of ``x, y``.
        """
        x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        dist = self.edge_distance(x, y)
        support = dist > 0
        thickness = self.thickness_um * np.clip(dist / self.edge_soft_um, 0.0, 1.0)
        px, py = x - self.center_um[0], y - self.center_um[1]
        strain = self.strain_gradient[0] * px + self.strain_gradient[1] * py
        for bx, by, bs, ba in np.asarray(self.strain_bumps, float).reshape(-1, 4):
            strain = strain + ba * np.exp(-((px - bx) ** 2 + (py - by) ** 2) / (2 * bs**2))
        dom = np.asarray(self.domains, float).reshape(-1, 4)
        d2 = (px[..., None] - dom[:, 0]) ** 2 + (py[..., None] - dom[:, 1]) ** 2
        k = np.argmin(d2, axis=-1)
        tilt_x, tilt_y = dom[k, 2], dom[k, 3]
        if self.edge_tilt_deg:
            r = np.hypot(px, py) + 1e-12
            amp = self.edge_tilt_deg * np.exp(-np.clip(dist, 0, None) / self.edge_width_um)
            tilt_y = tilt_y + amp * px / r
            tilt_x = tilt_x - amp * py / r
        return {
            "support": support,
            "thickness_um": np.where(support, thickness, 0.0),
            "strain": strain,
            "d_spacing": self.d_spacing * (1.0 + strain),
            "tilt_x": tilt_x,
            "tilt_y": tilt_y,
        }

    def q_local(self, x, y) -> np.ndarray:
        """Local Q (sample frame, 1/Angstrom) at piezo points, shape ``(3,) + shape``."""
        f = self.fields(x, y)
        qn = self.q_nominal_direction()
        rot = tilt_rotation(f["tilt_x"], f["tilt_y"])
        direction = rot @ qn
        q = direction * (2 * np.pi / f["d_spacing"])[..., None]
        return np.moveaxis(q, -1, 0)

    def q_nominal_direction(self) -> np.ndarray:
        """Unit vector of the nominal Q (sample frame)."""
        return tilt_rotation(*self.orientation_deg) @ np.array([0.0, 0.0, 1.0])

    def q_nominal(self) -> np.ndarray:
        """Nominal Q vector (1/Angstrom, sample frame)."""
        return self.q_nominal_direction() * 2 * np.pi / self.d_spacing

    def to_dict(self) -> dict:
        """Plain-dict description (for ``truth()`` and start documents)."""
        return {
            "name": self.name,
            "center_um": [float(c) for c in self.center_um],
            "d_spacing": float(self.d_spacing),
            "thickness_um": float(self.thickness_um),
            "orientation_deg": [float(o) for o in self.orientation_deg],
            "depth_um": float(self.depth_um),
            "extent_um": self.extent_um(),
            "sigma_radial": float(self.sigma_radial),
            "sigma_angular_deg": float(self.sigma_angular_deg),
            "edge_tilt_deg": float(self.edge_tilt_deg),
            "scale": float(self.scale),
        }


@dataclass(frozen=True)
class SXDMSample:
    """A set of crystallites on the piezo grid, probed at one reflection.

    Parameters
    ----------
    name : str
        Preset name.
    crystallites : tuple of Crystallite
    reflection : str
        Miller indices label, e.g. ``"003"``.
    d_spacing : float
        Reference d-spacing (Angstrom) used to park the detector.
    seed : int or None
    """

    name: str
    crystallites: tuple
    reflection: str
    d_spacing: float
    seed: int | None = None
    kind: str = "sxdm"

    def truth_maps(self, x, y) -> dict:
        """Ground-truth maps on a piezo grid (positions at ``eta0``).

        Parameters
        ----------
        x, y : array_like, 1-D
            Grid axes in micrometres.

        Returns
        -------
        dict of ndarray (ny, nx)
            ``support`` (bool, any crystallite), ``crystallite`` (index of the
            thickest crystallite, -1 outside), ``thickness_um`` (summed),
            ``d_spacing``, ``strain`` (relative to that crystallite's nominal
            d), ``tilt_x``, ``tilt_y`` (deg, local tilt of that crystallite,
            nominal orientation excluded), ``qx``, ``qy``, ``qz`` (1/Angstrom),
            NaN outside the support.
        """
        xx, yy = np.meshgrid(np.asarray(x, float), np.asarray(y, float))
        out = {k: np.full(xx.shape, np.nan) for k in ("d_spacing", "strain", "tilt_x", "tilt_y", "qx", "qy", "qz")}
        best = np.zeros(xx.shape)
        index = np.full(xx.shape, -1, dtype=int)
        total = np.zeros(xx.shape)
        for i, c in enumerate(self.crystallites):
            f = c.fields(xx, yy)
            q = c.q_local(xx, yy)
            t = f["thickness_um"] * c.scale
            total += f["thickness_um"]
            win = f["support"] & (t > best)
            best = np.where(win, t, best)
            index[win] = i
            for k in ("d_spacing", "strain", "tilt_x", "tilt_y"):
                out[k][win] = f[k][win]
            for j, k in enumerate(("qx", "qy", "qz")):
                out[k][win] = q[j][win]
        out["support"] = index >= 0
        out["crystallite"] = index
        out["thickness_um"] = total
        return out

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "reflection": self.reflection,
            "d_spacing": float(self.d_spacing),
            "seed": self.seed,
            "crystallites": [c.to_dict() for c in self.crystallites],
        }


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


# -- presets ----------------------------------------------------------------
def _hexagon(radius_um: float, rng, jitter=0.12, angle0=None) -> np.ndarray:
    """A convex, slightly irregular hexagon (CCW) of given mean radius."""
    a0 = rng.uniform(0, np.pi / 3) if angle0 is None else angle0
    ang = a0 + np.arange(6) * np.pi / 3 + rng.uniform(-0.08, 0.08, 6)
    r = radius_um * (1 + rng.uniform(-jitter, jitter, 6))
    return np.stack([r * np.cos(ang), r * np.sin(ang)], axis=1)


def nmc622_single_crystal(seed: int = 0, center_um=(50.0, 50.0)) -> SXDMSample:
    """A 2-3 um faceted NMC622 single crystal probed at 003 (c ~ 14.22 A).

    Two or three tilt sub-domains (base tilts ~0.1-0.2 deg), tilts rising to
    ~0.5 deg at the edges, strain of a few hundred microstrain (smooth
    gradient plus bumps).
    """
    rng = np.random.default_rng(seed)
    c_axis = 14.22 + rng.uniform(-0.01, 0.01)
    radius = rng.uniform(1.2, 1.45)
    ndom = int(rng.integers(2, 4))
    dom_xy = rng.uniform(-0.7 * radius, 0.7 * radius, (ndom, 2))
    dom_tilt = rng.uniform(-0.18, 0.18, (ndom, 2))
    bumps = np.column_stack([
        rng.uniform(-0.6 * radius, 0.6 * radius, (3, 2)),
        rng.uniform(0.25, 0.5, 3),
        rng.uniform(200e-6, 600e-6, 3) * rng.choice([-1, 1], 3),
    ])
    cryst = Crystallite(
        name="nmc622",
        center_um=tuple(float(c) for c in center_um),
        d_spacing=c_axis / 3,
        vertices_um=_hexagon(radius, rng, jitter=0.08),
        thickness_um=rng.uniform(0.8, 1.2),
        edge_soft_um=0.15,
        strain_bumps=bumps,
        strain_gradient=tuple(rng.uniform(-150e-6, 150e-6, 2)),
        domains=np.column_stack([dom_xy, dom_tilt]),
        edge_tilt_deg=rng.uniform(0.25, 0.35),
        edge_width_um=0.3,
        sigma_radial=5e-4,
        sigma_angular_deg=0.04,
    )
    return SXDMSample("nmc622", (cryst,), "003", cryst.d_spacing, seed)


def lno_cluster(seed: int = 0, center_um=(50.0, 50.0), n: int = 6) -> SXDMSample:
    """Several LNO crystallites (003, c from ~14.04 to ~14.15 A).

    About half are aligned within ~0.3 deg (they diffract in the same rocking
    range but at different 2theta); the others are misoriented by 1-5 deg
    (diffracting elsewhere or not at all); some sit below the surface.
    """
    rng = np.random.default_rng(seed)
    cs = np.linspace(14.04, 14.15, n) + rng.uniform(-0.005, 0.005, n)
    rng.shuffle(cs)
    crystallites = []
    for i in range(n):
        misoriented = i >= (n + 1) // 2
        orient = (rng.uniform(1.0, 5.0, 2) * rng.choice([-1, 1], 2)) if misoriented else rng.uniform(-0.3, 0.3, 2)
        ang = 2 * np.pi * i / n + rng.uniform(-0.3, 0.3)
        dist = rng.uniform(0.8, 2.5)
        crystallites.append(Crystallite(
            name=f"lno{i}",
            center_um=(center_um[0] + dist * np.cos(ang), center_um[1] + dist * np.sin(ang)),
            d_spacing=float(cs[i] / 3),
            semi_axes_um=tuple(rng.uniform(0.3, 0.7, 2)),
            angle_deg=float(rng.uniform(0, 180)),
            thickness_um=float(rng.uniform(0.3, 0.7)),
            edge_soft_um=0.08,
            orientation_deg=tuple(float(o) for o in orient),
            depth_um=float(rng.choice([0.0, 0.0, rng.uniform(0.1, 0.5)])),
            strain_gradient=tuple(rng.uniform(-300e-6, 300e-6, 2)),
            domains=np.array([[0.0, 0.0, *rng.uniform(-0.05, 0.05, 2)]]),
            edge_tilt_deg=float(rng.uniform(0.05, 0.2)),
            edge_width_um=0.15,
            sigma_radial=8e-4,
            sigma_angular_deg=0.06,
        ))
    return SXDMSample("lno_cluster", tuple(crystallites), "003", float(np.mean(cs) / 3), seed)


def lmno_particle(seed: int = 0, center_um=(50.0, 50.0), voxel_m: float = 20e-9) -> BCDIParticle:
    """An 800 nm faceted LMNO particle ({111} facets, a = 8.17 A) at 004.

    Truncated octahedron with a surface strain shell and two localized
    displacement bumps (defects) for BCDI.
    """
    rng = np.random.default_rng(seed)
    half = 4000.0  # Angstrom
    defects = np.column_stack([
        rng.uniform(-0.3 * half, 0.3 * half, (2, 3)),
        rng.uniform(300, 600, 2),
        rng.uniform(0.3, 0.6, 2) * rng.choice([-1, 1], 2),
    ])
    return BCDIParticle(
        name="lmno_bcdi", size_m=800e-9, lattice_a=8.17, hkl=(0, 0, 4), voxel_m=voxel_m,
        shape="octahedron", truncation=0.8, eps_core=float(rng.uniform(-1e-4, 1e-4)),
        eps_shell=float(rng.uniform(2e-4, 4e-4)), defects=defects,
        center_um=tuple(float(c) for c in center_um), seed=seed,
    )


_PRESETS = {"nmc622": nmc622_single_crystal, "lno_cluster": lno_cluster, "lmno_bcdi": lmno_particle}
SAMPLE_NAMES = tuple(_PRESETS)


def make_sample(name: str, seed: int = 0, **kwargs):
    """A preset sample by name: ``"nmc622"``, ``"lno_cluster"`` or ``"lmno_bcdi"``."""
    if name not in _PRESETS:
        raise ValueError(f"sample must be one of {SAMPLE_NAMES}, got {name!r}")
    return _PRESETS[name](seed=0 if seed is None else int(seed), **kwargs)
