"""Full disk for each reduction output (issue 13): ``braggscope reduce sxdm|bcdi`` and the exports.

Each case mounts nothing new: one small tmpfs per module, filled so that the
N-th output of the command fails in its middle (room left for the outputs
before it, in the order a complete run on the same disk wrote them, plus
half of the N-th). The command runs as a user runs it (``python -m
braggscope``, in a child process, under umask 027) and must

* exit with status 2 and one line on stderr naming the file and "No space left on device";
* leave complete outputs or nothing of the run: no partial file, no temporary
  file or staging directory; a previous run's outputs in ``--out`` untouched;
* give complete outputs the user's umask (0640 here, not ``mkstemp``'s 0600).

The exports (``write_pynx_input``, ``write_xsocs``) run in a child process
too (``python -m tests.faults.test_reduction_disk export ...``), so that a
regression that lets HDF5 meet the full disk (which crashes it) cannot take
the test process down.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .disk import fill, tmpfs

ROOT = Path(__file__).resolve().parents[2]
PAGE = 4096  # tmpfs allocates whole pages
UMASK = 0o027
FILE_MODE, DIR_MODE = 0o666 & ~UMASK, 0o777 & ~UMASK
BCDI_ARGS = ["--runs", "1", "--recipe", "HIO:20,ER:10", "--shape", "none,32,32", "--quiet"]


# -- the disk ----------------------------------------------------------------------------------
def pages(size: int) -> int:
    return -(-size // PAGE)


def room_to_fail_at(sizes: list[int], n: int) -> int:
    """Bytes that hold outputs ``0..n-1`` whole and only half of output ``n`` (none of a one-page file)."""
    return PAGE * (sum(pages(s) for s in sizes[:n]) + pages(sizes[n]) // 2)


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """An 8 MiB tmpfs (root only; skipped where mounting is not permitted)."""
    with tmpfs(tmp_path_factory.mktemp("reduction_disk"), "8m") as mnt:
        yield mnt


def cli(*argv) -> subprocess.CompletedProcess:
    """``braggscope ARGV`` in a child process under umask 027."""
    return subprocess.run([sys.executable, "-m", "braggscope", *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, umask=UMASK)


def listing(root: Path) -> dict:
    """Relative path -> file bytes (None for a directory) of everything under ``root``."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def written_in_order(directory: Path) -> list[Path]:
    """The files a run wrote under ``directory``, in the order it wrote them (modification times)."""
    return sorted((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_mtime_ns)


def assert_one_line_naming(proc, path: Path):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "No space left on device" in lines[0] and f"{path}:" in lines[0], lines[0]


def assert_complete_with_umask(directory: Path):
    for p in [directory, *directory.rglob("*")]:
        assert (p.stat().st_mode & 0o777) == (DIR_MODE if p.is_dir() else FILE_MODE), p
        assert ".tmp" not in p.name, p


# -- braggscope reduce bcdi --------------------------------------------------------------------
@pytest.fixture(scope="module")
def bcdi_source(tmp_path_factory):
    from tests.test_bcdi_helpers import far_field, paper_meta, synthetic_crystal, write_bliss

    rho, _, _ = synthetic_crystal(n=32, radius=6.0)
    intensity = far_field(rho, seed=3)
    return write_bliss(tmp_path_factory.mktemp("bcdi_source") / "rocking.h5", intensity,
                       paper_meta(*intensity.shape))


@pytest.fixture(scope="module")
def bcdi_reference(disk, bcdi_source, tmp_path_factory):
    """A complete run on the (empty) small disk: its files in write order, sizes, and a copy elsewhere."""
    out = disk / "bcdi_reference"
    proc = cli("reduce", "bcdi", bcdi_source, "--out", out, *BCDI_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_complete_with_umask(out)
    files = written_in_order(out)
    names = [p.name for p in files]
    assert names[:4] == ["bcdi.cxi", "bcdi.npz", "bcdi.vti", "bcdi_summary.json"], names
    assert len([n for n in names if n.endswith(".png")]) == 4, names
    copy = tmp_path_factory.mktemp("bcdi_previous") / "out"
    shutil.copytree(out, copy)
    sizes = [p.stat().st_size for p in files]
    shutil.rmtree(out)
    return names, sizes, copy


def _bcdi_fails_at(disk, source, reference, n, previous=False):
    names, sizes, copy = reference
    out = disk / "bcdi_out"
    shutil.rmtree(out, ignore_errors=True)
    if previous:  # the outputs of an earlier run are in --out
        shutil.copytree(copy, out)
    before = listing(disk)
    filler = fill(disk, room_to_fail_at(sizes, n))
    try:
        proc = cli("reduce", "bcdi", source, "--out", out, *BCDI_ARGS)
    finally:
        filler.unlink()
    assert_one_line_naming(proc, out / names[n])
    assert listing(disk) == before  # nothing of the run: no partial output, no temporary file or stage
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize("n", [0, 1, 2, 3], ids=["cxi", "npz", "vti", "summary_json"])
def test_reduce_bcdi_full_disk_at_each_file(disk, bcdi_source, bcdi_reference, n):
    _bcdi_fails_at(disk, bcdi_source, bcdi_reference, n, previous=(n == 2))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["first", "last"])
def test_reduce_bcdi_full_disk_at_a_figure(disk, bcdi_source, bcdi_reference, which):
    names = bcdi_reference[0]
    pngs = [i for i, name in enumerate(names) if name.endswith(".png")]
    _bcdi_fails_at(disk, bcdi_source, bcdi_reference, pngs[0] if which == "first" else pngs[-1],
                   previous=(which == "last"))


# -- braggscope reduce sxdm --------------------------------------------------------------------
@pytest.fixture(scope="module")
def sxdm_source(tmp_path_factory):
    pytest.importorskip("xrayutilities")
    from tests.test_sxdm_model import forward_stack
    from tests.test_sxdm_readers import write_bliss

    t = forward_stack(ny=6, nx=8, n_eta=11, drift_px=0.0, seed=31)
    src = tmp_path_factory.mktemp("sxdm_source") / "sample.h5"
    write_bliss(str(src), t)
    return src


@pytest.fixture(scope="module")
def sxdm_reference(disk, sxdm_source):
    """A complete run (maps and figures) on the small disk: relative names in write order and sizes."""
    out = disk / "sxdm_reference"
    out.mkdir()
    proc = cli("reduce", "sxdm", sxdm_source, "--out", out / "maps.h5", "--figures", out / "figs", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_complete_with_umask(out / "figs")
    assert (out / "maps.h5").stat().st_mode & 0o777 == FILE_MODE
    files = written_in_order(out)
    names = [str(p.relative_to(out)) for p in files]
    assert names[0] == "maps.h5" and len(names) >= 9 and all(n.startswith("figs/") for n in names[1:]), names
    sizes = [p.stat().st_size for p in files]
    shutil.rmtree(out)
    return names, sizes


def _sxdm_fails_at(disk, source, reference, n):
    names, sizes = reference
    out = disk / "sxdm_out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    before = listing(disk)
    filler = fill(disk, room_to_fail_at(sizes, n))
    try:
        proc = cli("reduce", "sxdm", source, "--out", out / "maps.h5", "--figures", out / "figs", "--quiet")
    finally:
        filler.unlink()
    assert_one_line_naming(proc, out / names[n])
    assert listing(disk) == before  # no maps file, no figures directory, no temporary file
    shutil.rmtree(out)


def test_reduce_sxdm_full_disk_at_the_maps_file(disk, sxdm_source, sxdm_reference):
    _sxdm_fails_at(disk, sxdm_source, sxdm_reference, 0)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["first", "last"])
def test_reduce_sxdm_full_disk_at_a_figure(disk, sxdm_source, sxdm_reference, which):
    _sxdm_fails_at(disk, sxdm_source, sxdm_reference, 1 if which == "first" else len(sxdm_reference[0]) - 1)


# -- exports -------------------------------------------------------------------------------------
def _export_child(kind, disk, work):
    proc = subprocess.run([sys.executable, "-m", "tests.faults.test_reduction_disk", "export", kind, str(disk),
                           str(work)], cwd=ROOT, capture_output=True, text=True, timeout=300, umask=UMASK)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["pynx", "xsocs"])
