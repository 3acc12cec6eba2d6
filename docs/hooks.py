"""MkDocs hook: let mkdocstrings find braggscope's wings as subpackages.

The installed package maps the repository folders ``devices/``, ``plans/``,
``simulators/`` and ``analysis/`` to ``braggscope.devices`` ... through
setuptools' ``package-dir``. Static analysis (griffe) only sees folders, so this
hook builds a temporary tree of symbolic links, ``<tmp>/braggscope/`` holding the
hub's files and the four wings, and gives it to the Python handler as its search
path. Nothing is imported and nothing in the repository is written. It also drops
the Sphinx role prefixes (``:func:`` and the like) that the docstrings use.
"""
from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority

WINGS = ("devices", "plans", "simulators", "analysis")
#: Sphinx cross-reference roles left in the rendered docstrings, e.g. ``:func:`x```.
SPHINX_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const):(?=<code>)")


def _link_tree(root: Path) -> Path:
    """Build ``<tmp>/braggscope`` from the repository at ``root``; return ``<tmp>``."""
    tmp = Path(tempfile.mkdtemp(prefix="braggscope-docs-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    pkg = tmp / "braggscope"
    pkg.mkdir()
    for entry in (root / "braggscope").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for wing in WINGS:
        (pkg / wing).symlink_to(root / wing, target_is_directory=True)
    return tmp


@event_priority(100)  # before mkdocstrings reads its handler options
def on_config(config, **kwargs):
    """Point the mkdocstrings Python handler at the linked package tree."""
    root = Path(config.config_file_path).resolve().parent
    tree = str(_link_tree(root))
    plugin = config.plugins["mkdocstrings"]
    python = plugin.config["handlers"].setdefault("python", {})
    python["paths"] = [tree]
    return config


def on_page_content(html, page, **kwargs):
    """Drop the Sphinx role prefixes (``:func:`` ...) of the numpydoc docstrings; keep the code."""
    return SPHINX_ROLE.sub("", html)
