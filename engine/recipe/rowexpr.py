"""Expressions evaluated once per row (`data.map` over a million rows): the loop over the rows
and its expressions are compiled once into one Python function, with the same operators,
checks, results and errors as simpleeval's walk.

simpleeval walks the syntax tree on every call, re-dispatching on each node; for `x + 1` that
is most of a trivial map's time. Here the tree is written out once as Python source and
compiled. The source is made only of names this module binds (`_k0`, `_op1`, ...): the
user's text never becomes code, constants and names are bound values, every operator is
simpleeval's own function (but `+` and `*` of two numbers, which its length checks let through),
and a node without a rule here is handed to simpleeval itself.
"""
from __future__ import annotations

import ast
import functools
from typing import Any, Callable, Iterable

import simpleeval

from .expr import ExprError, _Evaluator, _missing

_PLAIN = getattr(simpleeval, "_PRIMITIVE_TYPES", frozenset())  # values its check lets through at once
_NUMBERS = frozenset({int, float})


class RowFailed(Exception):
    """An expression failed on a row: the row's number (from 0), the expression's field
    (`derive.x`, `where`) and source, and the error simpleeval would have raised."""

    def __init__(self, row: int, field: str, source: str, error: Exception):
        super().__init__(f"{field}: {source!r} failed on row {row}: {error}")
        self.row, self.field, self.source, self.error = row, field, source, error


def row_mapper(ev: _Evaluator, derive: dict[str, str], where: str | None = None) -> Callable[[Iterable], list]:
    """A function: rows -> the rows `where` keeps, each given the `derive` columns in order (a
    later expression sees the earlier columns). The whole loop is one compiled function.
    Raises SyntaxError naming the expression; the function raises RowFailed."""
    exprs = [(f"derive.{col}", col, src) for col, src in derive.items()] + ([("where", None, where)] if where else [])
    trees = []
    for field, _, source in exprs:
        try:
            trees.append(ev.parse(source))
        except SyntaxError as e:
            raise SyntaxError(f"{field}: {source!r} is not a valid expression ({e.msg})") from None
    try:
        return _compiled(ev, exprs, trees, walk=False)
    except (SyntaxError, RecursionError, MemoryError):  # nested deeper than Python compiles
        return _compiled(ev, exprs, trees, walk=True)


def _compiled(ev: _Evaluator, exprs: list[tuple[str, str | None, str]], trees: list, walk: bool) -> Callable:
    w = _Writer(ev)
    body = []
    for (field, column, source), tree in zip(exprs, trees):
        # simpleeval names the expression in its errors; `_field` names it in ours
        body.append(f"_field = {w.bind((field, source))}; _ev.expr = {w.bind(source)}")
        value = w.walked(tree, source) if walk else w.expr(tree)
        body.append(f"if not {value}: continue" if column is None else f"_n[{w.bind(column)}] = {value}")
    body = body or ["pass"]  # rename or select only
    lines = ["def rows(_rows):",
             "    _out = []",
             "    _append = _out.append",
             "    for _i, _n in enumerate(_rows):",
             "        _ev.names = _n",
             "        try:",
             *(f"            {line}" for line in body),
             "        except Exception as _e:",
             "            raise _RowFailed(_i, *_field, _e) from None",
             "        _append(_n)",
             "    return _out"]
    names = {**w.bound, "_ev": ev, "_RowFailed": RowFailed}
    exec(_code("\n".join(lines) + "\n"), names)  # noqa: S102 - see the module doc
    return names["rows"]


@functools.lru_cache(maxsize=256)
def _code(source: str):
    """Compiled once per shape: `x + 1` and `x + 2` differ only in what `_k3` is bound to."""
    return compile(source, "<data.map expressions>", "exec")


