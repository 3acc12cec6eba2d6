"""Exports for the field's other tools: PyNX CDI input, XSOCS master files.

* :func:`write_pynx_input` / :func:`pynx_input_from_scan`: a rocking scan's
  measured intensity as the CXI input PyNX's CDI scripts (``pynx-cdi-id01``
  and the generic CXI loader) read: ``/entry_1/instrument_1/detector_1/data``
  with ``entry_1/data_1/data`` linked to it (``NXdata``, the default plot),
  ``detector_1/mask`` (non-zero = not measured), the detector distance and
  pixel size (m) and the photon energy (J, the CXI convention), and the
  scan's angles in ``data_1/process_1/configuration`` (written by
  :func:`braggscope.analysis.nexus.write_configuration`, the same rule as
  braggscope's reconstruction files).
* :func:`write_xsocs`: an SXDM stack ``(n_eta, ny, nx, rows, cols)`` as XSOCS
  reads it: a master file with one entry per rocking angle, each an external
  link to its own file holding ``measurement/image/data`` (points, rows,
  cols), the piezo positions per point (``measurement/adcY`` = pix,
  ``adcX`` = piy, as XSOCS maps them), the angles in
  ``instrument/positioners/{eta, del, nu, phi}`` and the detector in
  ``instrument/detector/{beam_energy (eV), center_chan_dim0/1 (row, column),
  chan_per_deg_dim0/1, pixelsize_dim0/1 (um)}``, with
  ``chan_per_deg = distance * tan(1 deg) / pixel``. Counts are stored as
  uint16 or int32 (XSOCS's Q-space conversion refuses uint8 and uint32).

Every file is written atomically (:mod:`braggscope.core.atomic`).
"""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np

from braggscope import __version__
from braggscope.analysis.nexus import set_default, write_configuration
from braggscope.core.atomic import atomic_hdf5, atomic_outputs, hdf5_in_memory
from braggscope.core.geometry import wavelength
from braggscope.core.stacks import MapStack

__all__ = ["write_pynx_input", "pynx_input_from_scan", "write_xsocs"]

_J_PER_KEV = 1.602176634e-16
_GZ = {"compression": "gzip", "shuffle": True, "chunks": True}


