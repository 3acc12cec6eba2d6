"""The simulated crystal as the cell works: lattice parameters that follow the lithium, a front, a drift.

:func:`cell_sample` turns a pristine sample (the presets of :mod:`.samples`) and the cell's state
(:class:`.cell.CellState`) into the sample the beam sees now:

* every point's lithium content is the shell's behind the front and the core's ahead of it (a
  logistic step of width ``front_width``); the *depth* of a point is its distance to the particle's
  edge, normalised to 1 at the deepest point: in SXDM the lateral distance to the platelet's facets
  (lithium moves in the layers, across those facets), in BCDI the distance to the facets of the
  voxel particle. The front stands at the depth that puts the cell's shell fraction of the particle
  (by area, by volume) behind it;
* the reflection's d-spacing is scaled by ``lattice(x) / lattice(x_initial)`` of the material
  (:class:`.cell.Material`), so the Bragg peak moves with the lithium content; below the material's
  strain onset the local strain field of the crystal is amplified by ``strain_spread(x)``;
* :func:`drift_um` is how far the particle has moved: ``drift_um_per_h`` times the protocol's hours
  plus ``breathing_um`` per unit of lithium removed (the electrode swells and shrinks).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
from scipy import ndimage

from .cell import CellState, Material
from .crystals import Crystallite, SXDMSample
from .particle import BCDIParticle

__all__ = ["CellCrystallite", "CellParticle", "cell_sample", "drift_um", "front_depth", "logistic_shell"]

#: Points per axis of the grid a crystallite's depths are sampled on (quantiles of the shell).
DEPTH_GRID = 201


def logistic_shell(depth, front, width):
    """Weight of the shell (1 behind the front, 0 ahead) at normalised ``depth`` (0 at the edge, 1 inside)."""
    if front <= 0:
        return np.zeros_like(np.asarray(depth, float))
    if front >= 1:
        return np.ones_like(np.asarray(depth, float))
    return 1.0 / (1.0 + np.exp((np.asarray(depth, float) - front) / max(width, 1e-6)))


def front_depth(depths, fraction: float) -> float:
    """The depth with ``fraction`` of ``depths`` (the particle's points, equal weights) below it."""
    if fraction <= 0:
        return 0.0
    if fraction >= 1:
        return 1.0
    return float(np.quantile(np.asarray(depths, float), fraction))


@dataclass(frozen=True)
class CellCrystallite(Crystallite):
    """A :class:`~.crystals.Crystallite` whose d-spacing follows a lithium front (module docstring).

    Extra attributes: ``lattice_shell``/``lattice_core`` (the d-spacing scale of the shell and the
    core), ``spread_shell``/``spread_core`` (the local strain heterogeneity's amplification),
    ``front`` (normalised depth of the front), ``front_width``, ``depth_scale_um`` (the deepest
    point's distance to the edge), ``strain_scale`` (the largest local strain of the pristine crystal:
    its strain field divided by it is the pattern the spread amplifies).
    """

    lattice_shell: float = 1.0
    lattice_core: float = 1.0
    spread_shell: float = 0.0
    spread_core: float = 0.0
    front: float = 0.0
    front_width: float = 0.04
    depth_scale_um: float = 1.0
    strain_scale: float = 1.0

    def depth(self, x, y) -> np.ndarray:
        """Normalised depth (0 at the edge, 1 at the deepest point) at piezo points."""
        return np.clip(self.edge_distance(x, y) / self.depth_scale_um, 0.0, 1.0)

    def shell_weight(self, x, y) -> np.ndarray:
        """1 behind the front (the shell), 0 ahead of it."""
        return logistic_shell(self.depth(x, y), self.front, self.front_width)

    def fields(self, x, y) -> dict:
        f = super().fields(x, y)
        w = self.shell_weight(x, y)
        scale = w * self.lattice_shell + (1 - w) * self.lattice_core
        spread = w * self.spread_shell + (1 - w) * self.spread_core
        base = np.asarray(f["strain"], float)
        strain = (1 + base + spread * base / self.strain_scale) * scale - 1
        f["strain"] = strain
        f["d_spacing"] = self.d_spacing * (1 + strain)
        f["shell"] = w
        return f


@dataclass(frozen=True)
class CellParticle(BCDIParticle):
    """A :class:`~.particle.BCDIParticle` with a lithium front: the core's lattice is ``lattice_a``, the
    shell's ``lattice_a * shell_ratio``; the displacement along G gains the integral of the shell's
    strain along G (``u`` is what BCDI sees as phase)."""

    shell_ratio: float = 1.0
    front: float = 0.0
    front_width: float = 0.04

    def depth_grid(self, margin: int = 4):
        """Normalised depth (0 on the facets, 1 at the centre) on the voxel grid, and the support."""
        axes, rho, _ = BCDIParticle.voxel_grid(self, margin)
        inside = rho > 0.5
        distance = ndimage.distance_transform_edt(inside)
        depth = distance / max(float(distance.max()), 1e-9)
        return axes, rho, depth, inside

    def voxel_grid(self, margin: int = 4):
        axes, rho, u = BCDIParticle.voxel_grid(self, margin)
        if self.front <= 0 or self.shell_ratio == 1.0:
            return axes, rho, u
        _, _, depth, inside = self.depth_grid(margin)
        strain = (self.shell_ratio - 1.0) * logistic_shell(depth, self.front, self.front_width) * inside
        step = axes[2][1] - axes[2][0]
        extra = np.cumsum(strain, axis=2) * step
        centre = extra.shape[2] // 2
        extra -= extra[:, :, centre:centre + 1]
        return axes, rho, np.where(inside, u + extra, 0.0)


def cell_sample(pristine, material: Material, state: CellState, *, x_initial: float = 1.0,
                front_width: float = 0.04, depths: dict | None = None):
    """The sample ``pristine`` with the cell in ``state`` (module docstring).

    Parameters
    ----------
    pristine : SXDMSample or BCDIParticle
        Its lattice is the material's at ``x_initial``.
    material : Material
    state : CellState
        Shell and core lithium contents and the fraction behind the front.
    x_initial : float
    front_width : float
        Width of the front in normalised depth.
    depths : dict, optional
        A cache (crystallite name -> sorted depths) kept by the caller between calls.

    Returns
    -------
    SXDMSample or CellParticle
    """
    reference = float(material.lattice_parameter(x_initial))
    ratio_shell = float(material.lattice_parameter(state.x_shell)) / reference
    ratio_core = float(material.lattice_parameter(state.x_core)) / reference
    if isinstance(pristine, BCDIParticle):
        base = {f.name: getattr(pristine, f.name) for f in fields(BCDIParticle)}
        particle = CellParticle(**base, shell_ratio=ratio_shell / ratio_core, front_width=front_width)
        particle = replace(particle, lattice_a=pristine.lattice_a * ratio_core)
        key = f"bcdi:{pristine.name}"
        if depths is not None and key in depths:
            inside_depths = depths[key]
        else:
            _, _, depth, inside = particle.depth_grid()
            inside_depths = np.sort(depth[inside])
            if depths is not None:
                depths[key] = inside_depths
        return replace(particle, front=front_depth(inside_depths, state.front))
    spreads = (float(material.strain_spread(state.x_shell)), float(material.strain_spread(state.x_core)))
    crystallites = tuple(_cell_crystallite(c, (ratio_shell, ratio_core), spreads, state.front, front_width, depths)
                         for c in pristine.crystallites)
    return SXDMSample(pristine.name, crystallites, pristine.reflection, pristine.d_spacing, pristine.seed)


def _cell_crystallite(pristine: Crystallite, ratios, spreads, fraction, width, depths) -> CellCrystallite:
    base = {f.name: getattr(pristine, f.name) for f in fields(Crystallite)}
    key = f"sxdm:{pristine.name}"
    if depths is not None and key in depths:
        scale, sorted_depths, strain_scale = depths[key]
    else:
        r = pristine.extent_um()
        axis = np.linspace(-r, r, DEPTH_GRID)
        xx, yy = np.meshgrid(pristine.center_um[0] + axis, pristine.center_um[1] + axis)
        distance = pristine.edge_distance(xx, yy)
        inside = distance > 0
        scale = float(distance.max())
        sorted_depths = np.sort(distance[inside] / scale)
        strain_scale = max(float(np.abs(pristine.fields(xx, yy)["strain"][inside]).max()), 1e-6)
        if depths is not None:
            depths[key] = (scale, sorted_depths, strain_scale)
    return CellCrystallite(**base, lattice_shell=ratios[0], lattice_core=ratios[1], spread_shell=spreads[0],
                           spread_core=spreads[1], front=front_depth(sorted_depths, fraction), front_width=width,
                           depth_scale_um=scale, strain_scale=strain_scale)


def drift_um(state: CellState, *, drift_um_per_h=(0.0, 0.0, 0.0), breathing_um=(0.0, 0.0, 0.0),
             x_initial: float = 1.0) -> np.ndarray:
    """How far the particle has moved (x, y, z; um) with the protocol's time and the lithium removed."""
    hours = state.time_s / 3600.0
    removed = x_initial - state.lithium
    return np.asarray(drift_um_per_h, float) * hours + np.asarray(breathing_um, float) * removed
