"""``pip install braggscope`` is the analysis; the beamline, the facility and the GPU are extras.

Fast checks hide the extras' packages from a child interpreter (``sys.modules[name] = None``, as if
not installed); the slow check installs the package without extras into a fresh virtual environment
and reduces an SXDM file and a BCDI scan there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from braggscope.core.extras import EXTRA_OF_MODULE

REPO = Path(__file__).resolve().parents[1]
#: what an analysis-only install lacks: every extra's packages, and vtk (a test reference only)
ABSENT = sorted({*EXTRA_OF_MODULE, "vtk", "vtkmodules"})
#: packages that need the beamline (live maps on a RunEngine's documents)
BEAMLINE_ONLY = ("braggscope.analysis.live",)


def run_without_extras(code: str, *, timeout=300) -> subprocess.CompletedProcess:
    """``code`` in a child Python where the extras' packages cannot be imported."""
    hide = f"import sys\nfor _m in {ABSENT!r}:\n    sys.modules[_m] = None\n"
    env = {**os.environ, "BRAGGSCOPE_LOG_DIR": ""}
    return subprocess.run([sys.executable, "-c", hide + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def test_analysis_storage_and_core_import_without_the_extras():
    r = run_without_extras(f"""
        import importlib, pkgutil
        failed = []
        for package in ("braggscope.core", "braggscope.storage", "braggscope.analysis", "braggscope.app.cli"):
            names = [package] + [m.name for m in pkgutil.walk_packages(importlib.import_module(package).__path__,
                                                                         package + ".")]
            for name in names:
                if name.startswith({BEAMLINE_ONLY!r}) or name.startswith("braggscope.app.cli.") and \\
                        name.rsplit(".", 1)[1] not in ("main", "logs", "reduce", "catalog"):
                    continue
                try:
                    importlib.import_module(name)
                except ImportError as exc:
                    failed.append(f"{{name}}: {{exc}}")
        print("\\n".join(failed) or "all imported")
    """)
    assert r.stdout.strip() == "all imported", r.stdout + r.stderr


def test_the_beamline_imports_without_the_facility_extra():
    facility = sorted(m for m, extra in EXTRA_OF_MODULE.items() if extra in ("facility", "gpu"))
    code = f"""
import importlib, pkgutil, sys
for _m in {facility!r}:
    sys.modules[_m] = None
failed = []
for package in ("braggscope.devices", "braggscope.plans", "braggscope.simulators", "braggscope.analysis.live",
                "braggscope.app.beamline", "braggscope.app.session", "braggscope.app.commands", "braggscope.app.demo"):
    names = [package] + [m.name for m in pkgutil.walk_packages(importlib.import_module(package).__path__,
                                                                 package + ".")]
    for name in names + ["braggscope.app.cli.shell", "braggscope.app.cli.sim", "braggscope.app.cli.demo"]:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            failed.append(f"{{name}}: {{exc}}")
print(chr(10).join(failed) or "all imported")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                       env={**os.environ, "BRAGGSCOPE_LOG_DIR": ""})
    assert r.stdout.strip() == "all imported", r.stdout + r.stderr


@pytest.mark.parametrize("argv, extra", [
    (["sim", "start"], "beamline"),
    (["shell"], "beamline"),
    (["demo", "sxdm", "--quick"], "beamline"),
    (["serve", "status"], "facility"),
    (["live"], "facility"),
])
def test_a_command_without_its_extra_names_it(argv, extra):
    r = run_without_extras(f"""
        from braggscope.app.cli.main import main
        raise SystemExit(main({argv!r}))
    """)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and f"pip install 'braggscope[{extra}]'" in r.stderr, r.stderr
    assert r.stderr.startswith(f"braggscope {argv[0]} needs "), r.stderr


def test_reduce_bcdi_runs_its_starts_here_without_distributed_and_refuses_a_cluster(tmp_path):
    r = run_without_extras("""
        import argparse
        from braggscope.analysis.bcdi.cli import _scheduler
        print(_scheduler(argparse.Namespace(scheduler=None, config=None)))
        try:
            _scheduler(argparse.Namespace(scheduler="local", config=None))
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    assert r.stdout.splitlines() == [
        "None", "MissingExtraError --scheduler local needs distributed: pip install 'braggscope[facility]'"], r.stderr


@pytest.mark.slow
def test_an_analysis_only_install_reduces_an_sxdm_file_and_a_bcdi_scan(tmp_path):
    """A fresh virtual environment, ``pip install .`` without extras: the reductions run, the beamline's
    packages are absent, and ``braggscope sim start`` says which extra to install."""
    from tests.test_bcdi_helpers import far_field, paper_meta, synthetic_crystal
    from tests.test_bcdi_helpers import write_bliss as write_rocking
    from tests.test_sxdm_model import forward_stack
    from tests.test_sxdm_readers import write_bliss as write_map

    source = tmp_path / "src"  # a copy: setuptools builds in the source tree
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "site", "*.egg-info", "__pycache__",
                                                                ".venv", "data"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, braggscope = venv / "bin" / "python", venv / "bin" / "braggscope"
    # --no-compile: the packages' byte code is written when first imported (a third of the install's time)
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-compile", str(source)],
                         capture_output=True, text=True, timeout=1200)
    assert pip.returncode == 0, pip.stderr[-3000:]
    present = subprocess.run([str(python), "-c", "import importlib.util as u; print([m for m in "
                              f"{ABSENT!r} if u.find_spec(m)])"], capture_output=True, text=True, check=True)
    assert present.stdout.strip() == "[]"  # none of the extras' packages came along

    write_map(tmp_path / "map.h5", forward_stack(ny=5, nx=6, n_eta=9, shape=(48, 48), drift_px=0.0, seed=4))
    intensity = far_field(synthetic_crystal(n=32, radius=6.0)[0], seed=2)
    write_rocking(tmp_path / "rocking.h5", intensity, paper_meta(*intensity.shape))
    env = {**os.environ, "HOME": str(tmp_path), "MPLBACKEND": "Agg", "BRAGGSCOPE_LOG_DIR": str(tmp_path / "logs")}
    env.pop("BRAGGSCOPE_CONFIG", None)
    commands = [
        ["reduce", "sxdm", str(tmp_path / "map.h5"), "--out", str(tmp_path / "maps.h5"), "--figures",
         str(tmp_path / "figs")],
        ["reduce", "bcdi", str(tmp_path / "rocking.h5"), "--out", str(tmp_path / "recon"), "--runs", "1",
         "--recipe", "HIO:60,ER:40", "--shape", "none,32,32", "--quiet"],
    ]
    for argv in commands:
        r = subprocess.run([str(braggscope), *argv], capture_output=True, text=True, timeout=600, env=env,
                           cwd=tmp_path)
        assert r.returncode == 0, f"{argv[:2]}: {r.stderr[-3000:]}"
    assert (tmp_path / "maps.h5").stat().st_size > 0 and list((tmp_path / "figs").glob("*.png"))
    for name in ("bcdi.cxi", "bcdi.vti", "bcdi_summary.json"):
        assert (tmp_path / "recon" / name).stat().st_size > 0, name
    sim = subprocess.run([str(braggscope), "sim", "start"], capture_output=True, text=True, timeout=120, env=env)
    assert sim.returncode == 2 and "pip install 'braggscope[beamline]'" in sim.stderr, sim.stderr


def test_every_package_of_the_tree_is_in_the_install():
    """A folder with an ``__init__.py`` under a mapped package dir is listed in pyproject's packages (a
    plain ``pip install`` leaves out what is not, and the module is then missing only there)."""
    import tomllib

    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(options["packages"])
    found = set()
    for package, folder in options["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            if "__pycache__" not in parts:
                found.add(".".join((package, *parts)))
    assert found - listed == set(), "add to [tool.setuptools] packages"
