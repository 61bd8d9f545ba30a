"""The package's shape: every sub-package imports only those below it, no module imports
another in a cycle, and nothing reaches outside the package into the source tree.

The layers are the README's layout section, lowest first; an import, at the top of a module or
inside a function, counts the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "swiperec"

LAYERS = {  # sub-package (or top-level module) -> layer; imports point to lower layers only
    "errors": 0, "version": 0, "resources": 0, "beam_pipeline": 0, "beam_local_cluster": 0,
    "faults": 0,
    "db": 1,
    "data": 2, "snapshot": 2,
    "features": 3,
    "model": 4,
    "evaluation": 5, "embeddings": 5,
    "registry": 6, "serving": 6, "realtime": 6, "monitoring": 6, "simulate": 6,
    "experiments": 7, "migration": 7,
    "pipeline": 8,
    "cli": 9,
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every swiperec module `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("swiperec")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("swiperec"):
            # `from swiperec.x import y` may import the module swiperec.x.y
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports(path) for name, path in MODULES.items()}


def home(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_every_sub_package_has_a_layer():
    homes = {home(m) for m in MODULES if m != "swiperec"}
    assert homes == set(LAYERS), "add new sub-packages to LAYERS and the README's layout"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    if module == "swiperec":
        return
    mine = home(module)
    upward = sorted(
        target
        for target in GRAPH[module]
        if home(target) and home(target) != mine and LAYERS[home(target)] >= LAYERS[mine]
    )
    assert not upward, f"{module} ({mine}, layer {LAYERS[mine]}) imports {upward}"


def test_no_module_imports_itself_through_others():
    cycles, done, path = [], set(), []

    def visit(module):
        if module in path:
            cycles.append([*path[path.index(module) :], module])
            return
        if module in done or module not in GRAPH:
            return
        path.append(module)
        for target in sorted(GRAPH[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_package_reads_nothing_of_the_source_tree():
    for name, path in MODULES.items():
        text = path.read_text()
        assert "sys.path" not in text, f"{name} changes sys.path"
        assert ".parents[" not in text, f"{name} looks up folders above itself"
        for node in ast.walk(ast.parse(text)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            outside = [n for n in names if n.split(".")[0] in ("components", "pipelines")]
            assert not outside, f"{name} imports the KFP side of the project: {outside}"
