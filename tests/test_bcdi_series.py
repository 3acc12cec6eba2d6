"""A series of rocking scans of one simulated particle whose strain changes (braggscope's simulator).

The reference is the simulator's displacement field: the change of strain
from the first scan to each of the others, differentiated along G on the
simulator's grid, against the change the series reconstructs on its common
orthogonal grid. The core strain grows from scan to scan, which moves the
Bragg peak: the series must keep that (homogeneous part included), which a
per-scan ramp removal would lose.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from braggscope.analysis.bcdi.combine import registration
from braggscope.analysis.bcdi.runs import embed_centred
from braggscope.analysis.bcdi.series import reconstruct_series
from braggscope.core.geometry import Geometry, bragg_angle

pytest.importorskip("braggscope.simulators.bcdi_forward")
from braggscope.simulators.bcdi_forward import BCDIForwardModel  # noqa: E402
from braggscope.simulators.samples import BCDIParticle  # noqa: E402

CORE_STRAIN = (0.0, 1.5e-4, 3.0e-4)
N = 48


def _scan(particle, seed):
    model = BCDIForwardModel(particle)
    energy, d = 13.0, particle.d_spacing
    theta = bragg_angle(d, energy)
    geometry = Geometry(energy, 1.4, 55e-6, (32.0, 32.0))
    etas = theta + 0.0073 * (np.arange(N) - N // 2)
    frames = model.rocking_scan(geometry, (64, 64), etas, 2 * theta, peak_counts=1e5, seed=seed)
    meta = {"energy_kev": energy, "distance_m": 1.4, "pixel_m": 55e-6, "cch": (32.0, 32.0), "eta": etas,
            "delta": 2 * theta, "nu": 0.0, "phi": 0.0, "d_spacing": d, "size_m": particle.size_m}
    return model, frames, meta


@pytest.fixture(scope="module")
def series():
    base = BCDIParticle(seed=0, size_m=600e-9)
    scans = [_scan(dataclasses.replace(base, eps_core=e), seed=10 + k) for k, e in enumerate(CORE_STRAIN)]
    # on a local cluster of two workers: the scans' starts side by side
    rec = reconstruct_series([(f, m) for _, f, m in scans], n_runs=2, seed=0, shape=(None, N, N), voxel_nm=20.0,
                             progress=False, scheduler="local", n_workers=2)
    return rec, [model for model, _, _ in scans]


def _truth_strain(model):
    """Strain along G (sample z = simulator axis 2) of the simulator, on its grid, axes reordered to (z, y, x)."""
    strain = np.gradient(model.u, model.particle.voxel_m * 1e10, axis=2)
    inner = binary_erosion(model.rho > 0.5, iterations=2)
    return np.transpose(np.where(inner, strain, np.nan), (2, 1, 0))


def test_series_is_one_dataset_on_one_grid(series):
    rec, _ = series
    ds = rec.dataset
    assert ds.strain.dims == ("scan", "z", "y", "x") and ds.sizes["scan"] == 3
    assert list(ds.scan.values) == ["0", "1", "2"]
    assert ds.attrs["voxel_size_nm"] == [20.0, 20.0, 20.0]
    assert all(r.ortho.obj.shape == rec.scans[0].ortho.obj.shape for r in rec.scans)
    assert all(np.allclose(r.ortho.q_bragg, rec.scans[0].ortho.q_bragg) for r in rec.scans)


@pytest.mark.slow
def test_strain_changes_match_the_simulator(series):
    rec, models = series
    ds = rec.dataset
    truth = [_truth_strain(m) for m in models]
    shape = tuple(max(a, b) for a, b in zip(ds.strain.shape[1:], truth[0].shape))
    # the reconstruction's grid onto the simulator's: registration of the reference scan's object
    g = float(np.linalg.norm(models[0].g))
    t_obj = embed_centred(np.transpose(models[0].rho * np.exp(1j * g * models[0].u), (2, 1, 0)), shape)
    twin, shift = registration(embed_centred(rec.scans[0].ortho.obj, shape), t_obj, upsample=1)

    def on_truth_grid(a):
        a = embed_centred(a, shape)
        a = a[::-1, ::-1, ::-1] if twin else a  # the twin's strain is the strain at -r
        if twin:
            a = np.roll(a, tuple(1 if s % 2 == 0 else 0 for s in shape), (0, 1, 2))
        return np.roll(a, tuple(int(s) for s in np.round(shift)), (0, 1, 2))

    got = [on_truth_grid(ds.strain[k].values.astype(float)) for k in range(3)]
    ref = [embed_centred(t, shape) for t in truth]
    for k in (1, 2):
        d_got, d_ref = got[k] - got[0], ref[k] - ref[0]
        ok = np.isfinite(d_got) & np.isfinite(d_ref)
        assert ok.sum() > 1000
        corr = np.corrcoef(d_got[ok], d_ref[ok])[0, 1]
        mean_got, mean_ref = float(np.mean(d_got[ok])), float(np.mean(d_ref[ok]))
        print(f"scan {k}: strain change {mean_got * 1e6:.0f} microstrain (simulator {mean_ref * 1e6:.0f}), "
              f"correlation {corr:.2f}")
        assert mean_got == pytest.approx(mean_ref, rel=0.3)
        assert corr > 0.5


def test_bad_series_arguments():
    with pytest.raises(ValueError, match="at least one"):
        reconstruct_series([])
    with pytest.raises(ValueError, match="reference"):
        reconstruct_series([np.zeros((4, 4, 4))], [{}], reference=3)
