"""The package's floors hold: no import circle anywhere, and no floor imports one above it.

Every ``import`` of every module is read from its source (those inside functions too), resolved to a
braggscope module, and the graph checked: a strongly connected component of more than one module is a
circle; an import across the layers below is a violation. docs/architecture.md draws the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: where each subpackage's sources live (pyproject's package-dir)
PACKAGE_DIRS = {
    "braggscope": ROOT / "braggscope",
    "braggscope.devices": ROOT / "devices",
    "braggscope.plans": ROOT / "plans",
    "braggscope.simulators": ROOT / "simulators",
    "braggscope.analysis": ROOT / "analysis",
}

#: layer -> the layers it may import (itself included); "app" (applications) may import anything
ALLOWED = {
    "core": {"core"},
    "storage": {"core", "storage"},
    "devices": {"core", "devices"},
    "analysis": {"core", "storage", "analysis"},
    "plans": {"core", "storage", "devices", "analysis", "plans"},
    "simulators": {"core", "devices", "simulators"},
}


def _modules() -> dict[str, Path]:
    """Every braggscope module name and its file."""
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if package == "braggscope" and parts and parts[0] in ("devices", "plans", "simulators", "analysis"):
                continue  # never on disk under braggscope/, but be safe
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> set[str]:
    """The braggscope modules ``name`` imports, wherever in the file the import stands."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    package = name if _is_package(name) else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(_known(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # "from pkg import submodule" imports the submodule
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in MODULES else _known(base))
    targets.discard(None)
    targets.discard(name)
    return targets


def _known(dotted: str) -> str | None:
    """The longest braggscope module prefix of ``dotted`` (``a.b.c`` -> ``a.b`` when ``c`` is a name)."""
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _layer(name: str) -> str:
    parts = name.split(".")
    if parts[1:2] and parts[1] in ("devices", "plans", "simulators", "analysis", "core", "storage", "app"):
        return parts[1]
    if name in ("braggscope", "braggscope.geometry"):
        return "core"  # the package's face: the version and the stable geometry re-export
    return "app"  # __main__


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_finds_the_modules_and_their_imports():
    assert "braggscope.storage.sources" in MODULES and "braggscope.devices.maxipix" in MODULES
    assert "braggscope.storage.sources" in GRAPH["braggscope.storage.frames"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    cycles = _cycles(GRAPH)
    assert not cycles, "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_layer_imports_above_itself(layer):
    bad = sorted(f"{name} imports {target}" for name, targets in GRAPH.items() if _layer(name) == layer
                 for target in targets if _layer(target) not in ALLOWED[layer])
    assert not bad, "\n".join(bad)
