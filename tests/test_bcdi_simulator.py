"""Cross-check with braggscope's own simulator: frames from BCDIForwardModel (physical sign,
pixel-exact geometry) -> reconstruct -> strain in the orthogonal sample frame vs the
simulator's true displacement field (docs/conventions.md: sign tested against the simulator's truth).
"""

import numpy as np
import pytest

from braggscope.analysis.bcdi.phasing import align_to_reference, embed_centred
from braggscope.analysis.bcdi.pipeline import reconstruct
from braggscope.analysis.bcdi.strain import strain_analysis
from braggscope.core.geometry import Geometry, bragg_angle

pytest.importorskip("braggscope.simulators.bcdi_forward")
from braggscope.simulators.bcdi_forward import BCDIForwardModel  # noqa: E402
from braggscope.simulators.samples import BCDIParticle  # noqa: E402


@pytest.mark.slow
def test_strain_of_simulated_lmno_particle_matches_truth():
    particle = BCDIParticle(seed=0)  # 800 nm LMNO, 004, tensile shell (eps_shell = 3e-4)
    model = BCDIForwardModel(particle)
    energy, d = 13.0, particle.d_spacing
    theta = bragg_angle(d, energy)
    geometry = Geometry(energy, 1.4, 55e-6, (32.0, 32.0))
    etas = theta + 0.0073 * (np.arange(64) - 32)
    frames = model.rocking_scan(geometry, (64, 64), etas, 2 * theta, peak_counts=1e5, seed=1)
    meta = {"energy_kev": energy, "distance_m": 1.4, "pixel_m": 55e-6, "cch": (32.0, 32.0), "eta": etas,
            "delta": 2 * theta, "nu": 0.0, "phi": 0.0, "d_spacing": d, "size_m": particle.size_m}
    rec = reconstruct(frames, meta, n_runs=2, seed=0, shape=(None, 64, 64), voxel_nm=20.0, progress=False,
                      figures=False)
    assert rec.phasing.mode_fraction > 0.95
    assert rec.ortho.q_bragg == pytest.approx(particle.q_nominal(), abs=2e-3)
    # truth on the simulator's 20 nm grid, axes (x, y, z) -> ours (z, y, x)
    g_norm = float(np.linalg.norm(model.g))
    truth = np.transpose(model.rho * np.exp(1j * g_norm * model.u), (2, 1, 0))
    shape = tuple(max(a, b) for a, b in zip(rec.ortho.obj.shape, truth.shape))
    t = embed_centred(truth, shape)
    o = embed_centred(rec.ortho.obj, shape)
    ref = strain_analysis(t, q_bragg_norm=g_norm, voxel_nm=20.0, g_unit=(1, 0, 0), support=np.abs(t) > 0.5)

    def correlation(obj):
        s = strain_analysis(align_to_reference(obj, t), q_bragg_norm=g_norm, voxel_nm=20.0, g_unit=(1, 0, 0))
        ok = np.isfinite(ref.strain) & np.isfinite(s.strain)
        assert ok.sum() > 3000
        a, b = ref.strain[ok] - ref.strain[ok].mean(), s.strain[ok] - s.strain[ok].mean()
        return np.corrcoef(a, b)[0, 1], np.polyfit(a, b, 1)[0]

    corr, slope = correlation(o)
    assert corr > 0.8 and 0.5 < slope < 1.5  # ~0.94 and ~0.75 (resolution smooths the shell)
    wrong_corr, _ = correlation(np.conj(o))  # the unflipped FFT result has the opposite strain
    assert wrong_corr < 0
