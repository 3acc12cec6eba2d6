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

The models live in :mod:`braggscope.simulators.crystals` (SXDM) and
:mod:`braggscope.simulators.particle` (BCDI); this module holds the presets
and re-exports the models.
"""

from __future__ import annotations

import numpy as np

from .crystals import Crystallite, SXDMSample, tilt_rotation
from .particle import BCDIParticle

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
