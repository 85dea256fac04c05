"""Vars that refer to vars: `model: ${vars.models[str(vars.model_choice)]}` is worked out once,
after profiles and `--set`, so every step sees the derived value.

Each var is resolved when first needed (so the order in the file does not matter); a var that
needs itself, directly or through others, is an error naming the chain and the var's line.
"""
from __future__ import annotations

from typing import Any, Callable

from .errors import RecipeError
from .expr import ExprError, resolve


class _VarError(ExprError):
    """An error in one var, raised inside an expression: an ExprError, so the evaluator passes it
    through unchanged and the message names the var at fault, not the var that used it."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name, self.message = name, message


def resolve_vars(raw: dict[str, Any], where: Callable[[str], str]) -> dict[str, Any]:
    """The vars with every `${...}` evaluated; `where(name)` is the file:line of a var."""
    done: dict[str, Any] = {}
    visiting: list[str] = []

    class Lookup(dict):  # a dict of the raw vars, so error messages can list the known names
        def __getitem__(self, name: str) -> Any:
            if name not in raw:
                raise KeyError(name)
            return value(name)

    lookup = Lookup(raw)

    def value(name: str) -> Any:
        if name in done:
            return done[name]
        if name in visiting:
            chain = " -> ".join(f"vars.{k}" for k in visiting[visiting.index(name):] + [name])
            raise _VarError(name, f"vars refer to each other in a cycle: {chain}")
        visiting.append(name)
        try:
            done[name] = resolve(raw[name], {"vars": lookup})
        except _VarError:
            raise
        except ExprError as e:
            raise _VarError(name, f"vars.{name}: {e}") from None
        finally:
            visiting.pop()
        return done[name]

    for name in raw:
        try:
            value(name)
        except _VarError as e:
            raise RecipeError(e.message, where(e.name)) from None
    return {name: done[name] for name in raw}