def write_pynx_input(path, intensity, *, energy_kev: float, distance_m: float, pixel_m, mask=None,
                     parameters: dict | None = None) -> Path:
    """Write a 3-D measured intensity as a PyNX CDI input ``.cxi`` file.

    Parameters
    ----------
    path : path-like
        Output file (``.cxi``; replaced atomically).
    intensity : ndarray (n_eta, rows, cols)
        Measured intensity (photons), peak near the centre, not FFT-shifted.
    energy_kev, distance_m : float
        Photon energy (keV) and sample-detector distance (m).
    pixel_m : float or (float, float)
        Detector pixel size (m), (rows, columns).
    mask : ndarray of bool, optional
        True where a voxel is not measured (gaps, hot pixels, padding).
    parameters : dict, optional
        Scan description stored in ``data_1/process_1/configuration`` (eta, delta, nu, phi, cch, ...).
    """
    intensity = np.asarray(intensity)
    if intensity.ndim != 3:
        raise ValueError(f"intensity must be 3-D (n_eta, rows, cols), got shape {intensity.shape}")
    if mask is not None and np.shape(mask) != intensity.shape:
        raise ValueError(f"mask shape {np.shape(mask)} differs from intensity shape {intensity.shape}")
    for name, v in (("energy_kev", energy_kev), ("distance_m", distance_m)):
        if not float(v) > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")
    py, px = np.broadcast_to(np.asarray(pixel_m, dtype=float), (2,))
    joules = float(energy_kev) * _J_PER_KEV
    path = Path(path)
    with atomic_hdf5(path) as f:
        f.attrs["creator"] = "braggscope"
        f["cxi_version"] = 150
        e = f.create_group("entry_1")
        e.attrs["NX_class"] = "NXentry"
        e["program_name"] = f"braggscope {__version__}"
        e["start_time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        ins = e.create_group("instrument_1")
        ins.attrs["NX_class"] = "NXinstrument"
        src = ins.create_group("source_1")
        src.attrs["NX_class"] = "NXsource"
        _value(src, "energy", joules, "J")
        beam = ins.create_group("beam_1")
        beam.attrs["NX_class"] = "NXbeam"
        _value(beam, "incident_energy", joules, "J")
        _value(beam, "incident_wavelength", wavelength(float(energy_kev)) * 1e-10, "m")
        det = ins.create_group("detector_1")
        det.attrs["NX_class"] = "NXdetector"
        _value(det, "distance", float(distance_m), "m")
        _value(det, "x_pixel_size", float(px), "m")
        _value(det, "y_pixel_size", float(py), "m")
        det.create_dataset("data", data=intensity.astype(np.float32), **_GZ)
        det["data"].attrs["units"] = "photons"
        if mask is not None:
            det.create_dataset("mask", data=np.asarray(mask, bool).astype(np.uint8), **_GZ)
        data = e.create_group("data_1")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "data"
        data["data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
        if mask is not None:
            data["mask"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/mask")
        data["data_type"] = "intensity"
        data["data_space"] = "diffraction"
        proc = data.create_group("process_1")
        proc.attrs["NX_class"] = "NXprocess"
        proc["program"] = "braggscope"
        proc["version"] = __version__
        write_configuration(proc, parameters)
        set_default(f, "entry_1/data_1")
    return path


def pynx_input_from_scan(path, source, meta=None, *, shape=(None, 128, 128), binning=(1, 1)) -> Path:
    """A rocking scan (frames + meta, a run, ...) cropped around its peak, as a PyNX input file.

    Uses :func:`braggscope.analysis.bcdi.preprocess.prepare` without background
    subtraction (PyNX models the photon statistics itself): the same crop,
    binning and mask braggscope phases.
    """
    from braggscope.analysis.bcdi.preprocess import prepare

    data = prepare(source, meta, shape=shape, binning=binning, background=None)
    m = data.meta
    params = {k: m[k] for k in ("delta", "nu", "phi", "cch", "eta_step", "d_spacing") if k in m}
    params["eta"] = [float(e) for e in data.eta]
    return write_pynx_input(path, data.intensity, mask=data.mask, energy_kev=m["energy_kev"],
                            distance_m=m["distance_m"], pixel_m=m["pixel_m"], parameters=params)


def write_xsocs(directory, stack: MapStack, *, prefix: str = "braggscope") -> Path:
    """Write an SXDM map stack as an XSOCS master file plus one file per rocking angle.

    Parameters
    ----------
    directory : path-like
        Output directory (created); files ``<prefix>_master.h5`` and
        ``<prefix>_<i>.h5`` (replaced atomically, all together).
    stack : MapStack
        Raw counts in raster order (numpy, dask or a lazy stack; read one angle at a time), with
        its setup and the map axes ``x``, ``y`` (um).

    Returns
    -------
    Path of the master file.
    """
    n_eta, ny, nx, rows, cols = stack.frames.shape
    setup = stack.require_setup()
    if stack.x is None or stack.y is None:
        raise ValueError(f"{stack.source or 'stack'}: the map axes x and y (um) are needed by XSOCS")
    delta, nu, phi = stack.angles()
    pixel = float(np.ravel(setup.pixel_m)[0])
    cpd = float(setup.distance_m) * np.tan(np.radians(1.0)) / pixel
    x, y, eta = stack.x, stack.y, stack.eta
    xx, yy = np.meshgrid(x, y)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{prefix}_{i:04d}" for i in range(n_eta)]
    master = out / f"{prefix}_master.h5"
    with atomic_outputs(master, *[out / f"{n}.h5" for n in names]) as tmps:
        for i, (name, tmp) in enumerate(zip(names, tmps[1:])):
            with hdf5_in_memory(tmp) as f:
                e = f.create_group(f"{name}.1")
                e.attrs["NX_class"] = "NXentry"
                e["title"] = f"braggscope SXDM map, eta = {eta[i]:.5f}"
                block = _xsocs_counts(np.asarray(stack.frames[i]).reshape(ny * nx, rows, cols))
                e.create_dataset("measurement/image/data", data=block, chunks=(1, rows, cols), compression="gzip")
                e["measurement/adcY"] = xx.ravel()  # XSOCS: pix -> adcY
                e["measurement/adcX"] = yy.ravel()  # piy -> adcX
                e["measurement/imgnr"] = np.arange(ny * nx)
                for key, value in (("eta", eta[i]), ("del", delta[i]), ("nu", nu[i]), ("phi", phi[i])):
                    e[f"instrument/positioners/{key}"] = float(value)
                _xsocs_detector(e.create_group("instrument/detector"), setup, cpd, pixel)
                sc = e.create_group("scan")
                sc["motor_0"], sc["motor_0_start"], sc["motor_0_end"] = "pix", float(x[0]), float(x[-1])
                sc["motor_0_steps"] = nx
                sc["motor_1"], sc["motor_1_start"], sc["motor_1_end"] = "piy", float(y[0]), float(y[-1])
                sc["motor_1_steps"] = ny
                sc["delay"] = 0.0
        with hdf5_in_memory(tmps[0]) as m:
            for name in names:
                m[f"{name}.1"] = h5py.ExternalLink(f"{name}.h5", f"{name}.1")
    return master


def _xsocs_counts(block):
    """Frames in a type XSOCS's Q-space histogramming accepts (uint16, int32, float32/64; not uint8/uint32)."""
    if block.dtype.kind == "f":
        return block
    if block.dtype in (np.uint8, np.uint16):
        return block.astype(np.uint16)
    if block.size and (int(block.max()) >= 2 ** 31 or int(block.min()) < -(2 ** 31)):
        return block.astype(np.float64)
    return block.astype(np.int32)


def _xsocs_detector(d, setup, cpd, pixel):
    d.attrs["NX_class"] = "NXdetector"
    d["beam_energy"] = float(setup.energy_kev) * 1000.0
    d["center_chan_dim0"], d["center_chan_dim1"] = (float(c) for c in setup.cch)
    d["chan_per_deg_dim0"] = d["chan_per_deg_dim1"] = cpd
    d["pixelsize_dim0"] = d["pixelsize_dim1"] = pixel * 1e6  # um


def _value(group, name, value, units):
    group[name] = value
    group[name].attrs["units"] = units
