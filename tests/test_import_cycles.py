"""No import cycle in the product packages, counting imports under TYPE_CHECKING and inside
functions: they are design dependencies too (DESIGN §2)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"fedser_server": ROOT, "fedser_client": ROOT, "fedser_sim": ROOT, "fedser_shared": ROOT / "shared"}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, base in PACKAGES.items():
        for path in (base / package).rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The product modules `module` imports, wherever in the file the import statement is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a.b import c` imports the module a.b.c when there is one, else a name of a.b
            names.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names)
    return {name for name in names if name in modules and name != module}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imported(module, path, modules) for module, path in modules.items()}


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError("import cycle: " + " -> ".join(reversed(exc.args[1]))) from None


def _within(graph: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    inside = {m for m in graph if m.split(".")[0] == package}
    return {m: graph[m] & inside for m in inside}


@pytest.mark.parametrize("package", [
    "fedser_server", "fedser_sim", "fedser_shared", "fedser_client",
])
def test_a_package_has_no_import_cycle(package: str) -> None:
    graph = _within(import_graph(), package)
    assert len(graph) > 3 and any(graph.values()), "the walk found the package's modules and their imports"
    _assert_acyclic(graph)


def test_the_packages_depend_on_each_other_without_a_cycle() -> None:
    packages: dict[str, set[str]] = {}
    for module, imported in import_graph().items():
        top = module.split(".")[0]
        packages.setdefault(top, set()).update(m.split(".")[0] for m in imported if m.split(".")[0] != top)
    assert packages["fedser_server"] >= {"fedser_shared"}
    _assert_acyclic(packages)


def test_a_cycle_would_be_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        assert set(exc.args[1]) == {"a", "b", "c"}
    else:
        raise AssertionError("graphlib found no cycle in a -> b -> c -> a")
