"""HDF5 access shared by every file reader: open, follow links, check sources.

h5py reads a virtual dataset whose source file is absent, unreadable or too
short as its fill value (zeros) without any error, and an external link to a
missing file as a missing key. Every reader therefore opens its datasets
through :func:`checked_dataset`, which walks the path link by link, checks
every external link and every virtual-dataset source (the file exists, opens
as HDF5, holds the source dataset, and the dataset covers the region mapped)
and that the dataset's stored bytes lie inside its file (a file whose writer
died before the end). Each failure raises one error naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4 filters of detector files before any read)
import numpy as np

from braggscope.core.errors import InputError, SourceMissingError

__all__ = ["open_hdf5", "check_top_links", "checked_dataset", "scalar", "first_key", "resolve_source", "read_all",
           "short_reason"]


def open_hdf5(path, *, role: str = "") -> h5py.File:
    """Open an HDF5 file for reading, or raise one clear error naming it.

    Parameters
    ----------
    path : path-like
    role : str
        What the file is to the user (e.g. ``"source of scan.h5:1.1/..."``),
        appended to the message.

    Raises
    ------
    SourceMissingError
        The file does not exist.
    InputError
        It is not an HDF5 file, or it is truncated or damaged.
    """
    path = Path(path)
    what = f" ({role})" if role else ""
    if path.is_dir():
        raise InputError(f"{path}: a directory, not an HDF5 file{what}; give the master file inside it")
    if not path.is_file():
        raise SourceMissingError(f"{path}: no such file{what}")
    if not h5py.is_hdf5(path):
        raise InputError(f"{path}: not an HDF5 file{what}")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: truncated or damaged HDF5 file{what} ({short_reason(exc)})") from None


def short_reason(exc: BaseException) -> str:
    """The first line of an h5py/HDF5 error, without the '(file read failed ...)' noise."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def resolve_source(container: str | os.PathLike, name: str) -> Path:
    """Where HDF5 finds ``name`` (external link or VDS source) referenced from the file ``container``.

    A relative name is looked up beside the referencing file first, then in
    the current directory, as the HDF5 library does; the first existing
    candidate is returned (else the one beside the file, for the message).
    """
    p = Path(name)
    if p.is_absolute():
        return p
    beside = Path(container).parent / p
    if beside.is_file() or not p.is_file():
        return beside
    return p


def checked_dataset(f: h5py.File, path, key: str) -> h5py.Dataset:
    """The dataset ``key`` of the open file ``f``, with every file it reads from checked.

    Parameters
    ----------
    f : h5py.File
    path : path-like
        The file's name as the user gave it (for messages).
    key : str
        Dataset path inside ``f``.

    Raises
    ------
    SourceMissingError
        An external link on the way, or a virtual-dataset source, names a file that is absent.
    InputError
        ``key`` is missing or not a dataset; a linked or source file is not
        HDF5, truncated, lacks its dataset or holds fewer frames than mapped.
    """
    node = _follow(f, path, key)
    if not isinstance(node, h5py.Dataset):
        raise InputError(f"{path}: {key} is not a dataset")
    if node.is_virtual:
        _check_virtual_sources(node, path, key)
    else:
        _check_stored_extent(node, node.file.filename, key)
    return node


def check_top_links(f, path) -> None:
    """Every top-level external link of ``f`` (XSOCS entries, BLISS scans) points at a complete HDF5 file.

    Without this check a listing of the entries silently skips an entry whose
    file is absent or damaged (h5py reports it as not there).
    """
    for name in f:
        link = f.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            src = resolve_source(f.filename, link.filename)
            if not src.is_file():
                raise SourceMissingError(f"{path}: {name} links to {link.filename}, which is missing")
            open_hdf5(src, role=f"linked from {path}:{name}").close()


def _follow(f, path, key):
    """Walk ``key`` link by link, checking external links before h5py follows them."""
    node = f
    parts = [p for p in key.split("/") if p]
    for i, name in enumerate(parts):
        sub = "/".join(parts[: i + 1])
        try:
            link = node.get(name, getlink=True)
        except (KeyError, ValueError, OSError):
            link = None
        if link is None:
            raise InputError(f"{path}: missing {sub}")
        if isinstance(link, h5py.ExternalLink):
            src = resolve_source(node.file.filename, link.filename)
            if not src.is_file():
                raise SourceMissingError(f"{path}: {sub} links to {link.filename}, which is missing")
            open_hdf5(src, role=f"linked from {path}:{sub}").close()
        try:
            node = node[name]
        except (KeyError, OSError) as exc:
            raise InputError(f"{path}: cannot open {sub} ({short_reason(exc)})") from None
    return node


