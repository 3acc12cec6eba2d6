"""BCDI figures: four fields cropped to the particle, iso-surface without stray voxels, diffraction, PRTF."""

import numpy as np
import pytest

from braggscope.analysis.bcdi.figures import (
    figure_diffraction,
    figure_isosurface,
    figure_resolution,
    figure_slices,
    largest_component,
    particle_box,
    save_figure,
)
from braggscope.analysis.bcdi.metrics import fsc, prtf
from braggscope.analysis.bcdi.result import to_dataset
from braggscope.analysis.bcdi.strain import strain_analysis
from tests.test_bcdi_files import VOXEL, particle


@pytest.fixture(scope="module")
def case():
    obj, g = particle(n=48, radius=10)
    s = strain_analysis(obj, q_bragg_norm=g, voxel_nm=VOXEL, g_unit=(1, 0, 0))
    return to_dataset(s), obj


def test_particle_box_and_largest_component():
    m = np.zeros((20, 20, 20), bool)
    m[5:10, 6:12, 7:9] = True
    m[18, 1, 1] = True  # a stray noise voxel
    body = largest_component(m)
    assert body.sum() == 5 * 6 * 2 and not body[18, 1, 1]
    assert particle_box(body, 2) == (slice(3, 12), slice(4, 14), slice(5, 11))


def test_slices_are_cropped_to_the_particle_with_nm_axes(tmp_path, case):
    ds, _ = case
    fig = figure_slices(ds)
    axes = [a for a in fig.axes if a.get_xlabel().endswith("(nm)")]
    assert len(axes) == 12  # 4 fields x 3 planes
    x0, x1 = axes[0].get_xlim()
    radius_nm = 10 * VOXEL
    assert x1 - x0 == pytest.approx(2 * radius_nm + 7 * VOXEL, abs=2 * VOXEL)  # support + 3-voxel margins
    labels = {a.get_ylabel() for a in fig.axes if a not in axes}
    assert {"amplitude (normalised)", "phase (rad)", "displacement along G (nm)",
            "strain along G (microstrain)"} <= labels
    assert save_figure(fig, tmp_path / "s.png").stat().st_size > 20_000


def test_isosurface_ignores_stray_voxels(tmp_path, case):
    ds, _ = case
    noisy = ds.copy(deep=True)
    noisy["amplitude"].values[1, 1, 1] = 1.0  # isolated bright voxel far from the particle
    fig = figure_isosurface(noisy, level=0.5)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim3d()
    assert lo > ds["x"].values[3] and hi < 11 * VOXEL + 1  # the box of the particle, not of the array
    assert save_figure(fig, tmp_path / "i.png").stat().st_size > 20_000
    with pytest.raises(ValueError, match="level"):
        figure_isosurface(ds, level=1.5)


def test_diffraction_and_resolution_figures(tmp_path, case):
    _, obj = case
    inten = np.abs(np.fft.fftshift(np.fft.fftn(np.conj(obj)))) ** 2
    fig = figure_diffraction(inten, inten * 0.9, title="t")
    assert len([a for a in fig.axes if "measured" in a.get_title() or "calculated" in a.get_title()]) == 6
    assert save_figure(fig, tmp_path / "d.png").stat().st_size > 20_000
    fig = figure_resolution(prtf(obj, inten), fsc(obj, obj))
    assert "PRTF" in fig.legends[0].get_texts()[0].get_text()
    assert save_figure(fig, tmp_path / "r.png").stat().st_size > 10_000
