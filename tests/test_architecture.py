"""The shape of the code, read from its syntax trees (ARCHITECTURE.md draws it):

- no import cycle among engine modules, lazy imports inside functions included;
- the four engine packages are layered recipe < cache < run < cli: none imports a higher one;
- no step family imports another (families share steps/common and steps/backends only);
- no code branches on an executor's name: executors differ through their interface;
- the engine imports no heavy library (torch, transformers, datasets, vllm) at module level;
- every engine module has a docstring, and no engine function is longer than 60 lines.

Imports under `if TYPE_CHECKING:` are for type checkers only and count nowhere.
"""
from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["recipe", "cache", "run", "cli"]  # each may import only those before it
SHARED = {"common", "backends"}  # what every step family may import
HEAVY = {"torch", "transformers", "datasets", "vllm"}
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(top: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / top).rglob("*.py"))}


@cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def import_nodes(node: ast.AST, top_level: bool = False):
    """(import node, at module level) for every import, skipping `if TYPE_CHECKING:` blocks."""
    for child in ast.iter_child_nodes(node):
        if _type_checking(child):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, top_level
        inner = top_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from import_nodes(child, inner)


def imported(module: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The modules an import statement names, resolved to the nearest one in `known`:
    `from engine.run import runner` names engine.run.runner (not the package), `from .x import y`
    is relative to the module's package."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    found = set()
    for name in names:
        while name and name not in known and "." in name:
            name = name.rpartition(".")[0]
        found.add(name)
    return found


def import_graph(top: str) -> dict[str, set[str]]:
    mods = modules(top)
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        edges = set()
        for node, _ in import_nodes(tree(path), top_level=True):
            edges |= imported(name, path, node, known)
        graph[name] = {m for m in edges if m in known and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_no_import_cycle_among_engine_modules():
    assert cycles(import_graph("engine")) == []


def test_the_cycle_finder_finds_a_lazy_import_cycle():
    graph = {"engine.a": {"engine.b"}, "engine.b": {"engine.c"}, "engine.c": {"engine.a"}, "engine.d": set()}
    assert cycles(graph) == [["engine.a", "engine.b", "engine.c"]]
    lazy = ast.parse("def f():\n    from engine.cli import commands\n")
    assert [(type(n).__name__, top) for n, top in import_nodes(lazy, top_level=True)] == [("ImportFrom", False)]
    checked = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engine.cli import x\n")
    assert [n.module for n, _ in import_nodes(checked, top_level=True)] == ["typing"]


def test_lower_layers_never_import_upper_ones():
    wrong = [f"{m} imports {dep}" for m, deps in import_graph("engine").items() for dep in sorted(deps)
             if layer(m) is not None and layer(dep) is not None and layer(dep) > layer(m)]
    assert wrong == []


def test_engine_top_level_holds_only_the_four_packages():
    assert sorted(p.name for p in (ROOT / "engine").iterdir() if p.name != "__pycache__") == \
        ["__init__.py", *sorted(LAYERS)]


def test_no_step_family_imports_another():
    wrong = []
    known = set(modules("steps"))
    for name, path in modules("steps").items():
        own = name.split(".")[1] if name.count(".") else None  # steps/__init__.py registers them all
        for node, _ in import_nodes(tree(path), top_level=True):
            for dep in imported(name, path, node, known):
                family = dep.split(".")[1] if dep.startswith("steps.") else None
                if own and family and family not in SHARED | {own}:
                    wrong.append(f"{name} imports {dep}")
    assert wrong == []


EXECUTOR_NAME = re.compile(r"\bexecutor\w*\.name\b|\bshards\b")


def test_no_code_branches_on_an_executor_name():
    wrong = []
    for name, path in {**modules("engine"), **modules("steps")}.items():
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Compare) and EXECUTOR_NAME.search(ast.unparse(node)):
                wrong.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert wrong == []


def test_the_engine_imports_no_heavy_library_at_module_level():
    wrong = []
    for name, path in modules("engine").items():
        for node, top in import_nodes(tree(path), top_level=True):
            roots = {a.name.split(".")[0] for a in node.names} if isinstance(node, ast.Import) else \
                {(node.module or "").split(".")[0]} if not node.level else set()
            if top and roots & HEAVY:
                wrong.append(f"{name}:{node.lineno}")
    assert wrong == []


def test_every_engine_module_has_a_docstring():
    assert [name for name, path in modules("engine").items() if not ast.get_docstring(tree(path))] == []


def test_no_engine_function_is_longer_than_60_lines():
    long = [f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for name, path in modules("engine").items() for node in ast.walk(tree(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []
