"""Crystals seen by SXDM: laterally extended grains with analytic strain and tilt fields.

An :class:`SXDMSample` is one or several :class:`Crystallite` objects on the
piezo grid, each a convex faceted polygon or an ellipse with a thickness along
the beam, smooth local d-spacing and lattice-tilt fields and intrinsic peak
widths. The fields are analytic functions of the piezo position, so
ground-truth maps can be evaluated on any grid. The presets are in
:mod:`braggscope.simulators.samples`; conventions (lengths in micrometres,
d-spacings in Angstrom, tilts in degrees, the sample frame) are described there
and in docs/conventions.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Crystallite", "SXDMSample", "tilt_rotation"]


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
