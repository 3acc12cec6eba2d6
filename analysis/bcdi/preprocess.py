"""BCDI pre-processing: from a rocking scan to a phasing-ready intensity.

Input: frames ``(n_eta, rows, cols)`` in raw counts plus metadata (energy in
keV, distance and pixel in metres, ``cch`` (row, col), ``eta`` in degrees,
``delta``/``nu``/``phi`` in degrees), from arrays, a ``(frames, meta)`` pair
(``braggscope.storage.rocking_stack(run)``), a Bluesky run, or an ID01 BLISS
HDF5 file (read by :func:`braggscope.analysis.readers.read_bliss_rocking`, the
reader SXDM uses too, which checks the file and every source it points at).
Frames that are not counts are refused, a few negative pixels masked
(:func:`braggscope.analysis.readers.check_rocking_frames`).

Steps (:func:`prepare`): detector mask (chip gaps, hot/saturated pixels),
background, crop/centre on the Bragg peak (max or centre of mass), optional
binning in the detector plane, zero padding to FFT-friendly sizes
(``scipy.fft.next_fast_len``) with the padding masked, and oversampling from
the data (autocorrelation extent) beside the one from the geometry.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from braggscope.analysis.readers import check_rocking_frames, read_bliss_rocking
from braggscope.core.geometry import oversampling_detector, oversampling_rocking
from braggscope.core.setup import ScanSetup
from braggscope.core.stacks import RockingStack

__all__ = [
    "BCDIData",
    "prepare",
    "as_frames_meta",
    "detector_mask",
    "subtract_background",
    "find_peak",
    "crop_around",
    "bin_frames",
    "pad_fast",
    "oversampling_from_data",
    "normalise_by_monitor",
    "MAXIPIX_SATURATION",
]

#: Counts above which an ID01 Maxipix pixel is saturated (ID01 practice).
MAXIPIX_SATURATION = 401540


@dataclass
class BCDIData:
    """A phasing-ready rocking scan.

    Attributes
    ----------
    intensity : ndarray, float32, (n_eta, rows, cols)
        Background-subtracted counts, peak centred, padded; 0 where masked.
    mask : ndarray, bool
        True where a voxel is NOT measured (gaps, hot pixels, padding).
    eta : ndarray
        Rocking angles (degrees) of the kept frames (padding extrapolated).
    meta : dict
        ``setup``: the :class:`~braggscope.core.setup.ScanSetup` of the
        cropped/binned frames (binned ``pixel_m``, ``cch`` in cropped/binned
        pixel coordinates, the angles at the central frame), and the same as
        flat keys ``energy_kev``, ``distance_m``, ``pixel_m``, ``cch``,
        ``delta``, ``nu``, ``phi`` (recorded in the outputs); ``eta_step``
        (degrees), plus the input metadata.
    crop : tuple of slice
        Region of the input frames (before binning and padding) kept.
    oversampling_data : tuple of float
        Oversampling per axis from the autocorrelation of the data.
    oversampling_geometry : tuple of float or None
        ``(rocking, rows, cols)`` from ``braggscope.core.geometry`` when ``size_m``
        and ``d_spacing`` are known.
    """

    intensity: np.ndarray
    mask: np.ndarray
    eta: np.ndarray
    meta: dict
    crop: tuple = ()
    oversampling_data: tuple = ()
    oversampling_geometry: tuple | None = None
    log: list = field(default_factory=list)


def prepare(
    source,
    meta: dict | None = None,
    *,
    shape=(None, 128, 128),
    center: str = "max",
    background: float | str | None = "auto",
    binning=(1, 1),
    gaps: str | None = "auto",
    hot_factor: float = 20.0,
    pad: bool = True,
) -> BCDIData:
    """Turn a rocking scan into a phasing-ready :class:`BCDIData`.

    Parameters
    ----------
    source : ndarray, (frames, meta) tuple, Bluesky run, or path to a BLISS HDF5 file
        Frames ``(n_eta, rows, cols)`` in counts.
    meta : dict, optional
        Metadata when ``source`` is an array (keys: energy_kev, distance_m,
        pixel_m, cch, eta, delta, nu, phi; optional d_spacing in Angstrom,
        size_m).
    shape : (int or None, int, int)
        Crop size (rocking, rows, cols) around the peak before binning;
        None keeps the whole axis.
    center : {"max", "com"}
        Peak finder: brightest voxel (after a 3x3x3 median) or centre of mass.
    background : float, "auto" or None
        Constant subtracted (counts); "auto" uses the median of the frame
        corners; None subtracts nothing. Results are clipped at 0.
    binning : (int, int)
        Detector-plane binning (rows, cols) after the crop (sums counts).
    gaps : "auto", "maxipix" or None
        Chip gaps to mask; "auto" masks the Maxipix 2x2 gaps for 516x516 frames.
    hot_factor : float
        A pixel is hot when its summed counts exceed ``hot_factor`` x the
        3x3 median of its neighbours (and are >= 100 counts).
    pad : bool
        Zero-pad (masked) each axis to ``scipy.fft.next_fast_len``.

    Raises
    ------
    ValueError
        Bad shapes, missing metadata, or a crop larger than the data.
    """
    frames, meta = as_frames_meta(source, meta)
    log = []
    n_eta, rows, cols = frames.shape
    eta = np.asarray(meta["eta"], dtype=float)
    if eta.shape != (n_eta,):
        raise ValueError(f"meta['eta'] must have n_eta = {n_eta} angles, got shape {eta.shape}")
    if center not in ("max", "com"):
        raise ValueError(f"center must be 'max' or 'com', got {center!r}")
    binning = tuple(int(b) for b in binning)
    if len(binning) != 2 or min(binning) < 1:
        raise ValueError(f"binning must be two integers >= 1 (rows, cols), got {binning!r}")

    negative = check_rocking_frames(frames, meta.get("source") or "frames")  # refuses NaN, all zero, complex
    mask = detector_mask(frames, gaps=gaps, hot_factor=hot_factor) | negative
    if meta["setup"].pixel_mask is not None:
        mask |= meta["setup"].pixel_mask
    log.append(f"masked {int(mask.sum())} detector pixels")
    data = frames.astype(np.float32)
    data[:, mask] = 0
    no_beam, reference = normalise_by_monitor(data, meta.get("monitor"), log)
    data = subtract_background(data, background, mask=mask)
    peak = find_peak(data, method=center)
    log.append(f"peak at {tuple(round(p, 1) for p in peak)}")
    crop_shape = tuple(n if s is None else int(s) for s, n in zip(shape, (n_eta, rows, cols)))
    crop = crop_around(peak, crop_shape, (n_eta, rows, cols))
    data = data[crop]
    mask3 = np.broadcast_to(mask[crop[1:]], data.shape).copy()
    mask3[no_beam[crop[0]]] = True  # a frame taken without beam is not measured
    eta_c = eta[crop[0]]
    data, mask3 = bin_frames(data, mask3, binning)
    setup = meta["setup"]
    cropped = setup.geometry().crop(crop[1].start, crop[2].start)
    pr, pc = cropped.pixel_size[0] * binning[0], cropped.pixel_size[1] * binning[1]
    # a bin of b pixels starting at 0 is centred on (b - 1) / 2 of the unbinned grid
    cch_c = tuple((c - (b - 1) / 2) / b for c, b in zip(cropped.cch, binning))
    step = float(np.median(np.diff(eta))) if n_eta > 1 else 0.0
    if pad:
        data, mask3, offsets = pad_fast(data, mask3)
        eta_c = eta_c[0] - offsets[0] * step + step * np.arange(data.shape[0])
        cch_c = (cch_c[0] + offsets[1], cch_c[1] + offsets[2])  # padding before = a negative crop
    data[mask3] = 0
    delta, nu, phi = (float(a[n_eta // 2]) for a in setup.angles(n_eta))
    setup = setup.replace(pixel_m=(pr, pc), cch=cch_c, detector_shape=data.shape[1:], delta=delta, nu=nu, phi=phi,
                          pixel_mask=None, detector_roi=None)
    out_meta = dict(meta)
    out_meta.update(setup=setup, energy_kev=setup.energy_kev, distance_m=setup.distance_m, pixel_m=(pr, pc),
                    cch=setup.cch, eta_step=step, delta=delta, nu=nu, phi=phi)
    out_meta["eta"] = eta_c
    out_meta.pop("monitor", None)  # the readings: recorded as what was done with them
    out_meta.update(normalisation="none" if reference is None else
                    f"counts x monitor_reference / {meta.get('monitor_name') or 'monitor'}",
                    **({} if reference is None else {"monitor_reference": reference,
                                                     "frames_without_beam": int(no_beam.sum())}))
    os_data = oversampling_from_data(data, mask3)
    log.append("oversampling from the data (rocking, rows, cols): " + ", ".join(f"{o:.2f}" for o in os_data))
    if min(os_data) < 2:
        warnings.warn(f"oversampling from the data {tuple(round(o, 2) for o in os_data)} is below 2 on some axis: "
                      "phase retrieval may fail (crop larger, bin less, or measure finer steps)", stacklevel=2)
    return BCDIData(intensity=data, mask=mask3, eta=eta_c, meta=out_meta, crop=crop,
                    oversampling_data=os_data, oversampling_geometry=_oversampling_geometry(meta, setup, step),
                    log=log)


def _oversampling_geometry(meta, setup, step):
    """The oversampling the particle's size predicts (rocking, rows, cols), None without its size and d."""
    if not (meta.get("size_m") and meta.get("d_spacing") and step):
        return None
    size, (rows, cols) = meta["size_m"], setup.pixel_m
    return (oversampling_rocking(meta["d_spacing"], size, step),
            oversampling_detector(setup.energy_kev, setup.distance_m, rows, size),
            oversampling_detector(setup.energy_kev, setup.distance_m, cols, size))


