"""Imports point one way: no cycle among the package's modules, function-level imports included.

The graph is built from the source (ast), so an import hidden inside a function counts as much
as one at the top of a module. Only the blueprint imports inside `create_app` are exempt: the app
factory imports the faces it assembles (the flaskr idiom), and nothing imports the factory back.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "chatgpt_web"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in ROOT.rglob("*.py")}


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports anywhere in its source (a package counts only when
    nothing more specific, a submodule, is named)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, path.name == "__init__.py", node)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {name: imports_of(name, path, set(known)) for name, path in known.items()}
    # The app factory's blueprint imports (inside create_app) are the one sanctioned exception.
    edges[PACKAGE] = {target for target in edges[PACKAGE]
                      if not target.startswith(f"{PACKAGE}.api")}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_function_level_imports(tmp_path):
    (tmp_path / "lazy.py").write_text("def later():\n    from .config import Config\n")
    known = {f"{PACKAGE}.lazy", f"{PACKAGE}.config"}
    assert imports_of(f"{PACKAGE}.lazy", tmp_path / "lazy.py", known) == {f"{PACKAGE}.config"}


def test_there_is_no_import_cycle_in_the_package():
    assert cycles(graph()) == []


def test_config_imports_only_the_errors_module():
    assert graph()[f"{PACKAGE}.config"] <= {f"{PACKAGE}.errors"}


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
