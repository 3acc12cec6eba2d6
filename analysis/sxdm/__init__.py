"""SXDM reduction: reciprocal-space centre-of-mass maps of intensity, strain and tilt.

The stable entry point is :func:`reduce_stack`; see the modules for the steps
(``reduce``: the reduction, ``plan``: its checked inputs and the Q of every
voxel, ``blocks``: one chunk reduced to sums, ``scheduling``: chunks in
parallel, ``kernels``: the fused numba pass, ``filters``:
background and median, ``maps``: strain and tilt from the COM, ``grid``: a
gridded peak, ``drift``: map registration, ``stack``: a typed map stack reduced, ``files``: NeXus output,
``figures``: the field's figures, ``cli``: ``braggscope reduce sxdm``).
"""

from .reduce import derive_maps, integrate_eta_maps, q_frames, q_resolution, read_block, reduce_stack, tilt_angles
from .stack import reduce_map

__all__ = ["reduce_stack", "reduce_map", "derive_maps", "tilt_angles", "q_frames", "integrate_eta_maps", "read_block",
           "q_resolution"]
