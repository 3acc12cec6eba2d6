"""Independent synthetic BCDI crystal for the BCDI tests (not braggscope's simulator).

The far field is built with the physical sign, ``A(q) = sum rho(r) exp(+i q.r)``,
explicitly as an inverse DFT scaled by N.
"""

import numpy as np

N = 64
G_AXIS = 0  # G along array axis 0 in these tests


def synthetic_crystal(n=N, radius=10.0, phase_amplitude=1.5):
    """Asymmetric faceted particle (~2*radius voxels across) with a smooth phase.

    Returns
    -------
    rho : complex128 (n, n, n), centred; shape : bool; phase : float (rad),
    the phase ``G.u`` (physical sign) inside the particle.
    """
    c = n // 2
    z, y, x = (np.indices((n, n, n)) - c).astype(float)
    octa = np.abs(z) + np.abs(y) + np.abs(x) <= 1.45 * radius
    box = (np.abs(z) <= radius) & (np.abs(y) <= 0.85 * radius) & (np.abs(x) <= radius)
    cut = z + 0.6 * y - 0.3 * x <= 0.75 * radius  # one extra facet: breaks the inversion symmetry
    shape = octa & box & cut
    r = radius
    # mostly odd, non-linear terms: neither the conjugate nor the flipped object match it
    phase = phase_amplitude * (1.2 * (z / r) ** 3 + 0.8 * (z / r) * (y / r) ** 2 - 0.7 * (y / r) * (x / r) ** 2
                               + 0.4 * (z / r) ** 2 - 0.3 * (x / r) * (y / r))
    rho = shape * np.exp(1j * phase)
    return rho, shape, phase


def far_field(rho, peak_photons=1e5, seed=0, coherence_px=None):
    """Poisson-noisy intensity of ``A(q) = sum rho exp(+i q.r)``, centred (fftshift).

    ``coherence_px``: a partially coherent beam, the coherent intensity blurred
    by a periodic Gaussian of these widths (reciprocal-space voxels per axis)
    before the counting.
    """
    a = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(rho))) * rho.size
    i = np.abs(a) ** 2
    if coherence_px is not None:
        from scipy.ndimage import gaussian_filter

        i = gaussian_filter(i, coherence_px, mode="wrap")
    i *= peak_photons / i.max()
    return np.random.default_rng(seed).poisson(i).astype(np.float64)


def iou(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float((a & b).sum() / max((a | b).sum(), 1))


def phase_rms(obj, truth, shape):
    """RMS phase difference inside ``shape`` after the global phase offset is removed."""
    d = np.angle(obj[shape] * np.conj(truth[shape]))
    d = np.angle(np.exp(1j * (d - np.angle(np.mean(np.exp(1j * d))))))
    return float(np.sqrt(np.mean(d ** 2)))


# paper geometry (Figure 7): 13 keV, 1.4 m, 55 um pixels, LMNO 004 (a = 8.17 A)
PAPER = {"energy_kev": 13.0, "distance_m": 1.4, "pixel_m": 55e-6, "d_spacing": 8.17 / 4, "step_deg": 0.0073}


def paper_meta(n_eta, rows, cols):
    """Metadata of a symmetric 004 rocking scan centred on the Bragg angle, peak on the frame centre."""
    from braggscope.core.geometry import bragg_angle

    theta = bragg_angle(PAPER["d_spacing"], PAPER["energy_kev"])
    eta = theta + PAPER["step_deg"] * (np.arange(n_eta) - n_eta // 2)
    return {"energy_kev": PAPER["energy_kev"], "distance_m": PAPER["distance_m"], "pixel_m": PAPER["pixel_m"],
            "cch": (rows // 2, cols // 2), "eta": eta, "delta": 2 * theta, "nu": 0.0, "phi": 0.0,
            "d_spacing": PAPER["d_spacing"]}


def write_bliss(path, frames, meta, scan="1.1"):
    """Write a rocking scan in the ID01 BLISS layout (frames, eta per frame, calibration, nrj)."""
    import h5py

    with h5py.File(path, "w") as f:
        e = f.create_group(scan)
        inst = e.create_group("instrument")
        det = inst.create_group("mpx1x4")
        det["image"] = np.asarray(frames, dtype=np.uint32)
        det["beam_center_x"] = float(meta["cch"][1])
        det["beam_center_y"] = float(meta["cch"][0])
        det["distance"] = float(meta["distance_m"])
        det["x_pixel_size"] = float(meta["pixel_m"])
        det["y_pixel_size"] = float(meta["pixel_m"])
        inst["eta/value"] = np.asarray(meta["eta"], dtype=float)
        pos = inst.create_group("positioners")
        pos["nrj"] = float(meta["energy_kev"])
        pos["delta"] = float(meta["delta"])
        pos["nu"] = float(meta["nu"])
        pos["phi"] = float(meta["phi"])
        pos["eta"] = np.asarray(meta["eta"], dtype=float)
    return path
