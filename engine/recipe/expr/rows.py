"""The compiled evaluator. Per-row expressions (`data.map`'s `derive` and `where` over a million
rows): the loop over the rows and its expressions are compiled once into one Python function,
with the same operators, checks, limits, results and errors as the tree walk (evaluator.py).
A recipe-level `${}` (template.py) is compiled alone (`expression`): a foreach's templates are
evaluated once per instance, 100,000 times in a big plan.

The walk re-dispatches on each node on every call; for `x + 1` that is most of a trivial map's
time. Here the tree is written out once as Python source and compiled. The source is made only
of names this module binds (`_k0`, `_op1`, ...): the user's text never becomes code, constants
and names are bound values, every operator is the shared one (names.py) but `+`, `*` and `%`
of two numbers, which are written inline (a product of integers checked against
MAX_INT_DIGITS), and a node without a rule here is handed to the walk itself.

Each row is one evaluation under limits.py (its `derive` and `where` together): its budget
(items built, comprehension steps) starts afresh, and there is no clock (a row's cost is the
step's own). A recipe-level expression's caller starts its budget and clock; a call of a
function the evaluator was given (the planner's `recipe(...)`) is walked, so that its time is
not the expression's.
"""
from __future__ import annotations

import ast
import functools
from typing import Any, Callable, Iterable

import simpleeval

from . import limits
from .evaluator import Evaluator, lookup

_PLAIN = getattr(simpleeval, "_PRIMITIVE_TYPES", frozenset())  # values the walk's check passes at once
_NUMBERS = frozenset({int, float})
_INLINE = {ast.Add: "+", ast.Mult: "*", ast.Mod: "%"}  # guarded in Python; the rest are C functions


class RowFailed(Exception):
    """An expression failed on a row: the row's number (from 0), the expression's field
    (`derive.x`, `where`) and source, and the error simpleeval would have raised."""

    def __init__(self, row: int, field: str, source: str, error: Exception):
        super().__init__(f"{field}: {source!r} failed on row {row}: {error}")
        self.row, self.field, self.source, self.error = row, field, source, error


def row_mapper(ev: Evaluator, derive: dict[str, str], where: str | None = None) -> Callable[[Iterable], list]:
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


def _compiled(ev: Evaluator, exprs: list[tuple[str, str | None, str]], trees: list, walk: bool) -> Callable:
    w = _Writer(ev)
    body = []
    for (field, column, source), tree in zip(exprs, trees):
        # simpleeval names the expression in its errors; `_field` names it in ours
        body.append(f"_field = {w.bind((field, source))}; _ev.expr = {w.bind(source)}")
        value = w.walked(tree) if walk else w.expr(tree)
        body.append(f"if not {value}: continue" if column is None else f"_n[{w.bind(column)}] = {value}")
    body = body or ["pass"]  # rename or select only
    lines = ["def rows(_rows):",
             "    _out = []",
             "    _append = _out.append",
             "    for _i, _n in enumerate(_rows):",
             "        _ev.names = _n",
             "        _b.built = _b.loops = 0",
             "        try:",
             *(f"            {line}" for line in body),
             "        except Exception as _e:",
             "            raise _RowFailed(_i, *_field, _e) from None",
             "        _append(_n)",
             "    return _out"]
    names = {**w.bound, "_ev": ev, "_b": ev.budget, "_RowFailed": RowFailed}
    exec(_code("\n".join(lines) + "\n"), names)  # noqa: S102 - see the module doc
    return names["rows"]


def expression(ev: Evaluator, tree) -> Callable[[Any], Any]:
    """One parsed expression as a function of its names (a mapping; a name it lacks is looked up
    in `ev.names`, as the walk does). Its errors are those the walk raises."""
    try:
        return _function(ev, tree, walk=False)
    except (SyntaxError, RecursionError, MemoryError):  # nested deeper than Python compiles
        return _function(ev, tree, walk=True)


def _function(ev: Evaluator, tree, walk: bool) -> Callable[[Any], Any]:
    w = _Writer(ev)
    value = w.walked(tree) if walk else w.expr(tree)
    names = w.bound
    exec(_code(f"def one(_n):\n    return {value}\n"), names)  # noqa: S102 - see the module doc
    return names["one"]


@functools.lru_cache(maxsize=256)
def _code(source: str):
    """Compiled once per shape: `x + 1` and `x + 2` differ only in what `_k3` is bound to."""
    return compile(source, "<expressions>", "exec")


class _Writer:
    """Python source for a simpleeval tree, one rule per node type."""

    def __init__(self, ev: Evaluator):
        self.ev = ev
        self.bound: dict[str, Any] = {"_check": ev._check_disallowed_items, "_P": _PLAIN, "_NUM": _NUMBERS,
                                      "_lookup": lookup, "_BIG": limits.BIG, "_NBIG": -limits.BIG,
                                      "_int": limits.check_int}
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
            return self.checked(self.binop(type(node.op), op, self.expr(node.left), self.expr(node.right)))
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
                and node.func.id not in ev.outside and ev.functions[node.func.id] not in simpleeval.DISALLOW_FUNCTIONS):
            args = [self.expr(a) for a in node.args]
            kwargs = [f"{self.bind(k.arg)}: {self.expr(k.value)}" for k in node.keywords]
            fn = self.bind(ev.functions[node.func.id], "_fn")
            return self.checked(f"{fn}({', '.join(args)}{', **{' + ', '.join(kwargs) + '}' if kwargs else ''})")
        return self.walked(node)

    def binop(self, kind: type, op: Callable, left: str, right: str) -> str:
        """`+`, `*` and `%` of two numbers (not bools) are written inline, as the guarded operator
        would do them; anything else goes through the operator."""
        fn, sign = self.bind(op, "_op"), _INLINE.get(kind)
        if sign is None:
            return f"{fn}({left}, {right})"
        a, b = self.temp(), self.temp()
        value = f"{a} {sign} {b}"
        if sign == "*":
            r = self.temp()
            value = f"({r} if type({r} := {a} * {b}) is float or _NBIG < {r} < _BIG else _int({r}))"
        # `&`, not `and`: both sides are evaluated, left first, whatever their types
        return f"({value} if (type({a} := {left}) in _NUM) & (type({b} := {right}) in _NUM) else {fn}({a}, {b}))"

    def compare(self, node) -> str:
        """`a < b < c`: each operand evaluated once, stopping at the first false result."""
        left, parts = self.expr(node.left), []
        for o, comparator in zip(node.ops, node.comparators):
            right, fn = self.temp(), self.bind(self.ev.operators[type(o)], "_op")
            parts.append(f"{fn}({left}, ({right} := {self.expr(comparator)}))")
            left = right
        return "(" + " and ".join(parts) + ")"

    def walked(self, node) -> str:
        """A node without a rule, or a whole tree: simpleeval walks it (on the row's budget)."""
        ev = self.ev
        return f"{self.bind(lambda: ev._eval(node), '_f')}()"
