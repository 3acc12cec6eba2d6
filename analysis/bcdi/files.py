"""BCDI files: CXI (HDF5, NeXus-compatible), compressed VTK ``.vti``, npz.

CXI layout written by :func:`write_cxi`: PyNX's result layout (``entry_1/data_1`` is the object,
linked to ``image_1/data``; the likelihood and the algorithm chain under ``image_1/process_1``), so
that PyNX-aware tools (cdiutils' phasing-result analysis, PyNX's own scripts) find the object where
they look, plus the NeXus classes and ``default`` attributes that lead silx, nexusformat/NeXpy and
h5web from the root to a plot. The measured intensity and the object on the detector grid are kept
where those tools do not take them for the object::

    /cxi_version = 150                     @default="entry_1", @creator="braggscope"
    /entry_1                     NXentry   @default="data_1"; program_name (@version), start_time
    /entry_1/data_1              NXdata    the object, as PyNX writes it: data -> /entry_1/image_1/data
                                           (soft link), z, y, x (nm)
    /entry_1/image_1             NXdata    the orthogonal sample-frame object (the result):
        data        complex64 (z, y, x)    @signal; data_type="electron density", data_space="real"
        mask        bool support (support -> mask);  z, y, x (nm, hard links);  voxel_size, image_size (nm)
        is_fft_shifted = 0;  title
        process_1   NXprocess: program, version, command (the recipe), algorithm (PyNX's notation,
                    applied right to left), results (NXcollection: llk_poisson, free_llk_poisson (NaN:
                    no free pixels kept), chi2, error, support_size, mode_fraction), configuration
                    (NXcollection written by ``nexus.write_configuration``)
    /entry_1/image_2             NXdata    the object on the detector-conjugate grid
        data, mask; data_type, data_space="real"; modes (kept runs), mode_fraction;
        basis_vectors (nm: real-space step per index of (rocking, row, column), columns x y z)
    /entry_1/result_1            NXdata    the labelled result (see ``result.to_dataset``):
        amplitude (signal), support, phase, displacement, strain, d_spacing; z, y, x (nm);
        parameters (NXcollection: voxel size, q_bragg, units)
    /entry_1/result_2            NXdata    PRTF and FSC against |q| (1/nm), with thresholds
    /entry_1/data_2              NXdata    measured intensity: data, mask (True = not measured),
                                           data_type="intensity", data_space="diffraction"; also at
                                           instrument_1/detector_1/data (soft link), where CXI keeps raw data
    /entry_1/data_3              NXdata    intensity calculated from image_2 (same grid; blurred by the
                                           fitted partial-coherence widths, if any)
    /entry_1/instrument_1        NXinstrument: source_1/energy (J), beam_1 (incident energy J,
                                           wavelength m), detector_1 (distance, x/y_pixel_size, m)

:func:`load_result` reads ``result_1`` back into the ``xarray.Dataset`` that
:func:`~braggscope.analysis.bcdi.result.to_dataset` made.

:func:`write_vti` (from :mod:`braggscope.analysis.vti`, no ``vtk`` package needed) writes VTK
XML ImageData, zlib-compressed appended binary: point arrays ``(z, y, x)`` in memory are x-fastest
in VTK, spacing and origin in nm, field data ``voxel_size_nm`` (x, y, z) and ``q_bragg``
(1/Angstrom). Every writer goes through :func:`braggscope.core.atomic.atomic_path`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np

from braggscope import __version__
from braggscope.analysis.nexus import (
    jsonable,
    read_nxdata,
    read_parameters,
    set_default,
    write_configuration,
    write_nxdata,
    write_parameters,
)
from braggscope.analysis.vti import read_vti, write_vti
from braggscope.core.atomic import atomic_hdf5, atomic_path
from braggscope.core.geometry import wavelength

__all__ = ["write_cxi", "load_result", "write_npz", "write_vti", "read_vti", "vti_fields", "pynx_algorithm"]

_GZ = {"compression": "gzip", "shuffle": True, "chunks": True}
_J_PER_KEV = 1.602176634e-16


def vti_fields(result) -> dict:
    """Named arrays of a result Dataset (``result.to_dataset``) for ParaView, plus microstrain."""
    out = {}
    for name in ("amplitude", "support", "phase", "displacement", "strain", "d_spacing"):
        if name in result:
            a = np.asarray(result[name].values)
            out[name] = a.astype(np.uint8) if a.dtype == bool else a.astype(np.float32)
    if "strain" in out:
        out["microstrain"] = (out["strain"] * 1e6).astype(np.float32)
    return out


def write_npz(path, fields: dict, **params) -> Path:
    """Save arrays and parameters (JSON-able values as a ``params`` JSON string) to ``.npz``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **fields, params=np.array(json.dumps(jsonable(params))))
    return path


