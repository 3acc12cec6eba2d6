"""Drift correction between the rocking-angle maps of an SXDM stack.

The sample drifts relative to the beam between rocking angles (eccentricity
of the rotation, thermal drift), so map pixel ``(y, x)`` at angle ``i`` sees
the sample point ``(y + s_iy, x + s_ix)``. :func:`measure_drift` measures
``s_i`` by upsampled (sub-pixel) phase cross-correlation of per-angle maps
(Guizar-Sicairos et al., Opt. Lett. 33, 156, 2008, via
``skimage.registration.phase_cross_correlation``) and scores each angle by the
correlation of the registered maps. The best maps do not depend on the angle
(a fluorescence counter: the whole particle at every angle); the Bragg
intensity changes with the angle wherever the crystal has tilt domains, and
then registers the lit part, not the sample. :func:`apply_drift` resamples
each angle's map, lazily, so that every angle sees the same sample point;
points shifted in from outside the scanned area have no data (NaN frames).

Shift convention: ``shifts[i] = (dy, dx)`` in map pixels such that
``scipy.ndimage.shift(map_i, shifts[i])`` is aligned with the reference map.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from braggscope.core.errors import DataWarning

__all__ = ["register_drift", "measure_drift", "DriftRegistration", "apply_drift", "shifts_from_offsets"]


@dataclass(frozen=True)
class DriftRegistration:
    """The drift measured between the rocking-angle maps, and how far to trust it.

    Attributes
    ----------
    shifts : ndarray, shape (n_eta, 2)
        ``(dy, dx)`` in map pixels, for :func:`apply_drift` or ``reduce_stack(shifts=...)``.
    confidence : ndarray, shape (n_eta,)
        Correlation coefficient of each map, shifted, with the map it was registered on (1 for
        the anchor; NaN for a map too weak to register, which took its nearest neighbour's shift).
    signal : str
        What the maps are (``"fluorescence (ct_fluo)"``, ``"Bragg intensity"``).
    min_confidence : float
        Below it a map's shift cannot be trusted.
    """

    shifts: np.ndarray
    confidence: np.ndarray
    signal: str
    min_confidence: float

    @property
    def trusted(self) -> np.ndarray:
        """bool (n_eta,): registered with at least ``min_confidence``."""
        return np.nan_to_num(self.confidence, nan=-1.0) >= self.min_confidence

    def report(self, eta=None) -> list[str]:
        """Lines for people: the signal, the largest shift, the confidence, and the angles not to trust."""
        registered = np.isfinite(self.confidence)
        lines = [f"drift registered on the {self.signal}: max |shift| = {np.abs(self.shifts).max():.2f} map pixels, "
                 f"confidence {np.nanmin(self.confidence):.2f} to {np.nanmax(self.confidence):.2f}"]
        weak = np.flatnonzero(~registered)
        if weak.size:
            lines.append(f"{weak.size} angle(s) too weak to register took their neighbour's shift: "
                         f"{_angles(weak, eta)}")
        low = np.flatnonzero(registered & ~self.trusted)
        if low.size:
            lines.append(f"cannot be trusted at {low.size} angle(s) (confidence below {self.min_confidence:g}): "
                         f"{_angles(low, eta)}; give a signal that does not change with the angle "
                         "(a fluorescence counter) or check the maps")
        return lines


def register_drift(intensity_maps, upsample: int = 10, *, reference="consecutive", anchor: int | None = None,
                   normalization="phase", min_signal: float = 0.1) -> np.ndarray:
    """Sub-pixel drift of each rocking-angle map relative to a reference.

    The shifts of :func:`measure_drift` (which also says how far to trust them).

    Parameters
    ----------
    intensity_maps : array-like, shape (n_eta, ny, nx)
        Integrated intensity of each map pixel at each angle (e.g.
        :func:`braggscope.analysis.sxdm.reduce.integrate_eta_maps` or the
        ``eta_intensity`` variable of a reduction), or a signal that does not depend
        on the angle (fluorescence). NaN marks points without data.
    upsample : int
        Upsampling factor of the cross-correlation (1 = integer pixels;
        10 = 0.1 px resolution).
    reference : "consecutive" or int
        ``"consecutive"``: register each map on its neighbour and chain the
        shifts (robust when the lit part of the crystal changes with the
        angle); an int: register every map directly on that map (no chained
        errors: the choice for a fluorescence signal).
    anchor : int, optional
        With ``"consecutive"``, the map whose shift is zero (default: the
        strongest map).
    normalization : "phase" or None
        Passed to ``phase_cross_correlation``: ``"phase"`` (phase
        correlation, the default) or ``None`` (plain cross-correlation).
    min_signal : float
        Maps whose peak (above their median) is below ``min_signal`` times
        the strongest map's are too weak to register (rocking-curve tails):
        they take the shift of the nearest registered map.

    Returns
    -------
    ndarray, shape (n_eta, 2)
        ``(dy, dx)`` in map pixels to apply with :func:`apply_drift`.
    """
    return measure_drift(intensity_maps, upsample, reference=reference, anchor=anchor, normalization=normalization,
                         min_signal=min_signal, warn=False).shifts


def measure_drift(maps, upsample: int = 10, *, reference="consecutive", anchor: int | None = None,
                  normalization="phase", min_signal: float = 0.1, min_confidence: float = 0.9,
                  noise="poisson", signal: str = "Bragg intensity", warn: bool = True) -> DriftRegistration:
    """The drift between rocking-angle maps with a confidence per angle (:class:`DriftRegistration`).

    The confidence of a map is its correlation, once shifted, with the map it was registered on,
    corrected for the noise: near 1 when the two maps show the same thing up to their counting
    noise, lower when what they show changed (the lit part of a crystal with tilt domains), when
    the registration went wrong, or when there is too little signal.

    Parameters
    ----------
    maps, upsample, reference, anchor, normalization, min_signal
        As :func:`register_drift`.
    min_confidence : float
        Below it a map's shift is reported as not to be trusted.
    noise : "poisson", None or array-like (n_eta, ny, nx)
        Noise variance of every point: ``"poisson"`` for maps of counts (variance = counts),
        None for no correction.
    signal : str
        Names the maps in the report.
    warn : bool
        Say in a :class:`~braggscope.core.errors.DataWarning` which angles cannot be trusted.
    """
    variance = _noise_variance(maps, noise)
    maps = _prepared_maps(maps)
    n = maps.shape[0]
    if int(upsample) < 1:
        raise ValueError(f"upsample must be >= 1, got {upsample!r}")
    signal_level = maps.max(axis=(1, 2))
    strong = np.flatnonzero(signal_level >= float(min_signal) * signal_level.max())
    if strong.size == 0 or signal_level.max() <= 0:
        raise ValueError("intensity_maps has no signal to register")
    shifts = np.zeros((n, 2))
    confidence = np.full(n, np.nan)

    def reg(i_ref, i_mov):
        shift, _, _ = _phase_cross_correlation(maps[i_ref], maps[i_mov], upsample_factor=int(upsample),
                                               normalization=normalization)
        shift = np.asarray(shift, dtype=float)
        confidence[i_mov] = _correlation(maps[i_ref], maps[i_mov], shift,
                                         *((None, None) if variance is None else (variance[i_ref], variance[i_mov])))
        return shift

    if reference == "consecutive":
        anchor = int(np.argmax(signal_level)) if anchor is None else int(anchor)
        if not 0 <= anchor < n:
            raise ValueError(f"anchor must be in [0, {n}), got {anchor}")
        a = int(np.argmin(np.abs(strong - anchor)))  # registered map nearest the anchor
        confidence[strong[a]] = 1.0
        for j in range(a + 1, strong.size):
            shifts[strong[j]] = shifts[strong[j - 1]] + reg(strong[j - 1], strong[j])
        for j in range(a - 1, -1, -1):
            shifts[strong[j]] = shifts[strong[j + 1]] + reg(strong[j + 1], strong[j])
    else:
        ref = _reference_index(reference, n)
        for i in strong:
            if i != ref:
                shifts[i] = reg(ref, i)
        confidence[ref] = 1.0
    for i in range(n):
        if i not in strong:
            shifts[i] = shifts[strong[np.argmin(np.abs(strong - i))]]
    if reference == "consecutive":
        shifts -= shifts[anchor]
    result = DriftRegistration(shifts, confidence, str(signal), float(min_confidence))
    if warn and not np.all(result.trusted | np.isnan(confidence)):
        warnings.warn(" ".join(result.report()[1:]), DataWarning, stacklevel=2)
    return result


def _noise_variance(maps, noise):
    """Noise variance of every point (float, missing points 0), or None."""
    if noise is None:
        return None
    if isinstance(noise, str):
        if noise != "poisson":
            raise ValueError(f"noise must be 'poisson', None or an array of variances, got {noise!r}")
        variance = np.array(maps, dtype=float)
    else:
        variance = np.array(noise, dtype=float)
        if variance.shape != np.shape(maps):
            raise ValueError(f"noise must have the maps' shape {np.shape(maps)}, got {variance.shape}")
    return np.where(np.isfinite(variance), np.maximum(variance, 0.0), 0.0)


def _prepared_maps(maps):
    """float maps (n_eta, ny, nx), median removed; missing points (NaN) interpolated from the points around
    them (normalised convolution), never read as dark."""
    from scipy import ndimage  # with the registration only

    maps = np.array(maps, dtype=float)
    if maps.ndim != 3:
        raise ValueError(f"intensity_maps must have shape (n_eta, ny, nx), got {maps.shape}")
    if np.any(np.isinf(maps)):
        raise ValueError("intensity_maps contains infinite values")
    for m in maps:
        finite = np.isfinite(m)
        if not finite.any():
            raise ValueError("intensity_maps has a map without any data (every point NaN)")
        m -= np.median(m[finite])
        if not finite.all():
            known = np.where(finite, m, 0.0)
            weight = ndimage.gaussian_filter(finite.astype(float), 1.5, mode="constant")
            smooth = ndimage.gaussian_filter(known, 1.5, mode="constant")
            m[:] = np.where(finite, m, np.where(weight > 1e-3, smooth / np.maximum(weight, 1e-3), 0.0))
    return maps


def _reference_index(reference, n):
    try:
        ref = int(reference)
    except (TypeError, ValueError):
        raise ValueError(f"reference must be 'consecutive' or a map index, got {reference!r}") from None
    if not 0 <= ref < n:
        raise ValueError(f"reference must be in [0, {n}), got {ref}")
    return ref


def _phase_cross_correlation(*args, **kwargs):
    from skimage.registration import phase_cross_correlation  # slow to import: only when registering

    return phase_cross_correlation(*args, **kwargs)


def _correlation(ref, mov, shift, noise_ref=None, noise_mov=None):
    """Correlation of ``ref`` and ``mov`` shifted by ``shift`` over the points both cover, corrected
    for the noise (Spearman's correction for attenuation) when the noise variances are given: 1 for
    maps equal up to their noise, whatever the counts."""
    dy, dx = (float(v) for v in shift)
    inside = _shift_map(np.ones(mov.shape, np.float32), dy, dx) > 1 - 1e-4
    if inside.sum() < 3:
        return np.nan
    a = ref[inside] - ref[inside].mean()
    b = _shift_map(mov, dy, dx)[inside]
    b = b - b.mean()
    var_a, var_b = (a * a).mean(), (b * b).mean()
    if noise_ref is not None:
        var_a -= noise_ref[inside].mean()
        var_b -= _shift_map(noise_mov, dy, dx, power=2)[inside].mean()
    if not (var_a > 0 and var_b > 0):
        return np.nan  # no signal above the noise
    return float(np.clip((a * b).mean() / np.sqrt(var_a * var_b), -1.0, 1.0))


def _angles(indices, eta) -> str:
    if eta is None:
        return "maps " + ", ".join(str(int(i)) for i in indices)
    return "eta " + ", ".join(f"{float(eta[i]):.3f}" for i in indices) + " deg"


def shifts_from_offsets(offset_y_um, offset_x_um, step_y_um: float, step_x_um: float) -> np.ndarray:
    """Shifts for :func:`apply_drift` from drift recorded by the acquisition.

    Parameters
    ----------
    offset_y_um, offset_x_um : array-like, shape (n_eta,)
        Position on the sample actually illuminated minus the nominal
        position, per angle, micrometres (e.g. an eccentricity model's
        residual, or encoder readbacks minus setpoints).
    step_y_um, step_x_um : float
        Map pixel pitch in micrometres (signed like the piezo axes of the map).

    Returns
    -------
    ndarray, shape (n_eta, 2): ``(dy, dx)`` in map pixels.
    """
    oy = np.asarray(offset_y_um, dtype=float).ravel()
    ox = np.asarray(offset_x_um, dtype=float).ravel()
    if oy.shape != ox.shape:
        raise ValueError(f"offset_y_um and offset_x_um differ in length ({oy.size} vs {ox.size})")
    if not (float(step_y_um) != 0 and float(step_x_um) != 0):
        raise ValueError("step_y_um and step_x_um must be non-zero")
    return np.stack([oy / float(step_y_um), ox / float(step_x_um)], axis=1)


def apply_drift(frames, shifts, *, measured=None, chunk_pixels: int | None = None, min_weight: float = 0.5):
    """Resample each angle's map by its drift shift, lazily (dask); unscanned points become NaN frames.

    Cubic convolution on the map axes (Keys, IEEE Trans. ASSP 29, 1153, 1981:
    4 x 4 neighbours, :data:`KEYS_A`; it blurs a tilt boundary less than
    bilinear interpolation) over the measured points only: a
    neighbour outside the scanned area, or taken without beam (``measured``
    False), has no weight and the others' weights are renormalised. Where less than ``min_weight`` of the
    interpolation weight was measured, a point inside the scanned area takes
    the mean of its measured 4-neighbours at that angle (a hole left by a beam
    loss); a point shifted in from outside the scanned area has no data: its
    frame is NaN, which the reduction leaves out of the centre of mass and the
    background (missing data, never zeros). Nothing is read until the result is
    computed, e.g. by :func:`~braggscope.analysis.sxdm.reduce_stack`.

    Parameters
    ----------
    frames : array-like, shape (n_eta, ny, nx, rows, cols)
        numpy, dask or h5py.
    shifts : array-like, shape (n_eta, 2)
        ``(dy, dx)`` map pixels, from :func:`register_drift` or
        :func:`shifts_from_offsets`.
    measured : array-like of bool, shape (n_eta, ny, nx), optional
        False for frames taken without beam (monitor 0): they have no weight.
    chunk_pixels : int, optional
        Map rows per dask chunk (default: about 32 MB per chunk).
    min_weight : float
        Least measured share of the interpolation weight for a map pixel to have data, in (0, 1].

    Returns
    -------
    dask.array.Array, float32, same shape as ``frames``: NaN frames where not measured.

    Examples
    --------
    >>> out = apply_drift(np.ones((2, 3, 3, 1, 1)), [[0, 0], [0, 1]])
    >>> out[1, 0, :, 0, 0].compute()
    array([nan,  1.,  1.], dtype=float32)
    """
    import dask.array as da

    shape = tuple(frames.shape)
    if len(shape) != 5:
        raise ValueError(f"frames must have shape (n_eta, ny, nx, rows, cols), got {shape}")
    n_eta, ny, nx, rows, cols = shape
    s = np.asarray(shifts, dtype=float)
    if s.shape != (n_eta, 2):
        raise ValueError(f"shifts must have shape ({n_eta}, 2), got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("shifts contains NaN or infinite values")
    if not 0 < float(min_weight) <= 1:
        raise ValueError(f"min_weight must be in (0, 1], got {min_weight!r}")
    measured = np.ones((n_eta, ny, nx), np.float32) if measured is None else np.asarray(measured, np.float32)
    if measured.shape != (n_eta, ny, nx):
        raise ValueError(f"measured must have shape {(n_eta, ny, nx)}, got {measured.shape}")
    if chunk_pixels is None:
        chunk_pixels = max(1, int(32e6 // (nx * rows * cols * 4)))
    if isinstance(frames, da.Array):
        arr = frames.rechunk((1, chunk_pixels, nx, rows, cols))
    else:
        arr = da.from_array(frames, chunks=(1, chunk_pixels, nx, rows, cols), lock=True)
    def per_point(values):  # (ny, nx) numpy -> broadcastable over the frames' chunks
        return da.from_array(np.asarray(values, np.float32)[..., None, None], chunks=(chunk_pixels, nx, 1, 1))

    out = []
    for i in range(n_eta):
        dy, dx = s[i]
        inside = _shift_map(np.ones((ny, nx), np.float32), dy, dx) >= min_weight  # within the scanned area
        covered = _cubic_shift(measured[i], dy, dx)  # measured share of each point's interpolation weight
        ok = covered >= min_weight
        values = _cubic_shift(arr[i].astype(np.float32) * per_point(measured[i]), dy, dx)
        values = values * per_point(np.where(ok, 1.0 / np.maximum(covered, 1e-6), 0.0))
        holes = inside & ~ok
        if holes.any():  # no beam inside the scanned area: the mean of the measured neighbours
            values, ok = _fill_holes(values, ok, holes, per_point)
        out.append(values if ok.all() else values * per_point(np.where(ok, 1.0, np.nan)))
    return da.stack(out, axis=0)


def _fill_holes(values, ok, holes, per_point):
    """Fill the ``holes`` of one angle's map with the mean of their measured 4-neighbours (dask ``values``
    zero where not ``ok``); returns the values and which points now have data."""
    neighbours = ((1, 0), (-1, 0), (1, 1), (-1, 1))
    count = sum(_int_shift(ok.astype(np.float32), step, axis) for step, axis in neighbours)
    fillable = holes & (count > 0)
    total = sum(_int_shift(values, step, axis) for step, axis in neighbours)
    values = values + total * per_point(np.where(fillable, 1.0 / np.maximum(count, 1.0), 0.0))
    return values, ok | fillable


def _int_shift(a, s: int, axis: int):
    """``out[p] = a[p - s]`` along ``axis``, zero filled (numpy or dask)."""
    n = a.shape[axis]
    if s == 0:
        return a
    xp = np if isinstance(a, np.ndarray) else _dask_array()
    if abs(s) >= n:
        return xp.zeros_like(a)
    zshape = list(a.shape)
    zshape[axis] = abs(s)
    zeros = xp.zeros(zshape, dtype=a.dtype)
    idx = [slice(None)] * a.ndim
    if s > 0:
        idx[axis] = slice(0, n - s)
        return xp.concatenate([zeros, a[tuple(idx)]], axis=axis)
    idx[axis] = slice(-s, n)
    return xp.concatenate([a[tuple(idx)], zeros], axis=axis)


def _cubic_shift(a, dy: float, dx: float):
    """``a`` (ny, nx, ...) moved by ``(dy, dx)`` map pixels by Keys' cubic convolution, zero filled
    (separable: four shifted copies per axis)."""
    moved = None
    for step, w in _keys_taps(dy):
        term = _int_shift(a, step, 0) * np.float32(w)
        moved = term if moved is None else moved + term
    out = None
    for step, w in _keys_taps(dx):
        term = _int_shift(moved, step, 1) * np.float32(w)
        out = term if out is None else out + term
    return out


#: Keys' kernel parameter: -0.75 (sharper than the usual -0.5) gave tilt errors equal to those of the same
#: map without drift at tens of photons per voxel (-0.5: 1.16x; bilinear: 1.6x).
KEYS_A = -0.75


def _keys_taps(d: float, a: float = KEYS_A):
    """``(integer shift, weight)`` pairs of Keys' cubic kernel moving a map by ``d`` pixels:
    ``out[p] = sum w a[p - shift]`` samples ``a`` at ``p - d``."""
    base = int(np.floor(-d))
    t = -d - base
    x = np.array([1.0 + t, t, 1.0 - t, 2.0 - t])
    w = np.where(x <= 1.0, (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1.0, a * (x ** 3 - 5 * x ** 2 + 8 * x - 4))
    return [(-(base + offset), float(wk)) for offset, wk in zip((-1, 0, 1, 2), w) if abs(wk) > 1e-9]


def _dask_array():
    import dask.array as da  # heavy: only when frames are resampled

    return da


def _shift_map(a, dy: float, dx: float, power: int = 1):
    """Bilinear shift of ``a`` (ny, nx, ...) by ``(dy, dx)`` map pixels, zero filled (``power`` 2: the
    weights squared, which shifts a noise variance)."""
    iy, ix = int(np.floor(dy)), int(np.floor(dx))
    fy, fx = float(dy - iy), float(dx - ix)
    out = None
    for sy, wy in ((iy, 1.0 - fy), (iy + 1, fy)):
        for sx, wx in ((ix, 1.0 - fx), (ix + 1, fx)):
            w = wy * wx
            if w < 1e-9:
                continue
            term = _int_shift(_int_shift(a, sy, 0), sx, 1) * np.float32(w ** power)
            out = term if out is None else out + term
    return out
