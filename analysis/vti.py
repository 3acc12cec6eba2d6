"""VTK XML ImageData (``.vti``) written and read without the ``vtk`` package.

ParaView, VisIt and VTK's own ``vtkXMLImageDataReader`` read these files: one ``<Piece>`` of point
arrays, field data, and the arrays appended after the XML as raw little-endian bytes compressed with
zlib in 32 KiB blocks (VTK's ``vtkZLibDataCompressor`` layout: a UInt64 header of the block count,
the block size, the last block's size and each compressed block's size). Arrays ``(nz, ny, nx)`` in
memory are x-fastest in VTK, as ``numpy.ravel`` writes them.

See: VTK File Formats, "XML File Formats" (https://docs.vtk.org/en/latest/design_documents/VTKFileFormats.html).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np

from braggscope.core.atomic import atomic_path

__all__ = ["write_vti", "read_vti"]

#: numpy dtype -> VTK type name
_VTK_TYPES = {np.dtype(np.uint8): "UInt8", np.dtype(np.int32): "Int32", np.dtype(np.float32): "Float32",
              np.dtype(np.float64): "Float64"}
_NUMPY_TYPES = {name: dtype for dtype, name in _VTK_TYPES.items()}
_BLOCK = 32768


def write_vti(path, fields: dict, *, voxel_nm, q_bragg, origin=None, level: int = 6) -> Path:
    """Write 3D arrays as a zlib-compressed VTK XML ImageData file for ParaView.

    Parameters
    ----------
    path : path-like
        Output ``.vti`` file (replaced atomically).
    fields : dict of str -> ndarray
        Arrays of one shape ``(nz, ny, nx)``; bool is stored as UInt8, other types as Float32 unless
        already float32, float64, uint8 or int32. The first is the active scalars.
    voxel_nm : float or (float, float, float)
        Voxel size (nm) along (z, y, x).
    q_bragg : sequence of float
        Bragg vector (1/Angstrom), stored as field data (with ``voxel_size_nm``, x y z).
    origin : (float, float, float), optional
        Origin (x, y, z) in nm; default puts 0 at the array centre (``n // 2``), like the
        coordinates of the result Dataset.
    level : int
        zlib compression level (1 fastest ... 9 smallest).

    Examples
    --------
    >>> write_vti("cube.vti", {"amplitude": np.ones((4, 5, 6))}, voxel_nm=10.0, q_bragg=(0, 0, 2.1))  # doctest: +SKIP
    """
    path = Path(path)
    arrays, (nz, ny, nx) = _checked_fields(fields)
    vz, vy, vx = map(float, np.broadcast_to(np.asarray(voxel_nm, dtype=float), (3,)))
    if not (np.isfinite([vz, vy, vx]).all() and min(vz, vy, vx) > 0):
        raise ValueError(f"voxel_nm must be finite and > 0, got {voxel_nm!r}")
    if origin is None:
        origin = (-(nx // 2) * vx, -(ny // 2) * vy, -(nz // 2) * vz)
    field_data = {"voxel_size_nm": np.array([vx, vy, vz]), "q_bragg": np.ravel(np.asarray(q_bragg, dtype=float))}
    blobs, offset = [], 0
    field_xml, point_xml = [], []
    for xml, items in ((field_xml, field_data.items()), (point_xml, arrays.items())):
        for name, a in items:
            blob = _compressed(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes(), level)
            tuples = f' NumberOfTuples="{a.size}"' if xml is field_xml else ""
            xml.append(f'<DataArray type="{_VTK_TYPES[a.dtype]}" Name="{name}"{tuples} format="appended" '
                       f'offset="{offset}"/>')
            blobs.append(blob)
            offset += len(blob)
    extent = f"0 {nx - 1} 0 {ny - 1} 0 {nz - 1}"
    head = (
        '<?xml version="1.0"?>\n'
        '<VTKFile type="ImageData" version="1.0" byte_order="LittleEndian" header_type="UInt64" '
        'compressor="vtkZLibDataCompressor">\n'
        f'<ImageData WholeExtent="{extent}" Origin="{" ".join(map(repr, map(float, origin)))}" '
        f'Spacing="{vx!r} {vy!r} {vz!r}" Direction="1 0 0 0 1 0 0 0 1">\n'
        f'<FieldData>{"".join(field_xml)}</FieldData>\n'
        f'<Piece Extent="{extent}">\n<PointData Scalars="{next(iter(arrays))}">{"".join(point_xml)}</PointData>\n'
        '<CellData></CellData>\n</Piece>\n</ImageData>\n<AppendedData encoding="raw">\n_'
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(head.encode("ascii"))
        for blob in blobs:
            f.write(blob)
        f.write(b"\n</AppendedData>\n</VTKFile>\n")
    return path


def read_vti(path) -> dict:
    """Read a ``.vti`` written by :func:`write_vti` (appended raw data, zlib or uncompressed).

    Returns a dict of point arrays ``(nz, ny, nx)``, the field data arrays, and ``"_spacing"`` /
    ``"_origin"`` (x, y, z; nm).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    start = raw.find(b'<AppendedData encoding="raw">')
    if not raw.startswith(b"<?xml") or start < 0:
        raise ValueError(f"{path}: not a VTK ImageData file with appended raw data")
    data = raw[raw.index(b"_", start) + 1:]
    root = ET.fromstring(raw[:start].decode("ascii") + "</VTKFile>")
    image = root.find("ImageData")
    x0, x1, y0, y1, z0, z1 = map(int, image.get("WholeExtent").split())
    shape = (z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    zipped = root.get("compressor") == "vtkZLibDataCompressor"
    out = {"_spacing": tuple(map(float, image.get("Spacing").split())),
           "_origin": tuple(map(float, image.get("Origin").split()))}
    for element in image.iter("DataArray"):
        values = np.frombuffer(_block_data(data, int(element.get("offset")), zipped),
                               dtype=_NUMPY_TYPES[element.get("type")].newbyteorder("<"))
        out[element.get("Name")] = values.reshape(shape) if element.get("NumberOfTuples") is None else values
    return out


def _checked_fields(fields) -> tuple[dict, tuple]:
    """The arrays as written (bool -> uint8, others float32 unless a VTK type) and their common 3D shape."""
    if not fields:
        raise ValueError("fields must not be empty")
    shapes = {np.shape(a) for a in fields.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"fields must be 3D arrays of one shape, got shapes {shapes}")
    arrays = {}
    for name, a in fields.items():
        if not re.fullmatch(r"[A-Za-z_][\w.-]*", str(name)):
            raise ValueError(f"field name {name!r}: use letters, digits, '_', '.' or '-'")
        a = np.asarray(a)
        arrays[name] = a.astype(np.uint8) if a.dtype == bool else a if a.dtype in _VTK_TYPES else a.astype(np.float32)
    return arrays, next(iter(shapes))


def _compressed(payload: bytes, level: int) -> bytes:
    """VTK's zlib layout: UInt64 header (blocks, block size, last block size, compressed sizes), then the blocks."""
    blocks = [zlib.compress(payload[i:i + _BLOCK], int(level)) for i in range(0, max(len(payload), 1), _BLOCK)]
    last = len(payload) - (len(blocks) - 1) * _BLOCK
    header = np.array([len(blocks), _BLOCK, last, *map(len, blocks)], dtype="<u8")
    return header.tobytes() + b"".join(blocks)


def _block_data(data: bytes, offset: int, zipped: bool) -> bytes:
    """The bytes of the appended array at ``offset`` (decompressed)."""
    if not zipped:
        size = int(np.frombuffer(data, "<u8", 1, offset)[0])
        return data[offset + 8:offset + 8 + size]
    n_blocks = int(np.frombuffer(data, "<u8", 1, offset)[0])
    sizes = np.frombuffer(data, "<u8", n_blocks, offset + 24).astype(int)
    position = offset + 8 * (3 + n_blocks)
    parts = []
    for size in sizes:
        parts.append(zlib.decompress(data[position:position + size]))
        position += size
    return b"".join(parts)
