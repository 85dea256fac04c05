"""What the problem generators share: number formatting, the worked-solution format, and
drawing problems unique by text (and unseen in an `exclude` dataset)."""
from __future__ import annotations

from fractions import Fraction
from typing import Callable

from engine.recipe.artifact_types import Dataset
from engine.recipe.errors import StepError


def fmt_num(v: Fraction | int) -> str:
    """Canonical answer text: an integer, or a reduced fraction "p/q"."""
    v = Fraction(v)
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def paren(v: int) -> str:
    return f"({v})" if v < 0 else str(v)


def solution(think: str, answer: str) -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


def excluded(exclude: Dataset | None, step: str) -> set[str]:
    if exclude is None:
        return set()
    seen = set()
    for row in exclude.rows():
        text = row.get("problem", row.get("instruction"))
        if text is None:
            raise StepError(f"{step}: exclude: {exclude.path}: rows have no 'problem' (or 'instruction') field")
        seen.add(str(text))
    return seen


def draw_unique(draw: Callable[[], tuple[str, str, str]], count: int,
                 seen: set[str], step: str, what: str) -> list[tuple[str, str, str]]:
    """Draw `count` problems with unseen texts; fail clearly when the space is too small."""
    out: list[tuple[str, str, str]] = []
    misses, budget = 0, 5000  # draws in a row without a new problem before the space counts as spent
    while len(out) < count:
        problem, answer, think = draw()
        if problem in seen:
            misses += 1
            if misses > budget:
                raise StepError(
                    f"{step}: count: only {len(out)} unique {what} problems could be drawn, {count} requested; "
                    "widen the ranges, raise difficulty or lower the count"
                )
            continue
        misses = 0
        seen.add(problem)
        out.append((problem, answer, think))
    return out
