"""Small disks for the full-disk faults: a tmpfs of a given size, filled to leave a given room."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """Mount a tmpfs of ``size`` (e.g. ``"1m"``) on ``folder`` for the block; skip where mounting is not
    permitted (root is needed)."""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (root needed): {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(directory: Path, leave: int) -> Path:
    """Fill ``directory``'s file system but ``leave`` bytes (tmpfs allocates whole 4 KiB pages)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    with open(filler, "r+b") as f:
        f.truncate(max(filler.stat().st_size - leave, 0))
    return filler
