"""Row predicates written as expressions, evaluated with simpleeval over record batches.

    where: ['problem_type == "has_answer_extracted"', 'tokens(generated_solution) <= 8000',
            'problem_source in ["aops_c6_high_school_olympiads", "MATH_training_set"]']

Names are the batch's columns. Two evaluators share the same parse and function names:

- vectorized (default): simpleeval walks the expression once per batch with the names bound
  to pyarrow arrays and operators mapped to pyarrow.compute kernels, so a predicate costs a
  few kernel calls per batch instead of a Python call per row;
- row-wise: plain simpleeval per row, used when an expression needs something the kernels do
  not do (the switch is logged). A row whose expression raises is dropped and counted.

Functions: len, tokens, words, lower, upper, strip, startswith, endswith, contains, matches,
number (a float, or null when the text is not a number), is_null, abs, min, max.
`matches(x, pattern)` is an RE2 search (no look-around or backreferences); the row-wise evaluator
runs the vectorized one's text kernels on each row, so both keep the same rows.
`tokens(x)` counts tokens with the step's tokenizer when one is configured, else an
approximation: runs of [A-Za-z0-9_] and single other non-space characters.
"""
from __future__ import annotations

import ast
import re
from functools import reduce
from typing import Any, Callable

TOKEN_PATTERN = r"[A-Za-z0-9_]+|[^A-Za-z0-9_ \t\n\r\f\v]"
NUMBER_PATTERN = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$"
FUNCTION_NAMES = ("len", "tokens", "words", "lower", "upper", "strip", "startswith", "endswith",
                  "contains", "matches", "number", "is_null", "abs", "min", "max")


def check_syntax(expr: str) -> str:
    """Raise ValueError with a readable message if `expr` is not one Python expression."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"invalid expression {expr!r}: {e.msg} at column {e.offset}") from None
    del tree
    return expr


def referenced_names(exprs: list[str]) -> list[str]:
    """The names the expressions read (columns, or unknown names), not the functions they call."""
    names: list[str] = []
    for expr in exprs:
        tree = ast.parse(expr.strip(), mode="eval")
        called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and id(node) not in called and node.id not in names:
                names.append(node.id)
    return names


class Unsupported(Exception):
    """The vectorized evaluator cannot do this expression; use the row-wise one."""


def parse_number_array(arr):
    """Strings to float64 (null where not a number); numeric arrays to float64 (NaN -> null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        ok = pc.fill_null(pc.match_substring_regex(arr, NUMBER_PATTERN), False)
        clean = pc.if_else(ok, pc.utf8_trim_whitespace(arr), pa.scalar(None, t))
        return pc.cast(clean, pa.float64())
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        out = pc.cast(arr, pa.float64())
        return pc.if_else(pc.fill_null(pc.is_nan(out), False), pa.scalar(None, pa.float64()), out)
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.float64())
    raise Unsupported(f"cannot read numbers from a column of type {t}")


def parse_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return None if value != value else float(value)
    if isinstance(value, str) and re.match(NUMBER_PATTERN, value):
        return float(value)
    return None


class Predicates:
    """Compiled `where` expressions. `mask(batch)` gives (keep, errors, first_error): numpy bool
    arrays (errors is None when no row raised) and the first error message."""

    def __init__(self, exprs: list[str], count_tokens: Callable[[list[str]], list[int]] | None = None,
                 vectorized: bool = True):
        from simpleeval import EvalWithCompoundTypes

        self.exprs = list(exprs)
        self.parsed = [EvalWithCompoundTypes.parse(e) for e in self.exprs]
        self.count_tokens = count_tokens
        self.vectorized = vectorized
        self.fallback_reason: str | None = None
        for expr, tree in zip(self.exprs, self.parsed):
            bad = _first_unvectorizable(tree)
            if self.vectorized and bad:
                self.vectorized, self.fallback_reason = False, f"{expr!r} uses {bad}"

    def __bool__(self) -> bool:
        return bool(self.exprs)

    # ------------------------------------------------------------------ evaluation
    def mask(self, batch):
        import numpy as np

        n = batch.num_rows
        keep = np.ones(n, dtype=bool)
        if not self.exprs:
            return keep, None, None
        if self.vectorized:
            try:
                for expr, tree in zip(self.exprs, self.parsed):
                    keep &= self._vector_mask(expr, tree, batch)
                return keep, None, None
            except Unsupported as e:
                self.vectorized = False
                self.fallback_reason = str(e)
                keep[:] = True
        return self._row_mask(batch, keep)

    def _vector_mask(self, expr, tree, batch):
        import pyarrow as pa
        import pyarrow.compute as pc

        names = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
        ev = _arrow_evaluator(names, self.count_tokens)
        try:
            result = ev.eval(expr, previously_parsed=tree)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
            raise Unsupported(f"{expr!r}: {e}") from None
        if isinstance(result, (pa.Array, pa.ChunkedArray)):
            if not pa.types.is_boolean(result.type):
                raise Unsupported(f"{expr!r} gives {result.type}, not true/false")
            return pc.fill_null(result, False).to_numpy(zero_copy_only=False)
        if isinstance(result, pa.Scalar):
            result = result.as_py()
        if isinstance(result, bool):
            import numpy as np

            return np.full(batch.num_rows, result)
        raise Unsupported(f"{expr!r} gives {type(result).__name__}, not true/false")

    def _row_mask(self, batch, keep):
        import numpy as np
        from simpleeval import InvalidExpression

        errors, first = np.zeros(batch.num_rows, dtype=bool), None
        ev = _row_evaluator(self.count_tokens)
        for i, row in enumerate(batch.to_pylist()):
            ev.names = row
            for expr, tree in zip(self.exprs, self.parsed):
                try:
                    ok = bool(ev.eval(expr, previously_parsed=tree))
                except InvalidExpression:
                    raise
                except Exception as e:  # bad data in this row (None < 5, ...): counted, row dropped
                    errors[i] = True
                    first = first or f"{expr!r}: {type(e).__name__}: {e}"
                    ok = False
                if not ok:
                    keep[i] = False
                    break
        return keep, (errors if errors.any() else None), first