def write_cxi(path, result, *, obj, params: dict | None = None, obj_detector=None, support_detector=None,
              modes=None, mode_fraction=None, basis_nm=None, intensity=None, mask=None, calculated=None,
              quality=None, instrument: dict | None = None) -> Path:
    """Write a reconstruction as a CXI file (layout in the module docstring).

    Parameters
    ----------
    path : path-like
        Output ``.cxi`` (replaced atomically).
    result : xarray.Dataset
        From :func:`~braggscope.analysis.bcdi.result.to_dataset` (coordinates z, y, x in nm).
    obj : ndarray, complex (z, y, x)
        The orthogonal object, on the grid of ``result``.
    params : dict, optional
        Reduction parameters, stored in ``image_1/process_1/configuration``.
    obj_detector, support_detector : ndarray, optional
        The object and support on the detector-conjugate grid (``image_2``).
    modes : sequence of ndarray, optional
        Aligned kept runs (detector grid); ``mode_fraction`` their first-mode weight.
    basis_nm : ndarray (3, 3), optional
        Real-space step (nm) per index of the detector grid, columns (x, y, z).
    intensity, mask : ndarray, optional
        Measured intensity (``data_2``) and its mask (True = not measured).
    calculated : ndarray, optional
        Intensity calculated from the object (``data_3``).
    quality : xarray.Dataset, optional
        Curves on a ``q`` coordinate (1/nm), e.g. ``prtf``, ``fsc`` (``result_2``).
    instrument : dict, optional
        ``energy_kev``, ``distance_m``, ``pixel_m``.
    """
    path = Path(path)
    obj = np.asarray(obj)
    shape = tuple(result.sizes[d] for d in ("z", "y", "x"))
    if obj.shape != shape:
        raise ValueError(f"obj shape {obj.shape} differs from the result's (z, y, x) shape {shape}")
    with atomic_hdf5(path) as f:
        f.attrs["creator"] = "braggscope"
        f.attrs["HDF5_Version"] = h5py.version.hdf5_version
        f["cxi_version"] = 150
        e = f.create_group("entry_1")
        e.attrs["NX_class"] = "NXentry"
        e["program_name"] = "braggscope"
        e["program_name"].attrs["version"] = __version__
        e["start_time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_nxdata(e, "result_1", result, signal="amplitude")
        write_parameters(e["result_1"], result.attrs)
        e["result_1/description"] = "labelled result, orthogonal sample frame (z, y, x)"
        _image_orthogonal(e, result, obj, params or {})
        _object_data(e)
        if obj_detector is not None:
            _image_detector(e, obj_detector, support_detector, modes, mode_fraction, basis_nm)
        if quality is not None:
            signal = "prtf" if "prtf" in quality else next(iter(quality.data_vars))
            write_nxdata(e, "result_2", quality, signal=signal)
            e["result_2/description"] = "resolution curves against |q| (1/nm)"
        if intensity is not None:
            _intensity(e, "data_2", intensity, mask, "measured intensity (detector-conjugate grid)")
        if calculated is not None:
            _intensity(e, "data_3", calculated, mask, "intensity calculated from image_2 (partial-coherence model)")
        _instrument(e, instrument or {}, measured="data_2" in e)
        set_default(f, "entry_1/data_1")
    return path


def load_result(path):
    """The labelled result (``entry_1/result_1``) of a CXI file from :func:`write_cxi`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with h5py.File(path, "r") as f:
        if "entry_1/result_1" not in f:
            raise ValueError(f"{path}: no /entry_1/result_1 (not a braggscope BCDI result)")
        g = f["entry_1/result_1"]
        ds = read_nxdata(g)
        ds.attrs = read_parameters(g["parameters"]) if "parameters" in g else {}
    return ds


# -- CXI groups ----------------------------------------------------------------
def _image_orthogonal(e, result, obj, params):
    img = e.create_group("image_1")
    img.attrs["NX_class"] = "NXdata"
    img.attrs["signal"] = "data"
    img.attrs["axes"] = ["z", "y", "x"]
    for i, ax in enumerate(("z", "y", "x")):
        img.attrs[f"{ax}_indices"] = np.int32(i)
        img[ax] = e[f"result_1/{ax}"]  # hard link: one copy of each axis
    img.create_dataset("data", data=obj.astype(np.complex64), **_GZ)
    img["data"].attrs["long_name"] = "complex object (physical sign, phase = +G.u)"
    img.create_dataset("mask", data=np.asarray(result["support"].values, bool), **_GZ)
    img["support"] = h5py.SoftLink(img.name + "/mask")
    img["title"] = "object, orthogonal sample frame (z, y, x)"
    img["data_type"] = "electron density"
    img["data_space"] = "real"
    img["is_fft_shifted"] = 0
    voxel = np.asarray(result.attrs.get("voxel_size_nm", [np.nan] * 3), dtype=float)
    img["voxel_size"] = voxel
    img["voxel_size"].attrs["units"] = "nm"
    img["image_size"] = voxel * np.asarray(obj.shape)
    img["image_size"].attrs["units"] = "nm"
    _process(img, params)


def _process(img, params):
    """``image_1/process_1`` as PyNX writes it: program, version, the algorithm chain, the results."""
    proc = img.create_group("process_1")
    proc.attrs["NX_class"] = "NXprocess"
    proc["program"] = "braggscope"
    proc["version"] = __version__
    if params.get("recipe"):
        proc["command"] = f"braggscope reduce bcdi --recipe {params['recipe']}"
        proc["algorithm"] = pynx_algorithm(str(params["recipe"]))
    results = proc.create_group("results")
    results.attrs["NX_class"] = "NXcollection"
    best = params.get("best_run") or {}
    values = {"llk_poisson": best.get("llk"), "free_llk_poisson": None, "chi2": best.get("chi2"),
              "error": best.get("error"), "support_size": best.get("support_size"),
              "mode_fraction": params.get("mode_fraction")}
    for name, value in values.items():
        results[name] = np.nan if value is None else value  # NaN: not computed (no free pixels are kept)
    write_configuration(proc, params)


def pynx_algorithm(recipe: str) -> str:
    """A recipe ``"HIO:200,RAAR:100,ER:50"`` in PyNX's operator notation, ``"ER**50 * RAAR**100 * HIO**200"``
    (PyNX applies the rightmost operator first)."""
    steps = [step.split(":") for step in recipe.replace(" ", "").split(",") if step]
    return " * ".join(f"{name}**{count}" for name, count in reversed(steps))


def _object_data(e):
    """``data_1``: the object where PyNX puts it (a link to ``image_1/data``), with its axes."""
    d = e.create_group("data_1")
    d.attrs["NX_class"] = "NXdata"
    d.attrs["signal"] = "data"
    d.attrs["axes"] = ["z", "y", "x"]
    d["data"] = h5py.SoftLink("/entry_1/image_1/data")
    for i, ax in enumerate(("z", "y", "x")):
        d.attrs[f"{ax}_indices"] = np.int32(i)
        d[ax] = e[f"image_1/{ax}"]
    d["title"] = "object, orthogonal sample frame (z, y, x)"


def _image_detector(e, obj, support, modes, mode_fraction, basis_nm):
    img = e.create_group("image_2")
    img.attrs["NX_class"] = "NXdata"
    img.attrs["signal"] = "data"
    img.create_dataset("data", data=np.asarray(obj, np.complex64), **_GZ)
    if support is not None:
        img.create_dataset("mask", data=np.asarray(support, bool), **_GZ)
    img["title"] = "object on the detector-conjugate grid (rocking, row, column)"
    img["data_type"] = "electron density"
    img["data_space"] = "real"
    img["is_fft_shifted"] = 0
    if basis_nm is not None:
        img["basis_vectors"] = np.asarray(basis_nm, dtype=float)
        img["basis_vectors"].attrs["units"] = "nm"
        img["basis_vectors"].attrs["long_name"] = "real-space step per index (columns), rows x, y, z"
    if modes is not None and len(modes):
        img.create_dataset("modes", data=np.stack([np.asarray(m, np.complex64) for m in modes]), **_GZ)
    if mode_fraction is not None:
        img["mode_fraction"] = float(mode_fraction)


def _intensity(e, name, intensity, mask, title):
    d = e.create_group(name)
    d.attrs["NX_class"] = "NXdata"
    d.attrs["signal"] = "data"
    d.create_dataset("data", data=np.asarray(intensity, np.float32), **_GZ)
    d["data"].attrs["units"] = "photons"
    if mask is not None:
        d.create_dataset("mask", data=np.asarray(mask, bool), **_GZ)
    d["title"] = title
    d["data_type"] = "intensity"
    d["data_space"] = "diffraction"
    d["is_fft_shifted"] = 0


def _instrument(e, instrument, *, measured: bool):
    ins = e.create_group("instrument_1")
    ins.attrs["NX_class"] = "NXinstrument"
    if "energy_kev" in instrument:
        joules = float(instrument["energy_kev"]) * _J_PER_KEV
        src = ins.create_group("source_1")
        src.attrs["NX_class"] = "NXsource"
        src["energy"] = joules
        src["energy"].attrs["units"] = "J"
        beam = ins.create_group("beam_1")
        beam.attrs["NX_class"] = "NXbeam"
        beam["incident_energy"] = joules
        beam["incident_energy"].attrs["units"] = "J"
        beam["incident_wavelength"] = wavelength(float(instrument["energy_kev"])) * 1e-10
        beam["incident_wavelength"].attrs["units"] = "m"
    det = ins.create_group("detector_1")
    det.attrs["NX_class"] = "NXdetector"
    if measured:  # where CXI keeps a detector's data (and PyNX's input loader reads it)
        det["data"] = h5py.SoftLink("/entry_1/data_2/data")
    if "distance_m" in instrument:
        det["distance"] = float(instrument["distance_m"])
        det["distance"].attrs["units"] = "m"
    if "pixel_m" in instrument:
        px = np.broadcast_to(np.asarray(instrument["pixel_m"], dtype=float), (2,))
        det["y_pixel_size"], det["x_pixel_size"] = float(px[0]), float(px[1])
        det["x_pixel_size"].attrs["units"] = det["y_pixel_size"].attrs["units"] = "m"
