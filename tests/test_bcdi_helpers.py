"""Independent synthetic BCDI crystal for the BCDI tests (not braggscope's simulator).

The far field is built with the physical sign, ``A(q) = sum rho(r) exp(+i q.r)``,
explicitly as an inverse DFT scaled by N.
"""

import numpy as np

N = 64
G_AXIS = 0  # G along array axis 0 in these tests


def synthetic_crystal(n=N, radius=10.0, phase_amplitude=1.0):
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
    phase = phase_amplitude * (0.9 * (z / r) ** 2 - 0.6 * (y / r) ** 2 + 0.7 * (z / r) * (x / r)
                               + 0.5 * (z / r) ** 3 + 0.4 * (y / r) * (x / r) ** 2)
    rho = shape * np.exp(1j * phase)
    return rho, shape, phase


def far_field(rho, peak_photons=1e5, seed=0):
    """Poisson-noisy intensity of ``A(q) = sum rho exp(+i q.r)``, centred (fftshift)."""
    a = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(rho))) * rho.size
    i = np.abs(a) ** 2
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
