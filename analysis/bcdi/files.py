"""BCDI exports: CXI/HDF5, npz, VTK ``.vti`` (ParaView) and figures.

``write_vti`` writes the VTK XML ImageData format itself (raw appended binary,
little-endian, UInt64 headers): point arrays ``amplitude``, ``support``,
``phase`` (rad), ``displacement`` (nm), ``strain`` (dimensionless) and
``microstrain``; field data ``voxel_size_nm`` and ``q_bragg`` (1/Angstrom).
Arrays are ``(z, y, x)`` in memory (x fastest), matching VTK point order.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

__all__ = ["write_cxi", "write_npz", "write_vti", "read_vti", "plot_isosurface", "plot_strain_slices",
           "strain_fields"]

_VTK_TYPES = {np.dtype("float32"): "Float32", np.dtype("float64"): "Float64", np.dtype("uint8"): "UInt8",
              np.dtype("int32"): "Int32"}
_NP_TYPES = {v: k for k, v in _VTK_TYPES.items()}


def strain_fields(strain_result) -> dict:
    """Named arrays of a :class:`~braggscope.analysis.bcdi.strain.StrainResult` for export."""
    s = strain_result
    return {
        "amplitude": s.amplitude.astype(np.float32),
        "support": s.support.astype(np.uint8),
        "phase": s.phase.astype(np.float32),
        "displacement": s.displacement.astype(np.float32),
        "strain": s.strain.astype(np.float32),
        "microstrain": (s.strain * 1e6).astype(np.float32),
    }


def write_vti(path, fields: dict, *, voxel_nm, q_bragg, origin=(0.0, 0.0, 0.0)) -> Path:
    """Write 3D arrays as a VTK XML ImageData file for ParaView.

    Parameters
    ----------
    path : path-like
        Output ``.vti`` file (overwritten).
    fields : dict of str -> ndarray
        Arrays of one shape ``(nz, ny, nx)``; bool is stored as UInt8.
    voxel_nm : float or (float, float, float)
        Voxel size (nm) along (z, y, x).
    q_bragg : sequence of float
        Bragg vector (1/Angstrom), stored as field data.
    origin : (float, float, float)
        Origin (x, y, z) in nm.
    """
    path = Path(path)
    if not fields:
        raise ValueError("fields must not be empty")
    shapes = {np.shape(a) for a in fields.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"fields must be 3D arrays of one shape, got shapes {shapes}")
    nz, ny, nx = next(iter(shapes))
    vz, vy, vx = np.broadcast_to(np.asarray(voxel_nm, dtype=float), (3,))
    if not min(vz, vy, vx) > 0:
        raise ValueError(f"voxel_nm must be > 0, got {voxel_nm!r}")
    arrays = []
    for name, a in fields.items():
        a = np.asarray(a)
        if a.dtype == bool:
            a = a.astype(np.uint8)
        if a.dtype not in _VTK_TYPES:
            a = a.astype(np.float32)
        arrays.append((name, np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))))
    field_arrays = [("voxel_size_nm", np.array([vx, vy, vz], "<f8")),
                    ("q_bragg", np.asarray(q_bragg, dtype="<f8").ravel())]
    xml, offset, blobs = [], 0, []

    def data_array(name, a, ncomp=None, ntuples=None):
        nonlocal offset
        attrs = f'type="{_VTK_TYPES[np.dtype(a.dtype.name)]}" Name={quoteattr(name)} format="appended" offset="{offset}"'
        if ntuples is not None:
            attrs += f' NumberOfTuples="{ntuples}"'
        raw = a.tobytes()
        blobs.append(np.uint64(len(raw)).tobytes() + raw)
        offset += 8 + len(raw)
        return f"<DataArray {attrs}/>"

    ext = f"0 {nx - 1} 0 {ny - 1} 0 {nz - 1}"
    xml.append('<?xml version="1.0"?>')
    xml.append('<VTKFile type="ImageData" version="1.0" byte_order="LittleEndian" header_type="UInt64">')
    xml.append(f'<ImageData WholeExtent="{ext}" Origin="{origin[0]} {origin[1]} {origin[2]}" '
               f'Spacing="{vx} {vy} {vz}">')
    xml.append("<FieldData>")
    for name, a in field_arrays:
        xml.append(data_array(name, a, ntuples=a.size))
    xml.append("</FieldData>")
    xml.append(f'<Piece Extent="{ext}">')
    xml.append(f'<PointData Scalars="{arrays[0][0]}">')
    for name, a in arrays:
        xml.append(data_array(name, a))
    xml.append("</PointData>")
    xml.append("</Piece>")
    xml.append("</ImageData>")
    xml.append('<AppendedData encoding="raw">')
    with open(path, "wb") as f:
        f.write(("\n".join(xml) + "\n_").encode())
        for b in blobs:
            f.write(b)
        f.write(b"\n</AppendedData>\n</VTKFile>\n")
    return path


def read_vti(path) -> dict:
    """Read a ``.vti`` written by :func:`write_vti` (raw appended, UInt64 headers).

    Returns a dict of arrays ``(nz, ny, nx)`` plus ``"_spacing"`` (x, y, z) and
    the field data arrays. Written from the VTK file-format specification.
    """
    import xml.etree.ElementTree as ET

    raw = Path(path).read_bytes()
    start = raw.index(b'<AppendedData encoding="raw">')
    data_start = raw.index(b"_", start) + 1
    head = raw[:start].decode() + "</VTKFile>"
    root = ET.fromstring(head)
    if root.get("header_type") != "UInt64" or root.get("byte_order") != "LittleEndian":
        raise ValueError(f"{path}: only LittleEndian UInt64-header files are supported")
    img = root.find("ImageData")
    x0, x1, y0, y1, z0, z1 = (int(v) for v in img.get("WholeExtent").split())
    shape = (z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    out = {"_spacing": tuple(float(v) for v in img.get("Spacing").split())}
    for da in root.iter("DataArray"):
        off = data_start + int(da.get("offset"))
        n = int(np.frombuffer(raw[off:off + 8], "<u8")[0])
        a = np.frombuffer(raw[off + 8:off + 8 + n], _NP_TYPES[da.get("type")].newbyteorder("<"))
        out[da.get("Name")] = a if da.get("NumberOfTuples") else a.reshape(shape)
    return out


def write_npz(path, fields: dict, **params) -> Path:
    """Save arrays and parameters (JSON-able values as a ``params`` JSON string) to ``.npz``."""
    path = Path(path)
    np.savez_compressed(path, **fields, params=np.array(json.dumps(_jsonable(params))))
    return path


def write_cxi(path, obj, support, *, params: dict, fields: dict | None = None, modes=None,
              intensity=None, mask=None) -> Path:
    """Write a CXI-style HDF5 file of the reconstruction.

    Layout: ``/cxi_version``; ``/entry_1/image_1/data`` (complex object),
    ``mask`` (support), ``process_1/configuration/*`` (all parameters, the
    recipe, the per-run metrics as JSON), ``/entry_1/image_1/modes`` (aligned
    kept runs) and ``mode_fraction``; ``/entry_1/result_1/*`` the exported
    fields; ``/entry_1/data_1/data`` and ``mask`` the phased intensity.
    """
    import h5py

    path = Path(path)
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 150
        e = f.create_group("entry_1")
        e["program_name"] = "braggscope"
        img = e.create_group("image_1")
        img.create_dataset("data", data=np.asarray(obj, np.complex64), compression="gzip")
        img.create_dataset("mask", data=np.asarray(support, bool), compression="gzip")
        img["is_fft_shifted"] = 0
        cfg = img.create_group("process_1/configuration")
        for k, v in _jsonable(params).items():
            cfg[k] = json.dumps(v) if isinstance(v, (dict, list)) or v is None else v
        if modes is not None:
            img.create_dataset("modes", data=np.stack([np.asarray(m, np.complex64) for m in modes]),
                               compression="gzip")
        if fields:
            res = e.create_group("result_1")
            for k, v in fields.items():
                res.create_dataset(k, data=v, compression="gzip")
        if intensity is not None:
            d = e.create_group("data_1")
            d.create_dataset("data", data=np.asarray(intensity, np.float32), compression="gzip")
            if mask is not None:
                d.create_dataset("mask", data=np.asarray(mask, bool), compression="gzip")
    return path


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# -- figures -------------------------------------------------------------------
def _filled(strain, valid):
    """Strain with NaNs replaced by the nearest valid value (for colouring surfaces)."""
    from scipy.ndimage import distance_transform_edt

    if not valid.any():
        return np.zeros_like(strain)
    idx = distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return strain[tuple(idx)]


def plot_isosurface(amplitude, strain, *, voxel_nm=1.0, level=0.3, ax=None, vmax=None, title=None):
    """Amplitude iso-surface coloured by strain (microstrain), Figure 7A/B style.

    Parameters
    ----------
    amplitude : ndarray (z, y, x)
        Normalised amplitude.
    strain : ndarray (z, y, x)
        Dimensionless strain (NaN allowed outside the particle).
    voxel_nm : float or sequence
        Voxel size (nm) along (z, y, x).
    level : float
        Iso-surface level (fraction of the maximum).
    vmax : float, optional
        Colour limit in microstrain (symmetric); default the 99th percentile.
    """
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from skimage.measure import marching_cubes

    spacing = tuple(np.broadcast_to(np.asarray(voxel_nm, dtype=float), (3,)))
    verts, faces, _, _ = marching_cubes(np.asarray(amplitude, float), level=level * float(np.max(amplitude)),
                                        spacing=spacing)
    valid = np.isfinite(strain)
    micro = _filled(np.where(valid, strain, 0.0), valid) * 1e6
    ijk = np.clip(np.round(verts / np.array(spacing)).astype(int), 0, np.array(amplitude.shape) - 1)
    vals = micro[tuple(ijk.T)][faces].mean(axis=1)
    if vmax is None:
        vmax = float(np.nanpercentile(np.abs(micro[valid]), 99)) if valid.any() else 1.0
    vmax = vmax or 1.0
    norm = plt.Normalize(-vmax, vmax)
    cmap = plt.get_cmap("RdBu_r")
    if ax is None:
        fig = plt.figure(figsize=(6, 5))
        ax = fig.add_subplot(projection="3d")
    # plot (x, y, z) from (z, y, x) vertices
    tri = verts[:, ::-1][faces]
    coll = Poly3DCollection(tri, facecolors=cmap(norm(vals)), edgecolor="none")
    ax.add_collection3d(coll)
    lo, hi = verts.min(axis=0)[::-1], verts.max(axis=0)[::-1]
    ax.set_xlim(lo[0], hi[0]); ax.set_ylim(lo[1], hi[1]); ax.set_zlim(lo[2], hi[2])
    ax.set_xlabel("x (nm)"); ax.set_ylabel("y (nm)"); ax.set_zlabel("z (nm)")
    ax.set_box_aspect(hi - lo)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    ax.figure.colorbar(sm, ax=ax, shrink=0.6, label="strain (microstrain)")
    if title:
        ax.set_title(title)
    return ax.figure


def plot_strain_slices(strain, *, voxel_nm=1.0, n_slices=4, axis=0, vmax=None, title=None):
    """Slices of the strain (microstrain) through the particle, Figure 7C/D style.

    Top row: three orthogonal central slices; bottom row: ``n_slices``
    slices along ``axis`` spread over the particle.
    """
    import matplotlib.pyplot as plt

    strain = np.asarray(strain, float) * 1e6
    valid = np.isfinite(strain)
    if not valid.any():
        raise ValueError("strain has no finite value")
    v = np.broadcast_to(np.asarray(voxel_nm, dtype=float), (3,))
    if vmax is None:
        vmax = float(np.nanpercentile(np.abs(strain), 99)) or 1.0
    idx = np.nonzero(valid)
    centre = [int(np.round(np.mean(i))) for i in idx]
    ncol = max(3, n_slices)
    fig, axes = plt.subplots(2, ncol, figsize=(3 * ncol, 6.5), squeeze=False, layout="constrained")
    names = ("z", "y", "x")
    im = None
    for k in range(3):
        sl = [slice(None)] * 3
        sl[k] = centre[k]
        img = strain[tuple(sl)]
        other = [a for a in range(3) if a != k]
        ext = (0, img.shape[1] * v[other[1]], img.shape[0] * v[other[0]], 0)
        im = axes[0, k].imshow(img, cmap="RdBu_r", vmin=-vmax, vmax=vmax, extent=ext)
        axes[0, k].set_title(f"{names[k]} = {centre[k]} (central)")
        axes[0, k].set_xlabel(f"{names[other[1]]} (nm)"); axes[0, k].set_ylabel(f"{names[other[0]]} (nm)")
    for k in range(3, ncol):
        axes[0, k].axis("off")
    lo, hi = idx[axis].min(), idx[axis].max()
    positions = np.linspace(lo + 0.15 * (hi - lo), hi - 0.15 * (hi - lo), n_slices).round().astype(int)
    other = [a for a in range(3) if a != axis]
    for k, p in enumerate(positions):
        img = np.take(strain, p, axis=axis)
        ext = (0, img.shape[1] * v[other[1]], img.shape[0] * v[other[0]], 0)
        axes[1, k].imshow(img, cmap="RdBu_r", vmin=-vmax, vmax=vmax, extent=ext)
        axes[1, k].set_title(f"{names[axis]} = {p * v[axis]:.0f} nm")
    for k in range(n_slices, ncol):
        axes[1, k].axis("off")
    fig.colorbar(im, ax=axes, shrink=0.6, label="strain along G (microstrain)")
    if title:
        fig.suptitle(title)
    return fig
