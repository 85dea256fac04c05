"""Recipe-level `${...}`: evaluated while a recipe is planned, in `vars`, `with`, `inputs` and
`foreach`, over the names vars, item and steps (see plan.py) and the shared function table.

A string that is exactly one `${...}` keeps the value's type; a string with text around
expressions becomes a string. Each `${...}` is one evaluation under limits.py, with a clock of
MAX_SECONDS. An expression an evaluator meets again is compiled (rows.py `expression`):
planning a foreach evaluates the same few templates for every instance.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import threading
from typing import Any, Callable, Iterator

import simpleeval

from ..errors import ExprError, RecipeError
from . import limits
from .evaluator import Evaluator
from .names import FUNCTION_NAMES
from .rows import expression


def has_expr(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def evaluate(text: str, names: dict[str, Any], functions: dict[str, Callable[..., Any]] | None = None,
             ev: Evaluator | None = None) -> Any:
    """Evaluate every `${...}` in `text`. Raises ExprError with a readable reason."""
    pieces = _pieces(text)
    if len(pieces) == 1:
        return text
    if ev is None:
        with borrowed(names, functions) as ev:
            return evaluate(text, names, functions, ev)
    if len(pieces) == 3 and not pieces[0] and not pieces[2]:
        return _eval_one(ev, pieces[1])
    return "".join(_eval_one(ev, piece, as_text=True) if i % 2 else piece for i, piece in enumerate(pieces))


@functools.lru_cache(maxsize=4096)
def _pieces(text: str) -> tuple[str, ...]:
    """Text and expression sources, alternately: "a ${x}!" -> ("a ", "x", "!")."""
    out, pos = [], 0
    while (start := text.find("${", pos)) != -1:
        end = _closing(text, start + 2)
        if end is None:
            raise ExprError("unclosed '${' (expected '${ expression }')")
        out += [text[pos:start], text[start + 2 : end]]
        pos = end + 1
    return (*out, text[pos:])


def _closing(text: str, i: int) -> int | None:
    """Where the `}` that ends the expression starting at `i` is: a `{...}` inside it (a mapping,
    `**{"vars.x": 1}`) and braces inside its strings do not end it."""
    depth, quote = 0, ""
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return None


def mentions(text: str, name: str) -> bool:
    """Whether a `${...}` of `text` reads `name` (a foreach's `item`; a comprehension variable of
    that name counts too). Expressions that do not parse count as reading it."""
    try:
        trees = [_parse(source.strip()) for source in _pieces(text)[1::2]]
    except (SyntaxError, simpleeval.InvalidExpression, ExprError):
        return True
    return any(isinstance(n, ast.Name) and n.id == name for tree in trees for n in ast.walk(tree))


def evaluator(names: dict[str, Any], functions: dict[str, Callable[..., Any]] | None = None) -> Evaluator:
    return Evaluator(names, functions)


@contextlib.contextmanager
def borrowed(names: dict[str, Any], functions) -> Iterator[Evaluator]:
    """An evaluator from this thread's pool: building one (which also adds a warnings filter)
    cost more than the two expressions a foreach instance evaluates. A pool, not one shared
    evaluator, because names may be lazy and evaluate expressions of their own."""
    pools = _pool.__dict__
    if len(pools) > 16:  # one per planner's function set: keep a long process from collecting them
        pools.clear()
    pool = pools.setdefault(tuple(sorted((functions or {}).items())), [])
    ev = pool.pop() if pool else evaluator(names, functions)
    ev.names = names
    try:
        yield ev
    finally:
        pool.append(ev)


_pool = threading.local()


@functools.lru_cache(maxsize=4096)
def _parse(source: str):
    """A foreach over 10,000 items evaluates the same few expressions 10,000 times."""
    return Evaluator.parse(source)


def _value(ev: Evaluator, source: str) -> Any:
    """Walked the first time this evaluator sees `source`, compiled the second time: most of a
    chain's expressions are evaluated once, a foreach's for every instance."""
    fn = ev.compiled.get(source, _UNSEEN)
    if fn is _UNSEEN:
        if len(ev.compiled) >= 4096:  # a long process planning many recipes
            ev.compiled.clear()
        ev.compiled[source] = None
        return ev.eval(source, previously_parsed=_parse(source), seconds=limits.MAX_SECONDS)
    if fn is None:
        fn = ev.compiled[source] = expression(ev, _parse(source))
    ev.expr = source  # simpleeval names it in its errors
    ev.budget.reset(limits.MAX_SECONDS)
    return fn(ev.names)


_UNSEEN = object()


def _eval_one(ev: Evaluator, source: str, as_text: bool = False) -> Any:
    source = source.strip()
    if not source:
        raise ExprError("empty expression '${}'")
    try:
        value = _value(ev, source)
        return limits.text(ev.budget, value) if as_text else value
    except limits.LimitError as e:
        raise ExprError(f"'${{{source}}}' is over a limit: {e}") from None
    except ExprError:
        raise
    except RecipeError as e:  # in a recipe recipe() plans: it names its own file and line
        raise ExprError(str(e)) from None
    except simpleeval.NameNotDefined as e:
        known = ", ".join(sorted(k for k in ev.names)) or "nothing"
        raise ExprError(f"unknown name {e.name!r} in '${{{source}}}' (known names: {known})") from None
    except simpleeval.FunctionNotDefined as e:
        allowed = ", ".join([*FUNCTION_NAMES, *sorted(ev.outside)])  # recipe(): in steps, not in vars
        raise ExprError(f"unknown function {e.func_name!r} in '${{{source}}}' (allowed: {allowed})") from None
    except simpleeval.InvalidExpression as e:
        raise ExprError(f"'${{{source}}}' is not allowed: {e}") from None
    except SyntaxError as e:
        raise ExprError(f"'${{{source}}}' is not a valid expression ({e.msg})") from None
    except Exception as e:  # arithmetic on wrong types, division by zero, ...
        raise ExprError(f"'${{{source}}}' failed: {type(e).__name__}: {e}") from None


def resolve(value: Any, names: dict[str, Any], functions=None, ev: Evaluator | None = None) -> Any:
    """Evaluate expressions anywhere inside nested dicts/lists (with one evaluator)."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        return evaluate(value, names, functions, ev)
    if not isinstance(value, (dict, list)):
        return value
    if ev is None:
        with borrowed(names, functions) as ev:
            return resolve(value, names, functions, ev)
    if isinstance(value, dict):
        if key := next((k for k in value if has_expr(k)), None):  # kept as written, it named a column `${vars.col}`
            raise ExprError(f"{key!r} is a mapping key, and `${{...}}` is evaluated in values only; write the "
                            f"mapping as one expression, e.g. '${{ {{vars.name: value}} }}'")
        return {k: resolve(v, names, functions, ev) for k, v in value.items()}
    return [resolve(v, names, functions, ev) for v in value]