class _Writer:
    """Python source for a simpleeval tree, one rule per node type."""

    def __init__(self, ev: _Evaluator):
        self.ev = ev
        self.bound: dict[str, Any] = {"_check": ev._check_disallowed_items, "_P": _PLAIN, "_NUM": _NUMBERS,
                                      "_lookup": _lookup}
        self.temps = 0

    def bind(self, value: Any, prefix: str = "_k") -> str:
        name = f"{prefix}{len(self.bound)}"
        self.bound[name] = value
        return name

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    def checked(self, source: str) -> str:
        """simpleeval checks every value it produces; plain values pass without a call."""
        t = self.temp()
        return f"({t} if type({t} := {source}) in _P else _check({t}) or {t})"

    def expr(self, node) -> str:  # noqa: C901 - one rule per node type
        ev = self.ev
        op = ev.operators.get(type(getattr(node, "op", None)))
        if isinstance(node, ast.Expression):
            return self.expr(node.body)
        if isinstance(node, ast.Expr):
            return self.expr(node.value)
        if isinstance(node, ast.Constant):
            try:
                return self.bind(ev._eval(node))  # its length check, once
            except Exception:  # noqa: BLE001 - raised again on every call, as simpleeval would
                return self.walked(node)
        if isinstance(node, ast.Name):
            name, missing = self.bind(node.id), self.bind(lambda: ev._eval_name(node), "_f")
            return self.checked(f"(_n[{name}] if {name} in _n else {missing}())")
        if isinstance(node, ast.BinOp) and op:
            return self.checked(self.binop(op, self.expr(node.left), self.expr(node.right)))
        if isinstance(node, ast.UnaryOp) and op:
            return self.checked(f"{self.bind(op, '_op')}({self.expr(node.operand)})")
        if isinstance(node, ast.Compare) and all(type(o) in ev.operators for o in node.ops):
            return self.checked(self.compare(node))
        if isinstance(node, ast.BoolOp):  # Python's `and`/`or` stop and return as simpleeval's do
            joiner = " and " if isinstance(node.op, ast.And) else " or "
            return self.checked("(" + joiner.join(self.expr(v) for v in node.values) + ")")
        if isinstance(node, ast.IfExp):
            return self.checked(f"({self.expr(node.body)} if {self.expr(node.test)} else {self.expr(node.orelse)})")
        if isinstance(node, ast.Attribute) and not node.attr.startswith("_"):
            return self.checked(f"_lookup({self.expr(node.value)}, {self.bind(node.attr)})")
        if isinstance(node, ast.Subscript):
            return self.checked(f"_lookup({self.expr(node.value)}, {self.expr(node.slice)})")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ev.functions
                and ev.functions[node.func.id] not in simpleeval.DISALLOW_FUNCTIONS):
            args = [self.expr(a) for a in node.args]
            kwargs = [f"{self.bind(k.arg)}: {self.expr(k.value)}" for k in node.keywords]
            fn = self.bind(ev.functions[node.func.id], "_fn")
            return self.checked(f"{fn}({', '.join(args)}{', **{' + ', '.join(kwargs) + '}' if kwargs else ''})")
        return self.walked(node)

    def binop(self, op: Callable, left: str, right: str) -> str:
        """simpleeval's `+` and `*` check lengths first, which numbers do not have: two numbers
        are added or multiplied without the call."""
        fn = self.bind(op, "_op")
        if op not in (simpleeval.safe_add, simpleeval.safe_mult):
            return f"{fn}({left}, {right})"
        a, b, sign = self.temp(), self.temp(), "+" if op is simpleeval.safe_add else "*"
        # `&`, not `and`: both sides are evaluated, left first, whatever their types
        return f"({a} {sign} {b} if (type({a} := {left}) in _NUM) & (type({b} := {right}) in _NUM) else {fn}({a}, {b}))"

    def compare(self, node) -> str:
        """`a < b < c`: each operand evaluated once, stopping at the first false result."""
        left, parts = self.expr(node.left), []
        for o, comparator in zip(node.ops, node.comparators):
            right, fn = self.temp(), self.bind(self.ev.operators[type(o)], "_op")
            parts.append(f"{fn}({left}, ({right} := {self.expr(comparator)}))")
            left = right
        return "(" + " and ".join(parts) + ")"

    def walked(self, node, source: str | None = None) -> str:
        """A node without a rule, or a whole tree (with its source): simpleeval walks it."""
        ev = self.ev
        walk = (lambda: ev.eval(source, previously_parsed=node)) if source else (lambda: ev._eval(node))
        return f"{self.bind(walk, '_f')}()"


def _lookup(container: Any, key: Any) -> Any:
    """`a.b` and `a[b]`, with the error `_Evaluator` gives."""
    try:
        return container[key]
    except (KeyError, IndexError, TypeError):
        raise ExprError(_missing(container, key)) from None
