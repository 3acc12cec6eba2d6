"""BCDI results as a labelled ``xarray.Dataset``, like the SXDM maps.

:func:`to_dataset` turns a :class:`~braggscope.analysis.bcdi.strain.StrainResult`
(orthogonal sample frame) into a Dataset with coordinates ``z``, ``y``, ``x``
in nm (0 at the centre of the array) and the variables

- ``amplitude``: ``|obj|`` / max (normalised);
- ``support``: the object's support (bool);
- ``phase``: unwrapped phase (rad), NaN outside the support;
- ``displacement``: displacement along G (nm), NaN outside;
- ``strain``: strain along G (dimensionless), NaN outside the eroded support;
- ``d_spacing``: local ``d = (2 pi / |G|) (1 + strain)`` (Angstrom);

and the attributes ``voxel_size_nm`` (z, y, x), ``q_bragg`` (x, y, z, 1/Angstrom,
sample frame), ``g_unit_zyx``, ``d_spacing_A``, ``frame`` and ``units``. The
SXDM maps and these results are saved by the same NeXus writer
(:func:`braggscope.analysis.nexus.write_nxdata`) and read back with
:func:`braggscope.analysis.bcdi.files.load_result`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_dataset", "FIELDS"]

FIELDS = {
    "amplitude": ("", "amplitude, normalised to its maximum"),
    "support": ("", "support"),
    "phase": ("rad", "phase (physical sign, +G.u), offset removed"),
    "displacement": ("nm", "displacement along G"),
    "strain": ("", "strain along G (dimensionless)"),
    "d_spacing": ("Angstrom", "local d-spacing"),
}


def to_dataset(strain_result, *, q_bragg=None, attrs: dict | None = None):
    """Labelled Dataset of a post-processed BCDI reconstruction.

    Parameters
    ----------
    strain_result : StrainResult
        From :func:`~braggscope.analysis.bcdi.strain.strain_analysis`, arrays
        ``(z, y, x)`` of the orthogonal sample frame.
    q_bragg : sequence of 3 float, optional
        Bragg vector (x, y, z) in 1/Angstrom; default ``|G|`` along ``g_unit``.
    attrs : dict, optional
        Extra attributes (JSON-able).

    Returns
    -------
    xarray.Dataset
    """
    import xarray as xr

    s = strain_result
    if s.amplitude.ndim != 3:
        raise ValueError(f"strain_result arrays must be 3-D (z, y, x), got shape {s.amplitude.shape}")
    voxel = np.broadcast_to(np.asarray(s.voxel_nm, dtype=float), (3,))
    coords = {}
    for name, n, v in zip(("z", "y", "x"), s.amplitude.shape, voxel):
        coords[name] = (name, ((np.arange(n) - n // 2) * v).astype(np.float64),
                        {"units": "nm", "long_name": f"{name} (sample frame)"})
    d0 = 2 * np.pi / float(s.q_bragg_norm)
    values = {"amplitude": s.amplitude.astype(np.float32), "support": np.asarray(s.support, bool),
              "phase": s.phase.astype(np.float32), "displacement": s.displacement.astype(np.float32),
              "strain": s.strain.astype(np.float32),
              "d_spacing": (d0 * (1.0 + s.strain.astype(np.float64))).astype(np.float32)}
    data = {}
    for name, a in values.items():
        units, long_name = FIELDS[name]
        va = {"long_name": long_name}
        if units:
            va["units"] = units
        data[name] = (("z", "y", "x"), a, va)
    if q_bragg is None:
        q_bragg = float(s.q_bragg_norm) * np.asarray(s.g_unit, dtype=float)[::-1]
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update({
        "voxel_size_nm": [float(v) for v in voxel],
        "q_bragg": [float(q) for q in q_bragg],
        "q_bragg_units": "1/Angstrom, (x, y, z) sample frame",
        "g_unit_zyx": [float(g) for g in s.g_unit],
        "d_spacing_A": float(d0),
        "frame": "orthogonal sample frame, axes (z, y, x)",
        "units": "coordinates nm; phase rad; displacement nm; strain dimensionless; d_spacing Angstrom",
        "resolution_edge_nm": [float(r) for r in s.resolution_nm],
        **(attrs or {}),
    })
    return ds
