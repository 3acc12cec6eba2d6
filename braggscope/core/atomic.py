"""Outputs that appear complete or not at all.

Every file a reduction writes goes through :func:`atomic_path`: the writer
fills a temporary file beside the target (same directory, so the final
``os.replace`` is an atomic rename on one file system), and only a writer that
returned without an exception renames it into place. A crash, a full disk or
Ctrl-C leaves the previous file (or none) and no temporary file. The final
file gets the permissions the user's umask gives a new file (``mkstemp``
would give 0600).

A write that fails on the disk (full, quota, read-only) is raised as an
``OSError`` with its ``errno`` and the *final* file name (not the temporary
one), which the command line reports on one line. HDF5 files go through
:func:`atomic_hdf5`: they are built in memory and written with plain file
I/O, because the HDF5 library is left unusable (and crashes the process) by
a write that fails on a full disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

__all__ = ["atomic_path", "atomic_outputs", "atomic_hdf5", "hdf5_in_memory", "staged_directory", "umask_mode"]


def umask_mode(mode: int = 0o666) -> int:
    """The permission bits a new file gets under the current umask."""
    current = os.umask(0)
    os.umask(current)
    return mode & ~current


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path to write; rename it to ``path`` on success.

    Parameters
    ----------
    path : path-like
        The final file. Its directory must exist.

    Yields
    ------
    pathlib.Path
        A temporary file in the same directory, with the same suffix (so
        writers that choose a format by suffix still work).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (d / "a.txt").read_text()
    'done'
    """
    path = Path(path)
    tmp = _temporary_file(path)
    try:
        yield tmp
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _raise_naming(exc, path, tmp)
        raise


@contextlib.contextmanager
def atomic_outputs(*paths: str | os.PathLike):
    """Several outputs that appear together: all renamed after every writer succeeded.

    Yields a list of temporary paths in the order of ``paths``. If any writer
    fails, none of the final files is created or replaced.
    """
    temps: list[Path] = []
    finals = [Path(p) for p in paths]
    try:
        for final in finals:
            temps.append(_temporary_file(final))
        yield temps
        mode = umask_mode()
        for tmp, final in zip(temps, finals):
            os.chmod(tmp, mode)
            os.replace(tmp, final)
    except BaseException as exc:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if getattr(exc, "filename", None) is not None:  # which output failed is known only by its name
            for tmp, final in zip(temps, finals):
                _raise_naming(exc, final, tmp)
        raise


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike):
    """A directory of outputs that appears complete or not at all.

    Yields a temporary directory beside ``target`` (same file system) for the
    writers to fill. On success its files move into ``target``: when
    ``target`` does not exist the whole directory is renamed into place in one
    step, else each file is renamed over its namesake. On any exception the
    temporary directory is removed and ``target`` is left as it was (not
    created). Files and the new directory get the permissions of the user's umask.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _naming(target):  # a directory we may not write in: the user's path in the error, not ours
        stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield stage
        file_mode, dir_mode = umask_mode(), umask_mode(0o777)
        for root, dirs, files in os.walk(stage):
            for name in files:
                os.chmod(os.path.join(root, name), file_mode)
            for name in dirs:
                os.chmod(os.path.join(root, name), dir_mode)
        if not target.exists():
            os.chmod(stage, dir_mode)
            os.replace(stage, target)
            return
        for item in sorted(stage.iterdir()):
            os.replace(item, target / item.name)
    except OSError as exc:
        _raise_naming(exc, target, stage)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def hdf5_in_memory(path: str | os.PathLike):
    """An ``h5py.File`` built in memory, written to ``path`` with plain file I/O on success.

    The HDF5 library never touches the disk, so a full disk is an ordinary
    ``OSError`` of the final write (a failed HDF5 write leaves the library
    unusable and crashes the process at exit). Memory: the file's size, once
    (plus one copy while it is written).
    """
    import h5py

    f = h5py.File(f"braggscope-memory-{uuid.uuid4().hex}", "w", driver="core", backing_store=False)
    try:
        yield f
        f.flush()
        image = f.id.get_file_image()
    finally:
        f.close()
    try:
        with open(path, "wb") as out:
            out.write(image)
    except OSError as exc:
        if exc.filename is None and exc.errno:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


@contextlib.contextmanager
def atomic_hdf5(path: str | os.PathLike):
    """An ``h5py.File`` to fill that appears at ``path`` complete or not at all (see :func:`hdf5_in_memory`).

    Examples
    --------
    >>> import tempfile, pathlib, h5py
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_hdf5(d / "a.h5") as f:
    ...     f["x"] = 3
    >>> int(h5py.File(d / "a.h5", "r")["x"][()])
    3
    """
    with atomic_path(path) as tmp, hdf5_in_memory(tmp) as f:
        yield f


def _temporary_file(final: Path) -> Path:
    """An empty temporary file beside ``final``; an error names ``final``, never the hidden temporary."""
    with _naming(final):
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def _naming(final: Path):
    """Re-raise an ``OSError`` (permission, full disk, missing directory) naming ``final``."""
    try:
        yield
    except OSError as exc:
        if not exc.errno:
            raise
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(final)) from exc


def _raise_naming(exc: BaseException, final: Path, temp: Path) -> None:
    """Re-raise an ``OSError`` of a write to ``temp`` (or a file in it) naming ``final`` instead.

    A write error without a file name (``write`` on an open file) names ``final``.
    """
    if not isinstance(exc, OSError) or not exc.errno:
        return
    name = exc.filename
    if name is None:
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(final)) from exc
    name = Path(os.fsdecode(name))
    if name == temp or temp in name.parents:
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno),
                      str(final / name.relative_to(temp) if name != temp else final)) from exc