def _check_virtual_sources(dset, path, key):
    """Every source of a virtual dataset exists, opens, has its dataset, and covers its mapping."""
    needed: dict[tuple[str, str], int] = {}
    for vs in dset.virtual_sources():
        k = (vs.file_name, vs.dset_name)
        needed[k] = max(needed.get(k, -1), _last_source_frame(vs))
    for (file_name, dset_name), last in needed.items():
        own = file_name in (".", "")
        src = Path(dset.file.filename) if own else resolve_source(dset.file.filename, file_name)
        if not own and not src.is_file():
            raise SourceMissingError(f"{path}: {key} is a virtual dataset whose source {file_name} is missing "
                                     f"(h5py would read it as zeros)")
        g = dset.file if own else open_hdf5(src, role=f"source of {path}:{key}")
        try:
            if dset_name not in g:
                raise InputError(f"{src}: no dataset {dset_name} (source of {path}:{key}; h5py would read zeros)")
            d = g[dset_name]
            if last >= 0 and d.shape and d.shape[0] <= last:
                raise InputError(f"{src}: {dset_name} holds {d.shape[0]} frames but {path}:{key} maps "
                                 f"{last + 1} (truncated acquisition?)")
            _check_stored_extent(d, src, dset_name)
        finally:
            if g is not dset.file:
                g.close()


def _last_source_frame(vs) -> int:
    """Index of the last source frame a virtual-source mapping reads (-1: unknown).

    A hyperslab selection in the source says it directly; a whole-dataset
    selection (HDF5 keeps no source extent then) reads as many frames as the
    mapping covers in the virtual dataset.
    """
    try:
        if vs.src_space.get_select_type() == h5py.h5s.SEL_HYPERSLABS:
            last = int(vs.src_space.get_select_bounds()[1][0])
        else:
            start, end = vs.vspace.get_select_bounds()
            last = int(end[0]) - int(start[0])
    except (ValueError, RuntimeError, TypeError, IndexError):
        return -1
    return last if last < 2**62 else -1  # unlimited selections: nothing to compare


def _check_stored_extent(dset, filename, key):
    """The dataset's allocated bytes lie inside its file (not cut short by a writer that died)."""
    try:
        size = os.path.getsize(filename)
        dsid = dset.id
        layout = dsid.get_create_plist().get_layout()
        end = 0
        if layout == h5py.h5d.CONTIGUOUS:
            offset = dsid.get_offset()
            if offset is not None:
                end = offset + dsid.get_storage_size()
        elif layout == h5py.h5d.CHUNKED:
            ends = []
            dsid.chunk_iter(lambda info: ends.append(info.byte_offset + info.size))
            end = max(ends, default=0)
    except (OSError, RuntimeError, ValueError, AttributeError):
        return  # layout not inspectable (external storage, old library): reads will tell
    if end > size:
        raise InputError(f"{filename}: {key} needs {end} bytes but the file has {size} (truncated file)")


def scalar(f, path, key, default=None) -> float:
    """A number stored at ``key`` (the mean of an array), or ``default`` when absent."""
    if key not in f:
        if default is not None:
            return default
        raise InputError(f"{path}: missing {key}")
    try:
        v = np.asarray(f[key][()], dtype=float).ravel()
    except (TypeError, ValueError):
        raise InputError(f"{path}: {key} is not a number") from None
    if v.size == 0:
        raise InputError(f"{path}: {key} is empty")
    return float(v.mean()) if v.size > 1 else float(v[0])


def first_key(f, keys):
    """The first of ``keys`` present in ``f``, or None."""
    for k in keys:
        if k in f:
            return k
    return None


def read_all(dset, path, key) -> np.ndarray:
    """Read a whole dataset, turning an HDF5 read failure into one error naming the file."""
    try:
        return np.asarray(dset[()])
    except OSError as exc:
        raise InputError(f"{path}: cannot read {key} ({short_reason(exc)}; truncated or damaged file?)") from None
