"""The one table of what an expression may call, and the operators it may use, shared by the
recipe-level `${...}` and the per-row evaluators.

Each evaluator gets its own copy bound to its Budget (limits.py): whatever builds a string,
list or mapping is charged to the evaluation that asked for it.
"""
from __future__ import annotations

import ast
import math
import operator
from functools import partial
from typing import Any, Callable

import simpleeval

from . import limits
from .limits import Budget, built


def functions(budget: Budget) -> dict[str, Callable[..., Any]]:
    """The functions, by name. Those that copy a value are charged its length."""
    return {
        "round": round, "int": int, "float": float, "bool": bool, "min": min, "max": max, "len": len, "abs": abs,
        "ceil": math.ceil, "floor": math.floor, "sum": limits.total,
        "str": partial(limits.text, budget), "range": partial(limits.numbers, budget),
        "sorted": built(budget, sorted), "keys": built(budget, lambda d: list(d.keys())),
        "values": built(budget, lambda d: list(d.values())),
        "dict": built(budget, dict), "zip": built(budget, lambda *a: list(zip(*a))),  # dict(zip(...)): one mapping
        "list": built(budget, list), "tuple": built(budget, tuple), "set": built(budget, set),
    }


FUNCTION_NAMES = tuple(sorted(functions(Budget())))


def operators(budget: Budget) -> dict[type, Callable[..., Any]]:
    """simpleeval's operators, with the ones that can build something big guarded."""
    return {
        **simpleeval.DEFAULT_OPERATORS,
        ast.Add: partial(limits.add, budget), ast.Mult: partial(limits.multiply, budget),
        ast.Mod: partial(limits.modulo, budget), ast.Pow: limits.power, ast.LShift: limits.lshift,
        ast.RShift: operator.rshift,
        ast.Sub: built(budget, operator.sub), ast.BitOr: built(budget, operator.or_),
        ast.BitAnd: built(budget, operator.and_), ast.BitXor: built(budget, operator.xor),
    }
