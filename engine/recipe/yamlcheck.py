"""YAML that would cost the machine once read is refused before anything is built from it: a
file over MAX_FILE_BYTES (checked by the loader before reading it), an alias that refers to a
node containing it, aliases that expand past MAX_ALIAS_NODES nodes (billion laughs), and
nesting deeper than MAX_DEPTH.

The check runs on the composed node graph, libyaml's (yamlfast.py) or ruamel's (loader.py),
which share a shape: `node.id` is "scalar", "sequence" or "mapping", and an alias is the same
node object met again. Each node is visited once, so the check costs what the file is, not what
it would expand to.
"""
from __future__ import annotations

from typing import Any, NoReturn

from .errors import RecipeError

MAX_FILE_BYTES = 2 << 20  # a recipe file: a 1,000-step recipe is ~100 KB; ruamel reads ~0.2 MB/s (a merge key)
MAX_ALIAS_NODES = 10_000  # nodes aliases may add, about what Go's yaml.v3 allows a small document
MAX_DEPTH = 100  # levels of nesting; recipes use under 10
TOO_DEEP = f"the YAML is nested more than {MAX_DEPTH} levels deep"


def refuse(problem: str, mark: Any, file: str) -> NoReturn:
    raise RecipeError(problem, f"{file}:{mark.line + 1}:{mark.column + 1}")


def check(root: Any, file: str) -> None:
    """Raise RecipeError (file:line:col of the alias or the nesting) if `root` is a YAML bomb."""
    sizes: dict[int, int] = {id(root): -1}  # node -> its nodes with aliases expanded; -1 while inside it
    expanded = 0

    def visit(node: Any, depth: int) -> int:
        nonlocal expanded
        total = 1
        if node.id == "mapping":  # an alias in a mapping is placed by its key
            children = [(child, key.start_mark) for key, value in node.value for child in (key, value)]
        else:
            children = [(child, node.start_mark) for child in node.value]
        for child, mark in children:
            if child.id == "scalar":
                total += 1
                continue
            n = sizes.get(id(child))
            if n == -1:
                refuse("a YAML alias refers to a node that contains it (a recursive alias)", mark, file)
            elif n is None:
                if depth >= MAX_DEPTH:
                    refuse(TOO_DEEP, child.start_mark, file)
                sizes[id(child)] = -1
                n = sizes[id(child)] = visit(child, depth + 1)
            else:  # an alias: its nodes count again, as they will once the document is built
                expanded += n
                if expanded > MAX_ALIAS_NODES:
                    refuse(f"YAML aliases expand to more than {MAX_ALIAS_NODES:,} nodes (MAX_ALIAS_NODES)", mark, file)
            total += n
        return total

    if root is not None and root.id != "scalar":
        visit(root, 1)