# -- inputs --------------------------------------------------------------------
def as_frames_meta(source, meta=None):
    """Normalise the accepted inputs to ``(frames ndarray (n_eta, rows, cols), meta dict)``."""
    if isinstance(source, (str,)) or hasattr(source, "__fspath__"):
        source = read_bliss_rocking(source)
    elif isinstance(source, tuple) and len(source) == 2 and isinstance(source[1], dict):
        source, meta = source
    elif hasattr(source, "metadata") and not isinstance(source, (np.ndarray, RockingStack)):
        from braggscope.storage import rocking_stack  # lazy: storage is optional here

        source = rocking_stack(source)
    if isinstance(source, RockingStack):
        source, meta = source.frames, _stack_meta(source)
    frames = np.asarray(source)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (n_eta, rows, cols), got shape {frames.shape}")
    if meta is None:
        raise ValueError("meta is required with array frames (setup, or energy_kev, distance_m, pixel_m, cch, "
                         "delta; and eta)")
    if "eta" not in meta:
        raise ValueError("meta is missing 'eta' (the rocking angles, degrees)")
    meta = dict(meta)
    if meta.get("setup") is None and meta.get("detector_shape") is None:
        meta["detector_shape"] = list(frames.shape[1:])  # a file's flat metadata: the frames say it
    meta["setup"] = ScanSetup.from_start_doc(meta)
    return frames, meta


def _stack_meta(stack: RockingStack) -> dict:
    """A :class:`~braggscope.core.stacks.RockingStack`'s facts as the pipeline's metadata."""
    return {**stack.metadata, "setup": stack.require_setup(), "eta": stack.eta, "source": stack.source,
            "size_m": stack.size_m, "d_spacing": stack.d_spacing, "exit_status": stack.exit_status,
            "monitor": stack.monitor_values(), "monitor_name": stack.monitor}


# -- monitor normalisation (issue 21) ------------------------------------------
def normalise_by_monitor(data, monitor, log=None) -> np.ndarray:
    """Scale each frame of ``data`` (n_eta, rows, cols), in place, by ``reference / monitor``.

    ``monitor`` holds one reading of the incident flux per frame (``meta["monitor"]``, from the rocking
    stack's monitor such as ``mon1``), or None for no normalisation; the reference is the median of the
    readings with beam. A reading of 0 means no beam: that frame is zeroed and reported, never divided by.

    Returns
    -------
    no_beam : ndarray of bool, (n_eta,)
        The frames taken without beam (mask them).
    reference : float or None
        The flux the counts now refer to (None: not normalised).
    """
    n_eta = data.shape[0]
    if monitor is None:
        return np.zeros(n_eta, bool), None
    mon = np.asarray(monitor, dtype=float).ravel()
    if mon.shape != (n_eta,) or not np.all(np.isfinite(mon)) or np.any(mon < 0) or not np.any(mon > 0):
        raise ValueError(f"monitor must hold {n_eta} finite readings >= 0, not all 0 (one per frame)")
    beam = mon > 0
    reference = float(np.median(mon[beam]))
    data[beam] *= (reference / mon[beam]).astype(np.float32)[:, None, None]
    data[~beam] = 0
    if log is not None:
        log.append(f"frames normalised by the monitor (reference {reference:.6g}); "
                   f"{int((~beam).sum())} frames without beam masked")
    return ~beam, reference


# -- steps ---------------------------------------------------------------------
def detector_mask(frames, *, gaps="auto", hot_factor=20.0, saturation=MAXIPIX_SATURATION):
    """Detector pixels to ignore, shape ``(rows, cols)``, True = masked.

    Masks the Maxipix 2x2 chip gaps (rows/cols 255-260 of a 516x516 frame),
    saturated pixels (any frame >= ``saturation``) and hot pixels (summed
    counts > ``hot_factor`` x the median of their 3x3 neighbourhood, and
    >= 100 counts).
    """
    from scipy.ndimage import median_filter

    frames = np.asarray(frames)
    rows, cols = frames.shape[-2:]
    mask = np.zeros((rows, cols), bool)
    if gaps not in ("auto", "maxipix", None):
        raise ValueError(f"gaps must be 'auto', 'maxipix' or None, got {gaps!r}")
    if gaps == "maxipix" or (gaps == "auto" and (rows, cols) == (516, 516)):
        if (rows, cols) != (516, 516):
            raise ValueError(f"gaps='maxipix' needs 516x516 frames, got {(rows, cols)}")
        mask[255:261, :] = True
        mask[:, 255:261] = True
    total = frames.reshape(-1, rows, cols).sum(axis=0, dtype=np.float64)
    mask |= (frames.reshape(-1, rows, cols) >= saturation).any(axis=0)
    med = median_filter(total, size=3, mode="nearest")
    mask |= (total >= 100) & (total > hot_factor * np.maximum(med, 1.0))
    return mask


