"""The options of an SXDM reduction, checked once: shared by ``reduce_stack`` and the live maps.

:class:`MapOptions` holds what turns frames into maps (mask threshold, background,
noise cut, median filter, centre-of-mass or Gaussian fit, Q and detector windows);
building one checks every value and names the wrong one in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from braggscope.core.numbers import finite_float

__all__ = ["MapOptions"]

BACKGROUNDS = ("constant", "snip", "none")
FITS = ("com", "gaussian")


@dataclass(frozen=True)
class MapOptions:
    """How frames become maps (the keyword options of :func:`~braggscope.analysis.sxdm.reduce_stack`).

    Parameters
    ----------
    threshold : float
        Mask: integrated intensity >= ``threshold`` x the map maximum, in [0, 1) (0.2, the paper's 20 %).
    background : {"constant", "snip", "none"} or float
        Background handling, or a constant in counts per pixel per frame (>= 0).
    noise_sigma : float
        Voxels below ``noise_sigma`` x the background spread do not weigh in the centre of mass, those above
        weigh by their excess over it (>= 0).
    median : int
        Edge of the median filter applied to each frame (>= 1; 1 = none).
    fit : {"com", "gaussian"}
        Centre of mass only, or also a Gaussian fit of the peak's projections.
    roi : ((qx0, qx1), (qy0, qy1), (qz0, qz1)), optional
        Reciprocal-space box (1/Angstrom, sample frame); None for an axis leaves it open.
    detector_roi : (row0, row1, col0, col1), optional
        Detector pixels read (half-open ranges, full-frame coordinates).
    min_coverage : float
        Mask: a map pixel needs data (beam on, inside the scanned area after the drift
        correction) at this fraction of the rocking angles, in [0, 1] (0.5).

    Raises
    ------
    ValueError
        One line naming the option and the accepted values.
    """

    threshold: float = 0.2
    background: str | float = "constant"
    noise_sigma: float = 3.0
    median: int = 2
    fit: str = "com"
    roi: tuple | None = None
    detector_roi: tuple | None = None
    min_coverage: float = 0.5

    def __post_init__(self):
        threshold = finite_float(self.threshold, "threshold")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold!r}")
        background = self.background
        if isinstance(background, str):
            if background not in BACKGROUNDS:
                raise ValueError(f"background must be 'constant', 'snip', 'none' or a number, got {background!r}")
        else:
            background = finite_float(background, "background")
            if background < 0:
                raise ValueError(f"background must be >= 0 counts, got {self.background!r}")
        noise_sigma = finite_float(self.noise_sigma, "noise_sigma")
        if noise_sigma < 0:
            raise ValueError(f"noise_sigma must be >= 0, got {self.noise_sigma!r}")
        if isinstance(self.median, bool) or int(self.median) != self.median or int(self.median) < 1:
            raise ValueError(f"median must be an integer >= 1, got {self.median!r}")
        min_coverage = finite_float(self.min_coverage, "min_coverage")
        if not 0.0 <= min_coverage <= 1.0:
            raise ValueError(f"min_coverage must be in [0, 1], got {self.min_coverage!r}")
        if self.fit not in FITS:
            raise ValueError(f"fit must be 'com' or 'gaussian', got {self.fit!r}")
        for name, value in (("threshold", threshold), ("background", background), ("noise_sigma", noise_sigma),
                            ("median", int(self.median)), ("roi", _roi(self.roi)), ("min_coverage", min_coverage),
                            ("detector_roi", _detector_roi(self.detector_roi))):
            object.__setattr__(self, name, value)

    def window(self, rows: int, cols: int) -> tuple[int, int, int, int]:
        """The detector pixels read, ``(row0, row1, col0, col1)``, checked against a ``rows x cols`` detector."""
        if self.detector_roi is None:
            return (0, int(rows), 0, int(cols))
        r0, r1, c0, c1 = self.detector_roi
        if not (r1 <= rows and c1 <= cols):
            raise ValueError(f"detector_roi {self.detector_roi!r} is outside the {rows}x{cols} detector")
        return self.detector_roi

    def attrs(self) -> dict:
        """The options as NetCDF/NeXus-friendly attributes of the maps."""
        return {"threshold": self.threshold, "background": str(self.background), "noise_sigma": self.noise_sigma,
                "median": self.median, "fit": self.fit, "roi": "none" if self.roi is None else str(self.roi),
                "min_coverage": self.min_coverage}


def _roi(roi):
    if roi is None:
        return None
    try:
        roi = tuple(None if lim is None else (float(lim[0]), float(lim[1])) for lim in roi)
    except (TypeError, IndexError, ValueError):
        raise ValueError(f"roi must be ((qx0, qx1), (qy0, qy1), (qz0, qz1)), got {roi!r}") from None
    if len(roi) != 3 or any(lim is not None and not lim[0] < lim[1] for lim in roi):
        raise ValueError(f"roi must be three increasing (min, max) pairs or None, got {roi!r}")
    return roi


def _detector_roi(roi):
    if roi is None:
        return None
    try:
        out = tuple(int(v) for v in roi)
    except (TypeError, ValueError):
        raise ValueError(f"detector_roi must be (row0, row1, col0, col1), got {roi!r}") from None
    if len(out) != 4 or not (0 <= out[0] < out[1] and 0 <= out[2] < out[3]):
        raise ValueError(f"detector_roi must be (row0, row1, col0, col1) with 0 <= row0 < row1 and "
                         f"0 <= col0 < col1, got {roi!r}")
    return out
