"""The limits every expression evaluator keeps. Recipes, and the rows a step maps, are untrusted
input: an expression may not ask for more memory or time than a sensible recipe needs.

- MAX_INT_DIGITS (4,300): decimal digits of an integer, Python's own int-to-text limit;
- MAX_LENGTH (100,000): items or characters of any one string, list, mapping or range built,
  and the widths in one `%` or f-string format;
- MAX_BUILT (1,000,000): items and characters one evaluation builds or holds in all (a list
  holding references counts what they refer to: `[l, l]` holds `l` twice);
- MAX_LOOPS (10,000): comprehension steps in one evaluation;
- MAX_SECONDS (0.5): wall time of one recipe-level `${...}`;
- MAX_PLAN_SECONDS (60): wall time of planning a recipe, checked as its `${...}` are evaluated
  (a 100,000-instance foreach of 0.5 s expressions would take 14 hours);
- MAX_INSTANCES (100,000): foreach step instances in one recipe; RECIPE_MAX_INSTANCES raises it;
- MAX_RECIPE_DEPTH (8): `recipe()` references inside the recipes they plan (a recipe that
  refers to itself with ever other overrides would plan until Python's recursion limit).

One evaluation is one recipe-level `${...}`, or one row of a per-row step (all its expressions).
A broken limit raises LimitError naming the limit and its value.

Pure Python, so each evaluator can share it: the recipe-level and per-row evaluators in this
package guard their operators and functions with it, and the vectorized one in
steps/filter/rowexpr.py can import the same numbers and checks.
"""
from __future__ import annotations

import math
import os
import re
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import compress
from typing import Any, Iterator

from ..errors import LimitError, RecipeError

MAX_INT_DIGITS = 4300
MAX_LENGTH = 100_000
MAX_BUILT = 1_000_000
MAX_LOOPS = 10_000
MAX_SECONDS = 0.5
MAX_PLAN_SECONDS = 60.0
MAX_INSTANCES = 100_000
INSTANCES_ENV = "RECIPE_MAX_INSTANCES"
MAX_RECIPE_DEPTH = 8

MAX_INT_BITS = MAX_INT_DIGITS * 3322 // 1000  # log2(10) bits per digit
BIG = 1 << MAX_INT_BITS  # |n| below this has at most MAX_INT_DIGITS digits
_LOG10_2 = math.log10(2)
_SMALL = frozenset({int, float, bool, type(None)})
SCALARS = _SMALL | {str}  # str() of one is short: ints stop at MAX_INT_DIGITS


# when planning the current recipe must end (planning() sets it); None outside planning
_PLAN_ENDS: ContextVar[float | None] = ContextVar("plan_ends", default=None)


@contextmanager
def planning() -> Iterator[None]:
    """Recipe-level evaluations inside share one clock of MAX_PLAN_SECONDS (a nested call keeps the outer one)."""
    token = _PLAN_ENDS.set(_PLAN_ENDS.get() or time.monotonic() + MAX_PLAN_SECONDS)
    try:
        yield
    finally:
        _PLAN_ENDS.reset(token)


def _plan_too_long() -> LimitError:
    return LimitError(f"planning the recipe took longer than {MAX_PLAN_SECONDS:g} s (MAX_PLAN_SECONDS)")


class Budget:
    """What one evaluation has built and looped so far, and when its time is up (None: no clock)."""

    __slots__ = ("built", "loops", "deadline", "plan_ends")

    def __init__(self) -> None:
        self.reset()

    def reset(self, seconds: float | None = None) -> None:
        """A fresh budget; with `seconds`, a clock, which also stops at the end of the plan's time."""
        self.built = self.loops = 0
        self.deadline = self.plan_ends = None
        if seconds:
            now = time.monotonic()
            self.deadline, self.plan_ends = now + seconds, _PLAN_ENDS.get()
            if self.plan_ends is not None and now > self.plan_ends:
                raise _plan_too_long()

    def build(self, n: int) -> None:
        self.built += n
        if self.built > MAX_BUILT:
            raise LimitError(f"it builds more than {MAX_BUILT:,} items and characters in all (MAX_BUILT)")

    def hold(self, value: Any) -> None:
        """Charge what a new list, mapping or item of one holds, references to big values included:
        `[vars.big for _ in range(99)]` holds 99 times vars.big once it is written out."""
        if type(value) not in _SMALL:
            self.build(size(value))

    def loop(self) -> None:
        self.loops += 1
        if self.loops > MAX_LOOPS:
            raise LimitError(f"its comprehensions take more than {MAX_LOOPS:,} steps (MAX_LOOPS)")
        if self.deadline is not None:
            now = time.monotonic()
            if self.plan_ends is not None and now > self.plan_ends:
                raise _plan_too_long()
            if now > self.deadline:
                raise LimitError(f"it ran longer than {MAX_SECONDS} s (MAX_SECONDS)")

    def pause(self, seconds: float) -> None:
        """Time spent outside the expression (planning another recipe) is not its own."""
        if self.deadline is not None:
            self.deadline += seconds


def _amount(n: int) -> str:
    return f"{n:,}" if n < 10**15 else "more than 10^15"


def too_long(n: int, what: str, at_least: bool = False) -> LimitError:
    return LimitError(f"{what} would be {'at least ' if at_least else ''}{_amount(n)} long, over the limit of "
                      f"{MAX_LENGTH:,} items or characters (MAX_LENGTH)")


def too_big(digits: float) -> LimitError:
    return LimitError(f"a number of about {_amount(int(digits) + 1)} digits is over the limit of "
                      f"{MAX_INT_DIGITS:,} digits (MAX_INT_DIGITS)")