def subtract_background(data, background="auto", *, mask=None):
    """Subtract a constant background (counts) and clip at 0 (in place on float data)."""
    if background is None:
        return data
    if background == "auto":
        n = max(2, min(data.shape[1:]) // 8)
        corners = np.concatenate([data[:, :n, :n].ravel(), data[:, :n, -n:].ravel(),
                                  data[:, -n:, :n].ravel(), data[:, -n:, -n:].ravel()])
        value = float(np.median(corners))
    else:
        try:
            value = float(background)
        except (TypeError, ValueError):
            raise ValueError(f"background must be a number, 'auto' or None, got {background!r}") from None
    if value:
        data -= np.float32(value)
        np.clip(data, 0, None, out=data)
    return data


def find_peak(data, method="max"):
    """Bragg peak position (float indices) by the brightest voxel (3x3x3 median first) or COM."""
    if method == "com":
        from scipy.ndimage import center_of_mass

        return tuple(float(c) for c in center_of_mass(np.clip(data, 0, None)))
    from scipy.ndimage import median_filter

    smooth = median_filter(data, size=3, mode="nearest")
    return tuple(float(i) for i in np.unravel_index(np.argmax(smooth), data.shape))


def crop_around(peak, shape, full_shape):
    """Slices of ``shape`` centred on ``peak`` (clamped inside ``full_shape``)."""
    out = []
    for p, s, n in zip(peak, shape, full_shape):
        if s > n or s < 1:
            raise ValueError(f"crop size {s} does not fit an axis of {n}")
        start = int(round(p)) - s // 2
        start = min(max(start, 0), n - s)
        out.append(slice(start, start + s))
    return tuple(out)


def bin_frames(data, mask, binning):
    """Sum-bin the detector plane by ``(rows, cols)``; a binned pixel is masked if all inputs were."""
    br, bc = binning
    if (br, bc) == (1, 1):
        return data, mask
    n, r, c = data.shape
    r2, c2 = r // br * br, c // bc * bc
    d = data[:, :r2, :c2].reshape(n, r // br, br, c // bc, bc).sum(axis=(2, 4))
    m = mask[:, :r2, :c2].reshape(n, r // br, br, c // bc, bc).all(axis=(2, 4))
    return d, m


def pad_fast(data, mask):
    """Zero-pad each axis to ``scipy.fft.next_fast_len`` (padding masked, data centred).

    Returns ``(data, mask, offsets)`` with ``offsets`` the leading pad per axis.
    """
    from scipy.fft import next_fast_len

    target = [next_fast_len(n) for n in data.shape]
    pads = [((t - n) // 2, t - n - (t - n) // 2) for t, n in zip(target, data.shape)]
    data = np.pad(data, pads)
    mask = np.pad(mask, pads, constant_values=True)
    return data, mask, tuple(p[0] for p in pads)


def oversampling_from_data(intensity, mask=None, threshold=0.02):
    """Oversampling per axis measured from the data.

    The autocorrelation (inverse FFT of the intensity) of an object of
    extent ``a`` spans ``2a``; with ``N`` samples per axis the oversampling is
    ``N / a = 2 N / (extent + 1)`` (a discrete object of ``a`` voxels has an
    autocorrelation of ``2 a - 1``), the extent being that of the
    autocorrelation thresholded at ``threshold`` of its maximum (projected on
    the axis). Thresholds much above 0.02 under-estimate the extent of
    faceted objects (the autocorrelation tapers linearly to its edge).
    """
    i = np.array(intensity, dtype=np.float32)
    if mask is not None:
        i[mask] = 0
    ac = np.abs(np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(i))))
    sup = ac >= threshold * ac.max()
    out = []
    for ax in range(i.ndim):
        other = tuple(a for a in range(i.ndim) if a != ax)
        idx = np.nonzero(sup.any(axis=other))[0]
        extent = idx[-1] - idx[0] + 1
        out.append(float(2.0 * i.shape[ax] / (extent + 1)))
    return tuple(out)
