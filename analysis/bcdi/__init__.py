"""BCDI: phase retrieval, orthogonalisation, displacement and strain.

The stable entry point is :func:`phase_retrieval`; see the modules for the
steps (``preprocess``: from frames to a centred, cropped intensity;
``phasing``: the driver of the iterative algorithms, with ``recipe`` (the
schedule), ``iterations`` (one random start), ``schedule`` (the schedule
chosen per data set), ``projections`` (the elementwise ER/HIO/RAAR steps),
``support`` (autocorrelation support, shrink-wrap), ``coherence`` (partial
coherence), ``distributed`` (the starts here or on a Dask cluster),
``combine`` (registration, average, modes), ``runs`` (metrics, alignment,
phase ramps) and ``live`` (the live view); ``backend``: numpy/CuPy;
``orthogonal``: detector to sample frame; ``strain``: displacement and
strain; ``files``: CXI, VTK, npz; ``figures``; ``metrics``: PRTF and FSC;
``result``: the labelled ``xarray`` result; ``pipeline``: the whole chain;
``series``: a series of scans with one set of conventions; ``cli``:
``braggscope reduce bcdi``).
"""

from .phasing import (
    PhasingResult,
    Recipe,
    align_to_reference,
    autocorrelation_support,
    center_object,
    mode_decomposition,
    phase_retrieval,
    remove_phase_ramp,
    run_metrics,
    to_physical_sign,
)

__all__ = ["Recipe", "PhasingResult", "phase_retrieval", "autocorrelation_support", "to_physical_sign",
           "remove_phase_ramp", "center_object", "align_to_reference", "mode_decomposition", "run_metrics"]
