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
import re
import threading
from typing import Any, Callable, Iterator

import simpleeval

from ..errors import ExprError
from . import limits
from .evaluator import Evaluator
from .names import FUNCTION_NAMES
from .rows import expression

PATTERN = re.compile(r"\$\{(.*?)\}")


def has_expr(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def evaluate(text: str, names: dict[str, Any], functions: dict[str, Callable[..., Any]] | None = None,
             ev: Evaluator | None = None) -> Any:
    """Evaluate every `${...}` in `text`. Raises ExprError with a readable reason."""
    pieces = _pieces(text)
    if len(pieces) == 1:
        if "${" in text:
            raise ExprError("unclosed '${' (expected '${ expression }')")
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
    for m in PATTERN.finditer(text):
        out += [text[pos : m.start()], m.group(1)]
        pos = m.end()
    return (*out, text[pos:])


def mentions(text: str, name: str) -> bool:
    """Whether a `${...}` of `text` reads `name` (a foreach's `item`; a comprehension variable of
    that name counts too). Expressions that do not parse count as reading it."""
    try:
        trees = [_parse(source.strip()) for source in _pieces(text)[1::2]]
    except (SyntaxError, simpleeval.InvalidExpression):
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
        return {k: resolve(v, names, functions, ev) for k, v in value.items()}
    return [resolve(v, names, functions, ev) for v in value]
