"""Readers of SXDM and BCDI inputs: ID01 BLISS files, XSOCS master files, catalog runs.

One reader per file format, shared by SXDM and BCDI:

- :func:`read_bliss` (an SXDM map, one scan per angle) and :func:`read_bliss_rocking`
  (a BCDI rocking scan) read the ID01 BLISS layout;
- :func:`read_xsocs` reads XSOCS master files;
- :func:`read_catalog_run` reads a run of the catalog (``sxdm`` or ``bcdi``).

Every SXDM reader returns a :class:`~braggscope.core.stacks.MapStack` (frames a lazy
``(n_eta, ny, nx, rows, cols)`` stack in raster order, read chunk by chunk by the reduction),
every BCDI reader a :class:`~braggscope.core.stacks.RockingStack` (frames an in-memory
``(n_eta, rows, cols)`` array); both carry the ``setup`` (a
:class:`~braggscope.core.setup.ScanSetup`: energy, distance, pixel size, direct-beam pixel,
detector shape and mask, angles), ``eta`` (deg) and ``source``; a map also its raster (``x``,
``y`` in um). :func:`braggscope.analysis.sxdm.reduce_map` reduces a map stack.

What is checked before anything is reduced: every file read from exists and
is a complete HDF5 file (external links and virtual-dataset sources included;
h5py alone would read a missing source as zeros), every dataset is present
with consistent shapes, and the frames are counts (:mod:`.checks`). Each
failure raises one :class:`~braggscope.core.errors.UserError` naming the file.
"""

from __future__ import annotations

from .bliss import read_bliss, read_bliss_rocking
from .catalog import open_catalog_checked, read_catalog_run
from .checks import CheckedStack, check_rocking_frames
from .hdf5 import checked_dataset, open_hdf5
from .run import detect_format, read_stack
from .stack import H5Stack
from .xsocs import read_xsocs

__all__ = [
    "read_stack", "read_bliss", "read_bliss_rocking", "read_xsocs", "read_catalog_run", "open_catalog_checked",
    "detect_format", "CheckedStack", "check_rocking_frames", "H5Stack",
    "open_hdf5", "checked_dataset",
]
