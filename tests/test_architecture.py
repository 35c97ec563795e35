"""The layers of docs/architecture.md hold: every import (also inside functions) goes down or
stays inside its own package, no module imports itself back through others, and the core layers
neither draw nor print."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: bottom first; a module may import its own package and any package of a lower layer
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("typed", "grids", "factories"),
    ("data", "models", "sparsity"),
    ("methods",),
    ("flow", "landscape"),
    ("config",),
    ("store",),
    ("training",),
    ("sweep",),
    ("plots",),
    ("analysis",),
    ("report",),
    ("studies",),
    ("cli", "__main__", "__init__"),
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}
#: core layers return data: they never draw (matplotlib, sparseflow.plots) or print
CORE = ("sparsity", "methods", "flow", "landscape", "models")


def module_name(path: Path, src: Path = SRC) -> str:
    """Dotted module name of a file under ``src`` (``pkg/__init__.py`` -> ``pkg``)."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(module: str, source: str, is_package: bool) -> list[tuple[str, int]]:
    """(imported sparseflow module, line) for every import in ``source``, lazy ones included;
    ``from pkg import name`` counts as ``pkg.name`` (a submodule or a name of ``pkg``)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join([*here, *([base] if base else [])])
            out += [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return [(m, line) for m, line in out if m == "sparseflow" or m.startswith("sparseflow.")]


def unit_of(module: str) -> str:
    """The layer unit of a module: its top-level package or module under ``sparseflow``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def read_tree(src: Path = SRC) -> dict[str, tuple[str, bool]]:
    """``{module: (source, is_package)}`` of every file of the sparseflow package."""
    return {module_name(p, src): (p.read_text(), p.name == "__init__.py")
            for p in sorted((src / "sparseflow").rglob("*.py"))}


def layer_violations(tree: dict[str, tuple[str, bool]]) -> list[str]:
    """One line per import that goes up a layer or sideways into another package."""
    bad = []
    for module, (source, is_pkg) in tree.items():
        unit = unit_of(module)
        if unit not in RANK:
            bad.append(f"{module}: not in any layer of docs/architecture.md")
            continue
        for target, line in imports_of(module, source, is_pkg):
            other = unit_of(target) if target != "sparseflow" else "__init__"
            if other == unit or RANK[unit] == RANK["cli"]:
                continue
            if other not in RANK or RANK[other] >= RANK[unit]:
                bad.append(f"{module}:{line} imports {target} ({unit} may not import {other})")
    return bad


def _resolve(target: str, modules: set[str]) -> str | None:
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def import_cycles(tree: dict[str, tuple[str, bool]]) -> list[list[str]]:
    """Cycles of the module import graph (lazy imports included; a package's ``__init__``
    re-exporting its own submodules is not an edge back)."""
    modules = set(tree)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, (source, is_pkg) in tree.items():
        for target, _ in imports_of(module, source, is_pkg):
            dep = _resolve(target, modules)
            if dep and dep != module and not module.startswith(dep + "."):
                graph[module].add(dep)
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d):], d])
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def drawing_in_core(tree: dict[str, tuple[str, bool]]) -> list[str]:
    """Core-layer modules that import matplotlib or sparseflow.plots, or call print()."""
    bad = []
    for module, (source, _) in tree.items():
        if unit_of(module) not in CORE:
            continue
        for node in ast.walk(ast.parse(source)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n.startswith(("matplotlib", "sparseflow.plots")) for n in names):
                bad.append(f"{module}:{node.lineno} draws ({names[0]})")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "print"):
                bad.append(f"{module}:{node.lineno} prints")
    return bad


def test_every_import_goes_down_a_layer():
    assert layer_violations(read_tree()) == []


def test_no_import_cycles():
    assert import_cycles(read_tree()) == []


def test_core_layers_neither_draw_nor_print():
    assert drawing_in_core(read_tree()) == []


def test_every_layer_unit_exists():
    tree = read_tree()
    units = {unit_of(m) for m in tree}
    assert units == set(RANK)


@pytest.mark.parametrize(("module", "line", "kind"), [
    ("sparseflow.sparsity.masks", "from sparseflow.methods import SET", "up"),
    ("sparseflow.flow.norms", "from sparseflow.training.run import execute", "up"),
    ("sparseflow.data.registry", "from ..models import build_model", "sideways"),
    ("sparseflow.training.loop", "    from sparseflow.analysis import runs", "lazy up"),
])
def test_an_added_upward_import_is_caught(module, line, kind):
    tree = read_tree()
    source, is_pkg = tree[module]
    if line.startswith(" "):
        line = f"def _added():\n{line}\n"
    tree[module] = (source + "\n" + line + "\n", is_pkg)
    found = layer_violations(tree)
    assert len(found) == 1 and found[0].startswith(module), (kind, found)


def test_an_added_cycle_is_caught():
    tree = read_tree()
    # masks.py imports kernels.py: kernels importing masks closes a loop inside one layer
    source, is_pkg = tree["sparseflow.sparsity.kernels"]
    tree["sparseflow.sparsity.kernels"] = (source + "\nfrom sparseflow.sparsity import masks\n",
                                           is_pkg)
    cycles = import_cycles(tree)
    assert cycles and all("sparseflow.sparsity.kernels" in c for c in cycles)


def test_drawing_in_a_core_layer_is_caught():
    tree = read_tree()
    source, is_pkg = tree["sparseflow.flow.norms"]
    tree["sparseflow.flow.norms"] = (source + "\nimport matplotlib\nprint('x')\n", is_pkg)
    assert len(drawing_in_core(tree)) == 2