def check_int(n: int) -> int:
    if -BIG < n < BIG:
        return n
    raise too_big(n.bit_length() * _LOG10_2)


def size(value: Any, cap: int = MAX_BUILT) -> int:
    """Items and characters in `value`: 1 for each item, plus a string's characters and a
    number's digits, through shared references (`[l, l]` counts `l` twice). Counting stops once
    past `cap`. A long list's items are counted by C loops (map, compress), not one by one."""
    n, todo = 0, [value]
    while todo and n <= cap:
        v = todo.pop()
        t = type(v)
        if t is str or t is bytes:
            n += len(v) or 1
        elif t is int:
            n += 1 + (v.bit_length() * 77 >> 8)  # log10(2) ~ 77/256
        elif t in _SMALL or not isinstance(v, (dict, list, tuple, set, frozenset)):
            n += 1  # a float, None, a step's output, ...
        elif len(v) <= 16:
            todo += [*v.keys(), *v.values()] if isinstance(v, dict) else v
        else:
            items = [*v.keys(), *v.values()] if isinstance(v, dict) else v
            n += len(items)
            if n > cap:
                break
            kinds = list(map(type, items))
            todo += compress(items, map(_NESTED.__contains__, kinds))
            n += sum(map(len, compress(items, map(_TEXT.__contains__, kinds))))
            n += sum(map(int.bit_length, compress(items, map(_INT.__contains__, kinds)))) * 77 >> 8
    return n


_TEXT = frozenset({str, bytes})
_INT = frozenset({int})
_NESTED = frozenset({list, tuple, dict, set, frozenset})


def text(budget: Budget, value: Any) -> str:
    """str(value), refused when the text would be longer than MAX_LENGTH."""
    if type(value) in SCALARS:
        return str(value)
    n = size(value, MAX_LENGTH)
    if n > MAX_LENGTH:
        raise too_long(n, "the text", at_least=True)
    budget.build(n)
    return str(value)


# ------------------------------------------------------------------ operators

def add(budget: Budget, a: Any, b: Any) -> Any:
    if hasattr(a, "__len__") and hasattr(b, "__len__"):
        n = len(a) + len(b)
        if n > MAX_LENGTH:
            raise too_long(n, "the joined value")
        budget.build(size(a) + size(b))
    return a + b


def multiply(budget: Budget, a: Any, b: Any) -> Any:
    for seq, times in ((a, b), (b, a)):
        if hasattr(seq, "__len__") and isinstance(times, int):
            n = len(seq) * times
            if n > MAX_LENGTH:
                raise too_long(n, "the repeated value")
            if times > 0:
                budget.build(size(seq) * times)
            return a * b
    r = a * b
    return check_int(r) if type(r) is int else r


def power(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and b > 1 and not -1 <= a <= 1:
        if (abs(a).bit_length() - 1) * b > MAX_INT_BITS:  # at least that many bits: refused before computing
            raise too_big(b * math.log10(abs(a)))
        return check_int(a**b)
    return a**b


def lshift(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and a and b > 0 and a.bit_length() + b > MAX_INT_BITS:
        raise too_big((a.bit_length() + b) * _LOG10_2)
    return a << b


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _width(digits: str | None) -> int:
    return 0 if not digits else int(digits) if len(digits) <= 18 else 10**18


def modulo(budget: Budget, a: Any, b: Any) -> Any:
    """`%`, with `'%0999999d' % 1` refused before it is formatted."""
    if isinstance(a, (str, bytes)):
        spec = a if isinstance(a, str) else a.decode("latin-1")
        n = len(a) + size(b, MAX_LENGTH)
        for m in _PERCENT.finditer(spec):
            if "*" in m.groups():
                raise LimitError("a `*` width in % formatting is not supported; write the width in the format")
            n += _width(m.group(1)) + _width(m.group(2))
        if n > MAX_LENGTH:
            raise too_long(n, "the formatted text", at_least=True)
        budget.build(n)
    return a % b


def formatted(budget: Budget, value: Any, spec: str) -> str:
    """An f-string's `{value:spec}`, with its widths bounded like `%`'s."""
    n = size(value, MAX_LENGTH) + sum(_width(d) for d in _DIGITS.findall(spec))
    if n > MAX_LENGTH:
        raise too_long(n, "the formatted text", at_least=True)
    budget.build(n)
    return format(value, spec)


# ------------------------------------------------------------------ functions

def numbers(budget: Budget, *args: int) -> list[int]:
    """`range(...)` as a list."""
    r = range(*args)
    try:
        n = len(r)
    except OverflowError:
        n = sys.maxsize
    if n > MAX_LENGTH:
        raise too_long(n, "the range")
    budget.build(n)
    return list(r)


def total(items: Any, start: Any = 0) -> Any:
    """`sum`, of numbers only: summing lists copies them over and over."""
    if not isinstance(start, (int, float)):
        raise LimitError(f"sum adds numbers; found a start value of type {type(start).__name__}")
    r = sum(items, start)
    return check_int(r) if type(r) is int else r


# ------------------------------------------------------------------ planning

def max_instances() -> int:
    """MAX_INSTANCES, or what RECIPE_MAX_INSTANCES says."""
    raw = os.environ.get(INSTANCES_ENV, "").strip()
    if not raw:
        return MAX_INSTANCES
    if not raw.isdigit():
        raise RecipeError(f"{INSTANCES_ENV} must be a whole number of step instances, found {raw!r}")
    return int(raw)