def _is_arr(x) -> bool:
    import pyarrow as pa

    return isinstance(x, (pa.Array, pa.ChunkedArray, pa.Scalar))


def _div(a, b):
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.divide(pc.cast(a, pa.float64()) if _is_arr(a) else float(a),
                     pc.cast(b, pa.float64()) if _is_arr(b) else float(b))


def _contains(x, y):  # `x in y`
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(y, (list, tuple, set, frozenset)):
        if not _is_arr(x):
            return x in y
        return pc.is_in(x, value_set=pa.array(list(y)))
    if isinstance(x, str) and _is_arr(y):
        return pc.match_substring(y, x)
    raise Unsupported("`in` needs a list on the right or a text on the left")


def _length(x):
    import pyarrow as pa
    import pyarrow.compute as pc

    t = x.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pc.utf8_length(x)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pc.list_value_length(x)
    raise Unsupported(f"len() of {t}")


def _token_counter(count_tokens):
    """tokens(x): a tokenizer's counts when one is configured, else an approximate regex count."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def tokens(x):
        if count_tokens is None:
            return pc.count_substring_regex(x, TOKEN_PATTERN)
        texts = x.to_pylist()
        return pa.array([None if t is None else n for t, n in
                         zip(texts, count_tokens(["" if t is None else t for t in texts]))], pa.int64())

    return tokens


def _arrow_operators() -> dict:
    import pyarrow.compute as pc

    return {
        ast.Eq: pc.equal, ast.NotEq: pc.not_equal, ast.Lt: pc.less, ast.LtE: pc.less_equal,
        ast.Gt: pc.greater, ast.GtE: pc.greater_equal,
        ast.Add: pc.add, ast.Sub: pc.subtract, ast.Mult: pc.multiply, ast.Div: _div,
        ast.USub: pc.negate, ast.UAdd: lambda x: x,
        ast.Not: lambda x: pc.invert(x) if _is_arr(x) else (not x),
        ast.In: _contains, ast.NotIn: lambda x, y: pc.invert(_contains(x, y)),
        ast.Is: lambda x, y: pc.is_null(x) if y is None else _unsupported("`is` other than `is None`"),
        ast.IsNot: lambda x, y: pc.is_valid(x) if y is None else _unsupported("`is not` other than `is not None`"),
    }


def _arrow_functions(count_tokens) -> dict:
    import pyarrow.compute as pc

    return {
        "len": _length, "tokens": _token_counter(count_tokens), "words": lambda x: pc.count_substring_regex(x, r"\S+"),
        "lower": pc.utf8_lower, "upper": pc.utf8_upper, "strip": pc.utf8_trim_whitespace,
        "startswith": lambda x, p: pc.starts_with(x, p), "endswith": lambda x, p: pc.ends_with(x, p),
        "contains": lambda x, p: pc.match_substring(x, p),
        "matches": lambda x, p: pc.match_substring_regex(x, p),
        "number": parse_number_array, "is_null": pc.is_null, "abs": pc.abs,
        "min": lambda *a: pc.min_element_wise(*a), "max": lambda *a: pc.max_element_wise(*a),
    }


def _arrow_evaluator(names: dict[str, Any], count_tokens):
    """simpleeval over whole Arrow columns: operators and functions map to pyarrow.compute."""
    import pyarrow.compute as pc
    from simpleeval import EvalWithCompoundTypes

    class ArrowEval(EvalWithCompoundTypes):
        def _eval_boolop(self, node):
            values = [self._eval(v) for v in node.values]
            combine = pc.and_kleene if isinstance(node.op, ast.And) else pc.or_kleene
            return reduce(combine, values)

        def _eval_compare(self, node):
            left, result = self._eval(node.left), None
            for op, comp in zip(node.ops, node.comparators):
                right = self._eval(comp)
                r = self.operators[type(op)](left, right)
                result = r if result is None else pc.and_kleene(result, r)
                left = right
            return result

        def _eval_ifexp(self, node):
            return pc.if_else(self._eval(node.test), self._eval(node.body), self._eval(node.orelse))

        def _eval_call(self, node):
            if isinstance(node.func, ast.Name) and node.func.id not in self.functions:
                from simpleeval import FunctionNotDefined

                raise FunctionNotDefined(node.func.id, self.expr)
            return super()._eval_call(node)

    return ArrowEval(operators=_arrow_operators(), functions=_arrow_functions(count_tokens), names=dict(names))


_VECTOR_NODES = (ast.Expr, ast.Expression, ast.BoolOp, ast.Compare, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name,
                 ast.Constant, ast.List, ast.Tuple, ast.Set, ast.IfExp, ast.Load, ast.boolop, ast.cmpop,
                 ast.operator, ast.unaryop)


def _first_unvectorizable(tree) -> str | None:
    """Subscripts, attributes, comprehensions... have no column-wise meaning: evaluate row-wise."""
    for node in ast.walk(tree):
        if not isinstance(node, _VECTOR_NODES):
            return type(node).__name__.lower()
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            return "a method call"
    return None


def _unsupported(what: str):
    raise Unsupported(what)


def _null_safe(fn):
    """Null in, null out: the row-wise twin of how pyarrow kernels treat nulls."""
    def wrapped(*args):
        return None if any(a is None for a in args) else fn(*args)

    return wrapped


def _row_evaluator(count_tokens):
    """simpleeval over one row with SQL-style nulls (comparisons with None give None, `and`/`or`
    are three-valued, a None result drops the row), so it keeps the same rows as the
    vectorized evaluator."""
    import operator as op

    from simpleeval import DEFAULT_OPERATORS, EvalWithCompoundTypes

    ops = dict(DEFAULT_OPERATORS)
    for node in (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Add, ast.Sub, ast.Mult, ast.Div,
                 ast.USub, ast.UAdd, ast.Not):
        ops[node] = _null_safe(ops[node])
    ops[ast.In] = _null_safe(lambda x, y: op.contains(y, x))
    ops[ast.NotIn] = _null_safe(lambda x, y: not op.contains(y, x))
    functions = {name: (f if name == "is_null" else _null_safe(f)) for name, f in _row_functions(count_tokens).items()}

    class RowEval(EvalWithCompoundTypes):
        def _eval_boolop(self, node):
            values = [self._eval(v) for v in node.values]
            if isinstance(node.op, ast.And):
                if any(v is not None and not v for v in values):
                    return False
                return None if any(v is None for v in values) else True
            if any(v is not None and v for v in values):
                return True
            return None if any(v is None for v in values) else False

        def _eval_compare(self, node):
            left, result = self._eval(node.left), True
            for operation, comp in zip(node.ops, node.comparators):
                right = self._eval(comp)
                r = self.operators[type(operation)](left, right)
                if r is not None and not r:
                    return False
                if r is None:
                    result = None
                left = right
            return result

        def _eval_ifexp(self, node):
            test = self._eval(node.test)
            return None if test is None else (self._eval(node.body) if test else self._eval(node.orelse))

    return RowEval(operators=ops, functions=functions)


def _row_functions(count_tokens) -> dict[str, Callable]:
    def tokens(x):
        if x is None:
            return None
        return count_tokens([x])[0] if count_tokens else len(re.findall(TOKEN_PATTERN, x))

    arrow = _arrow_functions(count_tokens)
    return {
        "len": len, "tokens": tokens, "words": _one_row(arrow["words"]),
        "lower": _one_row(arrow["lower"]), "upper": _one_row(arrow["upper"]), "strip": _one_row(arrow["strip"]),
        "startswith": str.startswith, "endswith": str.endswith,
        "contains": lambda x, p: p in x, "matches": _one_row(arrow["matches"]),
        "number": parse_number, "is_null": lambda x: x is None, "abs": abs, "min": min, "max": max,
    }


def _one_row(kernel: Callable) -> Callable:
    """The vectorized evaluator's kernel on one row's text, so both evaluators keep the same rows.
    Python's own differ on some text: `re` backtracks (`(a|aa)+$` took seconds on 34 a's and a b)
    and its `\\d` matches Arabic-Indic digits, RE2's does not; `str.split` splits words at a
    no-break space, `\\S+` does not; "ß".upper() is "SS"."""
    def one(text: str, *args):
        import pyarrow as pa

        return kernel(pa.array([text], pa.string()), *args)[0].as_py()

    return one
