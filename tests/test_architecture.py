"""The package's shape, checked: layers import only downwards, no import circles, no module too long.

The layers are the map in docs/architecture.md. Every import counts, also the ones inside functions (a
lazy import that hides a circle is still a circle); only ``if TYPE_CHECKING:`` blocks are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "opentelemetry_instrumentation_corevital"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Bottom to top. A module may import from its own layer and the ones below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("names", "_errors", "version", "package"),
    ("signals",),
    ("report", "_values", "_content_switch", "_config"),
    ("capture", "emit"),
    ("instrument",),
    ("configuration", "exporters", "_monitor", "testing", "cli", "viewer", "vllm_plugin", "__init__"),
)
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, module: str) -> set[str]:
    """Package modules imported by one file, as dotted names relative to the package."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
                target = node.module[len(PACKAGE) + 1 :]
            else:
                target = None
            if target is not None:
                for alias in node.names:  # "from . import names" imports a module
                    candidate = f"{target}.{alias.name}" if target else alias.name
                    found.add(candidate if _exists(candidate) else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    found.add(alias.name[len(PACKAGE) + 1 :])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard("")
    found.discard(module)
    return found


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        graph[module] = {m for m in _imports(path, module) if _exists(m)}
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[0] if module else "__init__"
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module!r} belongs to no layer: add it to LAYERS and to docs/architecture.md")


def test_every_module_has_a_layer_and_imports_only_downwards():
    upward = []
    for module, imported in _graph().items():
        for target in imported:
            if _layer(target) > _layer(module):
                upward.append(f"{module} -> {target}")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_import_circles():
    graph = _graph()

    # Package __init__ files re-export their children; a child importing its own package's __init__ is a
    # parent edge, not a circle of ideas, so the edge from an __init__ to its own children is left out.
    def edges(module: str) -> set[str]:
        return {t for t in graph[module] if not t.startswith(module + ".")} if _is_package(module) else graph[module]

    circles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges(module)):
            if state.get(target) == 1:
                circles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def _is_package(module: str) -> bool:
    return (ROOT.joinpath(*module.split(".")) / "__init__.py").is_file() if module else True


def test_no_private_module_imported_across_subpackages():
    crossing = []
    for module, imported in _graph().items():
        home = module.split(".")[0]
        for target in imported:
            parts = target.split(".")
            if parts[0] != home and any(p.startswith("_") and p != "__init__" for p in parts[1:]):
                crossing.append(f"{module} -> {target}")
    assert not crossing, "imports of another subpackage's private modules:\n" + "\n".join(sorted(crossing))


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_length(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it by idea (limit {MAX_LINES})"


MAX_CLASS_LINES = 300


def test_class_length():
    long = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.name} has {lines} lines")
    assert not long, f"classes over {MAX_CLASS_LINES} lines (split them by job):\n" + "\n".join(long)
