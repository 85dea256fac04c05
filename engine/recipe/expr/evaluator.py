"""The tree walk both simpleeval-based evaluators share: simpleeval's, with this package's names
(names.py) and limits (limits.py), and `a.b` meaning `a["b"]` (plain data, no Python attributes).
"""
from __future__ import annotations

import ast
import time
from types import ModuleType
from typing import Any, Callable

import simpleeval

from ..errors import ExprError
from . import limits
from .names import functions as shared_functions
from .names import operators

_DISALLOWED = simpleeval.DISALLOW_FUNCTIONS


class Evaluator(simpleeval.EvalWithCompoundTypes):
    """Evaluates parsed expressions over `names`. `functions` adds to the shared table (the
    planner's `recipe(...)`); time spent in those is not charged to the expression."""

    def __init__(self, names: Any, functions: dict[str, Callable[..., Any]] | None = None):
        self.budget = limits.Budget()
        super().__init__(operators=operators(self.budget), names=names)
        self.functions = {**shared_functions(self.budget), **(functions or {})}
        self.outside = frozenset(functions or ())
        self.compiled: dict[str, Callable[[Any], Any] | None] = {}  # recipe-level `${}` (template.py); None: seen once

    def eval(self, expr: str, previously_parsed=None, seconds: float | None = None) -> Any:
        """One evaluation, with a fresh budget (and `seconds` of wall time, if given)."""
        self.budget.reset(seconds)
        return super().eval(expr, previously_parsed)

    def _check_disallowed_items(self, item: Any) -> None:
        """simpleeval looks for modules and forbidden functions inside every value a node gives,
        a pass over a whole list at each node (`[vars.big for _ in range(999)]` walked it 999
        times). Names hold plain data, steps' handles and this package's functions, so the value
        itself is checked, not what it holds."""
        if type(item) in limits.SCALARS:
            return
        if isinstance(item, ModuleType) or (callable(item) and item in _DISALLOWED):
            raise simpleeval.FeatureNotAvailable("modules and this function are not allowed")

    def _eval_attribute(self, node):
        if node.attr.startswith("_"):
            raise ExprError(f"name {node.attr!r} is not allowed")
        return lookup(self._eval(node.value), node.attr)

    def _eval_subscript(self, node):
        return lookup(self._eval(node.value), self._eval(node.slice))

    def _eval_call(self, node):
        if not (isinstance(node.func, ast.Name) and node.func.id in self.outside):
            return super()._eval_call(node)
        started = time.monotonic()
        try:
            return super()._eval_call(node)
        finally:
            self.budget.pause(time.monotonic() - started)

    def _eval_list(self, node):  # `[*a, *a]` copies, `[a, a]` holds a twice
        out = super()._eval_list(node)
        self.budget.hold(out)
        return out

    def _eval_tuple(self, node):
        out = super()._eval_tuple(node)
        self.budget.hold(out)
        return out

    def _eval_dict(self, node):
        out = super()._eval_dict(node)
        self.budget.hold(out)
        return out

    def _eval_joinedstr(self, node):
        out = "".join(limits.text(self.budget, self._eval(n)) for n in node.values)
        if len(out) > limits.MAX_LENGTH:
            raise limits.too_long(len(out), "the f-string")
        return out

    def _eval_formattedvalue(self, node):
        value = self._eval(node.value)
        return limits.formatted(self.budget, value, self._eval(node.format_spec)) if node.format_spec else value

    def _eval_comprehension(self, node):
        """simpleeval's, with each step and what each item holds charged to the budget (its own
        counter was per evaluator, so rows evaluated one after the other shared it)."""
        out: Any = {} if isinstance(node, ast.DictComp) else []
        scope: dict[str, Any] = {}
        outer = self.nodes[ast.Name]

        def bind(target, value) -> None:
            if isinstance(target, ast.Name):
                scope[target.id] = value
            else:
                for t, v in zip(target.elts, value):
                    bind(t, v)

        def generate(i: int) -> None:
            g = node.generators[i]
            for value in self._eval(g.iter):
                self.budget.loop()
                bind(g.target, value)
                if all(self._eval(test) for test in g.ifs):
                    if i + 1 < len(node.generators):
                        generate(i + 1)
                    elif isinstance(out, dict):
                        key, value = self._eval(node.key), self._eval(node.value)
                        self.budget.hold(key)
                        self.budget.hold(value)
                        out[key] = value
                    else:
                        out.append(item := self._eval(node.elt))
                        self.budget.hold(item)

        self.nodes[ast.Name] = lambda n: scope[n.id] if n.id in scope else outer(n)
        try:
            generate(0)
        finally:
            self.nodes[ast.Name] = outer
        return out


def lookup(container: Any, key: Any) -> Any:
    """`a.b` and `a[b]`."""
    try:
        return container[key]
    except (KeyError, IndexError, TypeError):
        raise ExprError(missing(container, key)) from None


def missing(container: Any, key: Any) -> str:
    if isinstance(container, dict):
        known = ", ".join(map(str, list(container)[:12])) or "nothing"
        return f"no {key!r} here (known: {known})"
    if hasattr(container, "describe_missing"):
        return container.describe_missing(key)
    return f"cannot look up {key!r} in a {type(container).__name__}"