def test_exports_on_a_full_disk(disk, tmp_path, kind):
    result = _export_child(kind, disk, tmp_path)
    # room for half of one output (the XSOCS file of the third angle): an OSError naming that file, nothing left
    assert result["errno"] == 28 and result["filename"] == result["expected"], result
    assert result["left"] == [], result
    # room for all: the files are complete (their data read back), with the user's umask
    assert result["complete"] and all(m == FILE_MODE for m in result["modes"]), result


def _export_main(kind, disk, work):
    """Child: export once to ``work`` (sizes, order), then to the full ``disk``, then with room."""
    from braggscope.analysis.export import write_pynx_input, write_xsocs
    from braggscope.core.setup import ScanSetup
    from braggscope.core.stacks import MapStack

    rng = np.random.default_rng(0)
    if kind == "pynx":
        frames = rng.poisson(50.0, (16, 48, 48)).astype(np.float32)
        meta = dict(energy_kev=13.0, distance_m=1.4, pixel_m=55e-6)

        def export(where):
            return [write_pynx_input(where / "export.cxi", frames, **meta)]
    else:
        frames = rng.poisson(20.0, (3, 4, 5, 48, 48)).astype(np.uint16)
        stack = MapStack(frames, [10.0, 10.1, 10.2], ScanSetup(9.0, 0.5, 55e-6, (24, 24), (48, 48), 20.0),
                         x=np.linspace(0, 2, 5), y=np.linspace(0, 1.5, 4))

        def export(where):
            master = write_xsocs(where / "export", stack)
            return [master.parent / f"braggscope_{i:04d}.h5" for i in range(3)] + [master]

    reference = export(work)
    sizes = [p.stat().st_size for p in reference]
    n = len(reference) // 2  # pynx: the file; xsocs: the third angle's file
    expected = disk / reference[n].relative_to(work)
    if kind == "xsocs":
        (disk / "export").mkdir()
    filler = fill(disk, room_to_fail_at(sizes, n))
    res = {"expected": str(expected)}
    try:
        export(disk)
        res["errno"] = 0
    except OSError as exc:
        res.update(errno=exc.errno, filename=exc.filename)
    finally:
        filler.unlink()
    res["left"] = sorted(str(p.relative_to(disk)) for p in disk.rglob("*")
                         if p.relative_to(disk).parts[0].startswith(("export", ".")) and p != disk / "export")
    written = export(disk)
    res["complete"] = _read_back(kind, written, frames)
    res["modes"] = [p.stat().st_mode & 0o777 for p in written]
    for p in written:
        p.unlink()
    if kind == "xsocs":
        (disk / "export").rmdir()
    return res


def _read_back(kind, written, frames) -> bool:
    import h5py

    if kind == "pynx":
        with h5py.File(written[0], "r") as f:
            return bool(np.array_equal(f["entry_1/instrument_1/detector_1/data"][()], frames))
    with h5py.File(written[-1], "r") as master:  # every angle through the master's external links
        return all(np.array_equal(master[f"braggscope_{i:04d}.1/measurement/image/data"][()],
                                  frames[i].reshape(-1, *frames.shape[-2:])) for i in range(len(frames)))


if __name__ == "__main__":
    _, _, kind, disk_dir, work_dir = sys.argv[:5]
    print(json.dumps(_export_main(kind, Path(disk_dir), Path(work_dir)), default=str))
