"""Resolution of a BCDI reconstruction: PRTF and Fourier shell correlation.

Both curves are averaged over shells of ``|q|`` where ``q`` is the true
scattering-vector offset of each voxel of the (detector-frame) reciprocal
grid, ``q = B (n - N // 2)`` with ``B`` the columns of
:class:`~braggscope.analysis.bcdi.orthogonal.DetectorFrame` (1/Angstrom per
index, sample frame). A resolution is the half period ``pi / q_c`` (nm) at the
``q_c`` where the curve first drops below its threshold: along the sample axes
``z``, ``y``, ``x`` it uses only the voxels within 30 degrees of that axis.
When a curve never drops below its threshold, the resolution is limited by
the extent of the data in that direction: ``pi / q_max`` is reported with
``reached = False``. The shells stop where the measured box ends: at the
sphere inscribed in it for the curve over all directions, at the box's edge
along each axis for the directional ones (the corners are left out).

* **PRTF** (phase-retrieval transfer function, Chapman et al. 2006):
  shell mean of ``sqrt(I_calc)`` over shell mean of ``sqrt(I_measured)``, with
  ``I_calc`` the intensity the reconstruction predicts (its absolute scale, as
  fitted by the phasing): ``|F|^2`` of the object, blurred by the fitted
  partial-coherence widths when the phasing used that model (the model of the
  data it fitted), shifted by the integer offset that best overlaps the
  measured peak. 1 where the reconstruction explains the data; the resolution
  is where it drops below ``1/e``.
* **FSC** between two independent runs (van Heel & Schatz 2005): the real
  part of ``sum F1 conj(F2)`` over ``sqrt(sum |F1|^2 sum |F2|^2)`` per shell,
  after the global phase between the runs is removed; the threshold is the
  **half-bit** curve ``(0.2071 + 1.9102 / sqrt(n)) / (1.2071 + 0.9102 / sqrt(n))``
  (``n`` voxels in the shell) by default, or the fixed ``1/7``. Two runs from
  the same data measure reproducibility, not independent noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .coherence import blur

__all__ = ["Curve", "prtf", "fsc", "calculated_intensity", "q_vectors", "half_bit", "curves_dataset"]

_AXES = ("z", "y", "x")
_CONE_COS = np.cos(np.radians(30.0))


@dataclass
class Curve:
    """A shell-averaged curve and the resolution it gives.

    Attributes
    ----------
    q : ndarray
        Shell centres, ``|q|`` in 1/nm.
    value : ndarray
        Curve value per shell (NaN in empty shells).
    threshold : ndarray
        Threshold per shell.
    n_voxels : ndarray
        Measured voxels per shell.
    resolution_nm : float
        Half period ``pi / q_c`` (nm) over all directions.
    resolution_axes_nm : dict
        ``{"z": .., "y": .., "x": ..}`` half period along each sample axis (nm).
    reached : dict
        Per axis (and ``"all"``): False when the curve stayed above the
        threshold up to the edge of the data (the resolution is then a bound).
    name, threshold_name : str
    """

    q: np.ndarray
    value: np.ndarray
    threshold: np.ndarray
    n_voxels: np.ndarray
    resolution_nm: float
    resolution_axes_nm: dict
    reached: dict = field(default_factory=dict)
    name: str = ""
    threshold_name: str = ""

    def summary(self) -> dict:
        """JSON-able summary: resolutions (nm) in (z, y, x) order and the threshold used."""
        return {"resolution_nm": float(self.resolution_nm),
                "resolution_zyx_nm": [float(self.resolution_axes_nm[a]) for a in _AXES],
                "threshold": self.threshold_name,
                "reached_zyx": [bool(self.reached.get(a, False)) for a in _AXES]}


def q_vectors(shape, b=None) -> np.ndarray:
    """``q = B (n - N // 2)`` for every voxel, in 1/Angstrom, shape ``(3, *shape)``.

    Parameters
    ----------
    shape : (int, int, int)
    b : ndarray (3, 3), optional
        Columns: ``dq`` (x, y, z; 1/Angstrom) per index of each array axis.
        Default: a cubic grid of 1 nm voxels with array axes (z, y, x),
        ``q_i = 2 pi k_i / (N_i * 10 Angstrom)``.
    """
    shape = tuple(int(s) for s in shape)
    b = _b_matrix(shape, b)
    n = [np.arange(s, dtype=np.float64) - s // 2 for s in shape]
    grids = np.meshgrid(*n, indexing="ij", sparse=True)
    return np.stack([sum(b[c, i] * grids[i] for i in range(3)) for c in range(3)])


def calculated_intensity(obj, intensity, mask=None, coherence_px=None) -> np.ndarray:
    """Intensity ``obj`` predicts on the grid of ``intensity``, aligned and scaled to it.

    ``obj`` has the physical sign (as returned by ``phase_retrieval``); the
    far field is the one the phasing fitted, ``|fftshift(fftn(conj(obj)))|^2``
    (phasing keeps the absolute scale: no scale factor is fitted here),
    blurred by the Gaussian widths ``coherence_px`` (reciprocal-space voxels
    per axis, the partial-coherence model of the phasing: ``metrics[k]
    ["coherence_px"]``) when given, and shifted by the integer offset that
    maximises its overlap with the measured intensity (the phase ramp removed
    from the object moved the peak).
    """
    obj = np.asarray(obj)
    intensity = np.asarray(intensity, dtype=np.float64)
    if obj.shape != intensity.shape:
        raise ValueError(f"obj shape {obj.shape} differs from intensity shape {intensity.shape}")
    calc = np.abs(np.fft.fftshift(np.fft.fftn(np.conj(obj)))) ** 2
    if coherence_px is not None:
        if len(coherence_px) != obj.ndim or not all(float(s) >= 0 for s in coherence_px):
            raise ValueError(f"coherence_px must be {obj.ndim} widths >= 0 (voxels), got {coherence_px!r}")
        calc = np.clip(blur(calc, coherence_px), 0, None)  # the blur is shift-invariant: before the alignment
    meas = np.ones(intensity.shape, bool) if mask is None else ~np.asarray(mask, bool)
    a, m = np.sqrt(calc), np.sqrt(np.where(meas, np.clip(intensity, 0, None), 0.0))
    cc = np.real(np.fft.ifftn(np.fft.fftn(m) * np.conj(np.fft.fftn(a))))
    shift = np.unravel_index(int(np.argmax(cc)), cc.shape)
    return np.roll(calc, shift, axis=tuple(range(calc.ndim)))


def prtf(obj, intensity, *, mask=None, b=None, n_shells: int | None = None, coherence_px=None) -> Curve:
    """Phase-retrieval transfer function of a reconstruction against its data.

    Parameters
    ----------
    obj : ndarray, complex (n0, n1, n2)
        Reconstruction (physical sign) on the grid of ``intensity``.
    intensity : ndarray (n0, n1, n2)
        Measured intensity, peak centred (photons).
    mask : ndarray of bool, optional
        True for unmeasured voxels (gaps, bad pixels): left out.
    b : ndarray (3, 3), optional
        ``dq`` per index (1/Angstrom), see :func:`q_vectors`.
    n_shells : int, optional
        Number of ``|q|`` shells (default ``min(shape) // 2``).
    coherence_px : sequence of float, optional
        Partial-coherence widths of the phasing (``metrics[k]["coherence_px"]``):
        the calculated intensity is the coherent one blurred by them, the
        model the phasing fitted to the data (see :func:`calculated_intensity`).

    Returns
    -------
    Curve
        Threshold ``1/e``.
    """
    intensity = np.asarray(intensity, dtype=np.float64)
    calc = calculated_intensity(obj, intensity, mask, coherence_px)
    meas = np.ones(intensity.shape, bool) if mask is None else ~np.asarray(mask, bool)
    num, den = np.sqrt(calc), np.sqrt(np.clip(intensity, 0, None))

    def ratio(sel, edges):
        s_num = _shell_sum(num, sel, edges)
        s_den = _shell_sum(den, sel, edges)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(s_den > 0, s_num / s_den, np.nan)

    return _curve("PRTF", intensity.shape, b, meas, n_shells, ratio, lambda n: np.full(n.shape, 1 / np.e), "1/e")


def fsc(obj1, obj2, *, b=None, mask=None, threshold: str = "half-bit", n_shells: int | None = None) -> Curve:
    """Fourier shell correlation between two aligned reconstructions.

    Parameters
    ----------
    obj1, obj2 : ndarray, complex, one shape
        Two independent runs on the same grid, aligned (same position and
        the same twin); the global phase between them is removed here.
    b : ndarray (3, 3), optional
        ``dq`` per index (1/Angstrom), see :func:`q_vectors`.
    mask : ndarray of bool, optional
        Frequencies left out (True), e.g. the unmeasured voxels of the data;
        with the mask of :func:`prtf` both curves share their shells.
    threshold : {"half-bit", "1/7"}
    n_shells : int, optional

    Returns
    -------
    Curve
    """
    obj1, obj2 = np.asarray(obj1), np.asarray(obj2)
    if obj1.shape != obj2.shape:
        raise ValueError(f"obj1 shape {obj1.shape} differs from obj2 shape {obj2.shape}")
    if threshold not in ("half-bit", "1/7"):
        raise ValueError(f"threshold must be 'half-bit' or '1/7', got {threshold!r}")
    obj2 = obj2 * np.exp(1j * np.angle(np.vdot(obj2, obj1)))
    f1 = np.fft.fftshift(np.fft.fftn(obj1))
    f2 = np.fft.fftshift(np.fft.fftn(obj2))
    cross, p1, p2 = np.real(f1 * np.conj(f2)), np.abs(f1) ** 2, np.abs(f2) ** 2

    def corr(sel, edges):
        c = _shell_sum(cross, sel, edges)
        d = np.sqrt(_shell_sum(p1, sel, edges) * _shell_sum(p2, sel, edges))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(d > 0, c / d, np.nan)

    thr = half_bit if threshold == "half-bit" else (lambda n: np.full(n.shape, 1 / 7))
    meas = np.ones(obj1.shape, bool) if mask is None else ~np.asarray(mask, bool)
    return _curve("FSC", obj1.shape, b, meas, n_shells, corr, thr, threshold)


def half_bit(n_voxels) -> np.ndarray:
    """Half-bit threshold (van Heel & Schatz 2005) for shells of ``n_voxels`` voxels."""
    n = np.maximum(np.asarray(n_voxels, dtype=float), 1.0)
    return (0.2071 + 1.9102 / np.sqrt(n)) / (1.2071 + 0.9102 / np.sqrt(n))


def curves_dataset(*curves):
    """Curves on one ``q`` grid (1/nm) as an ``xarray.Dataset``: ``<name>`` and ``<name>_threshold``.

    Curves whose shells differ from the first one's are left out (compute
    them with the same ``mask``, ``b`` and ``n_shells`` to share the grid).
    """
    import xarray as xr

    curves = [c for c in curves if c is not None]
    if not curves:
        raise ValueError("curves_dataset needs at least one Curve")
    q = curves[0].q
    data, attrs = {}, {}
    for c in curves:
        if c.q.shape != q.shape or not np.allclose(c.q, q):
            continue
        key = c.name.lower()
        data[key] = ("q", np.asarray(c.value, dtype=float), {"long_name": c.name})
        data[f"{key}_threshold"] = ("q", np.asarray(c.threshold, dtype=float), {"long_name": c.threshold_name})
        attrs[f"{key}_resolution_nm"] = float(c.resolution_nm)
        attrs[f"{key}_resolution_zyx_nm"] = [float(c.resolution_axes_nm[a]) for a in _AXES]
    data["n_voxels"] = ("q", np.asarray(curves[0].n_voxels, dtype=np.int64), {"long_name": "voxels per shell"})
    return xr.Dataset(data, coords={"q": ("q", q, {"units": "1/nm", "long_name": "|q|"})}, attrs=attrs)


# -- helpers -------------------------------------------------------------------
def _b_matrix(shape, b):
    if len(shape) != 3:
        raise ValueError(f"shape must be 3-D, got {shape}")
    if b is None:
        b = np.zeros((3, 3))
        for i, n in enumerate(shape):
            b[2 - i, i] = 2 * np.pi / (n * 10.0)
    b = np.asarray(b, dtype=float)
    if b.shape != (3, 3) or not abs(np.linalg.det(b)) > 0:
        raise ValueError(f"b must be an invertible (3, 3) matrix of dq per index, got {b!r}")
    return b


def _extent(shape, b, direction=None):
    """|q| (1/Angstrom) where the measured box ends: along ``direction``, or the inscribed sphere."""
    binv = np.linalg.inv(b)  # q -> index offsets
    half = np.asarray(shape, dtype=float) / 2 - 0.5
    per = np.linalg.norm(binv, axis=1) if direction is None else np.abs(binv @ direction)
    with np.errstate(divide="ignore"):
        return float(np.min(np.where(per > 0, half / per, np.inf)))


def _shell_sum(values, sel, edges):
    q, idx = sel
    return np.bincount(idx, weights=values.ravel()[q], minlength=len(edges) - 1)[: len(edges) - 1]


def _curve(name, shape, b, meas, n_shells, func, thr_func, thr_name) -> Curve:
    b = _b_matrix(shape, b)
    q = q_vectors(shape, b)  # (3, ...), 1/Angstrom; components (x, y, z)
    qn = np.sqrt(np.sum(q ** 2, axis=0))
    n_shells = int(n_shells) if n_shells else max(4, min(shape) // 2)
    directions = {"all": (meas, _extent(shape, b))}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k, axis in enumerate(_AXES):  # z -> component 2, x -> component 0
            e = np.zeros(3)
            e[2 - k] = 1.0
            directions[axis] = (meas & (np.abs(q[2 - k]) >= _CONE_COS * qn), _extent(shape, b, e))
    out, res, reached = {}, {}, {}
    for key, (sel_mask, qmax) in directions.items():
        flat = np.flatnonzero((sel_mask & (qn <= qmax)).ravel())
        qsel = qn.ravel()[flat]
        edges = np.linspace(0.0, qmax * (1 + 1e-9), n_shells + 1) if qmax > 0 else np.array([0.0, 1.0])
        idx = np.clip(np.digitize(qsel, edges) - 1, 0, len(edges) - 2)
        value = func((flat, idx), edges)
        count = np.bincount(idx, minlength=len(edges) - 1)[: len(edges) - 1]
        thr = thr_func(count)
        centres = 0.5 * (edges[1:] + edges[:-1]) * 10.0  # 1/nm
        qc, ok = _crossing(centres, value, thr, count)
        res[key], reached[key] = (np.pi / qc if qc > 0 else float("nan")), ok
        out[key] = (centres, value, thr, count)
    centres, value, thr, count = out["all"]
    return Curve(q=centres, value=value, threshold=thr, n_voxels=count, resolution_nm=float(res["all"]),
                 resolution_axes_nm={a: float(res[a]) for a in _AXES}, reached=reached, name=name,
                 threshold_name=thr_name)


def _crossing(q, value, thr, count):
    """First ``q`` (linear interpolation) where ``value`` drops below ``thr``, the zero shell ignored.

    Returns ``(q, True)``, or ``(q of the last filled shell, False)`` when the
    curve never drops below its threshold.
    """
    filled = np.flatnonzero((count > 0) & np.isfinite(value))
    if filled.size == 0:
        return 0.0, False
    for a, c in zip(filled[:-1], filled[1:]):
        if value[c] < thr[c]:
            da, dc = value[a] - thr[a], value[c] - thr[c]
            if da <= 0:
                return float(q[c]), True
            return float(q[a] + (q[c] - q[a]) * da / (da - dc)), True
    return float(q[filled[-1]]), False
