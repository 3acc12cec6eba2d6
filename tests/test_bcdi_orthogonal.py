"""Orthogonalisation: closed-form voxel sizes for the paper's geometry (Figure 7) and shapes."""

import numpy as np
import pytest

from braggscope.analysis.bcdi.orthogonal import detector_frame, orthogonalize
from braggscope.core.geometry import Geometry, bragg_angle, wavelength
from tests.test_bcdi_helpers import PAPER


def _paper_frame(shape=(56, 128, 128), step=PAPER["step_deg"]):
    theta = bragg_angle(PAPER["d_spacing"], PAPER["energy_kev"])
    geo = Geometry(PAPER["energy_kev"], PAPER["distance_m"], PAPER["pixel_m"], (shape[1] // 2, shape[2] // 2))
    return detector_frame(shape, geo, theta, step, 2 * theta)


def test_voxel_sizes_match_closed_forms():
    shape = (56, 128, 128)
    f = _paper_frame(shape)
    lam_m = wavelength(PAPER["energy_kev"]) * 1e-10
    det_nm = lam_m * PAPER["distance_m"] / (shape[1] * PAPER["pixel_m"]) * 1e9
    g = 2 * np.pi / PAPER["d_spacing"]
    rock_nm = 2 * np.pi / (g * shape[0] * np.radians(PAPER["step_deg"])) / 10
    assert f.plane_spacing_nm == pytest.approx([rock_nm, det_nm, det_nm], rel=1e-6)
    assert det_nm == pytest.approx(18.97, abs=0.01)  # 0.954 A * 1.4 m / (128 * 55 um)


def test_central_q_is_the_bragg_vector():
    f = _paper_frame()
    assert f.q_center == pytest.approx([0, 0, 2 * np.pi / PAPER["d_spacing"]], abs=1e-9)
    assert f.g_unit == pytest.approx([0, 0, 1], abs=1e-12)


def test_sphere_stays_a_sphere():
    """A sphere sampled on the (sheared) detector grid comes back round with the right volume."""
    shape = (48, 96, 96)
    f = _paper_frame(shape, step=0.012)
    m = np.indices(shape).reshape(3, -1) - np.array(shape)[:, None] // 2
    r_nm = (f.t / 10.0) @ m
    radius = 300.0
    obj = (np.linalg.norm(r_nm, axis=0) <= radius).reshape(shape).astype(np.complex64)
    o = orthogonalize(obj, f, voxel_nm=20.0)
    inside = np.abs(o.obj) >= 0.5
    volume = inside.sum() * o.voxel_nm ** 3
    assert volume == pytest.approx(4 / 3 * np.pi * radius ** 3, rel=0.06)
    ext = [(np.ptp(i) + 1) * o.voxel_nm for i in np.nonzero(inside)]
    # poles are thin caps: allow one input sampling step per side
    assert ext == pytest.approx([2 * radius] * 3, abs=2 * max(f.plane_spacing_nm.max(), o.voxel_nm))


def test_phase_gradient_lands_along_g():
    """A phase exp(i dq.r) with dq along G (z) becomes a phase ramp along array axis 0 (z)."""
    shape = (40, 40, 40)
    f = _paper_frame(shape, step=0.012)
    m = np.indices(shape).reshape(3, -1) - np.array(shape)[:, None] // 2
    r_A = f.t @ m
    k = 2 * np.pi / 2000.0  # one turn per 200 nm along z
    obj = np.exp(1j * k * r_A[2]).reshape(shape)
    o = orthogonalize(obj, f, voxel_nm=20.0)
    c = np.array(o.obj.shape) // 2
    core = o.obj[c[0] - 3:c[0] + 3, c[1] - 3:c[1] + 3, c[2] - 3:c[2] + 3]
    dz = np.angle(np.sum(core[1:] * np.conj(core[:-1])))
    dx = np.angle(np.sum(core[:, :, 1:] * np.conj(core[:, :, :-1])))
    assert dz == pytest.approx(k * 200.0, rel=0.02)  # 20 nm = 200 A per voxel
    assert abs(dx) < 0.02


def test_errors():
    geo = Geometry(13.0, 1.4, 55e-6, (32, 32))
    with pytest.raises(ValueError, match="eta_step"):
        detector_frame((8, 64, 64), geo, 10.0, 0.0, 20.0)
    with pytest.raises(ValueError, match="shape"):
        detector_frame((64, 64), geo, 10.0, 0.01, 20.0)
    f = detector_frame((8, 64, 64), geo, 10.0, 0.01, 20.0)
    with pytest.raises(ValueError, match="obj shape"):
        orthogonalize(np.zeros((4, 4, 4)), f)
    with pytest.raises(ValueError, match="voxel_nm"):
        orthogonalize(np.zeros((8, 64, 64)), f, voxel_nm=-1)


def test_support_extent_shape_covers_the_object():
    from braggscope.analysis.bcdi.orthogonal import support_extent_shape

    shape = (48, 96, 96)
    f = _paper_frame(shape, step=0.012)
    m = np.indices(shape).reshape(3, -1) - np.array(shape)[:, None] // 2
    ball = (np.linalg.norm((f.t / 10.0) @ m, axis=0) <= 300.0).reshape(shape)
    out = support_extent_shape(ball, f, 20.0, margin=2)
    o = orthogonalize(ball.astype(np.float32), f, voxel_nm=20.0, shape=out)
    full = orthogonalize(ball.astype(np.float32), f, voxel_nm=20.0)
    assert np.prod(out) < np.prod(full.obj.shape) / 4  # much smaller than the whole grid's box
    assert (o.obj >= 0.5).sum() == (full.obj >= 0.5).sum()  # nothing of the particle lost
