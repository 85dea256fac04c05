"""The one table of what an expression may call, and the operators it may use, shared by the
recipe-level `${...}` and the per-row evaluators.

Each evaluator gets its own copy bound to its Budget (limits.py): what can outgrow its
operands (`+`, `*`, `%`, range, str) is checked and charged to the evaluation that asked for it.
"""
from __future__ import annotations

import ast
import math
import operator
from functools import partial
from typing import Any, Callable

import simpleeval

from . import limits
from .limits import Budget


def functions(budget: Budget) -> dict[str, Callable[..., Any]]:
    """The functions, by name. A copy (list, sorted, ...) costs no more than what it copies, so
    only what can outgrow its arguments (range, str) is guarded."""
    return {
        "round": round, "int": int, "float": float, "bool": bool, "min": min, "max": max, "len": len, "abs": abs,
        "ceil": math.ceil, "floor": math.floor, "sum": limits.total, "sorted": sorted,
        "str": partial(limits.text, budget), "range": partial(limits.numbers, budget),
        "keys": lambda d: list(d.keys()), "values": lambda d: list(d.values()),
        "dict": dict, "zip": lambda *a: list(zip(*a)),  # dict(zip(vars.domains, counts)): a mapping built once
        "list": list, "tuple": tuple, "set": set,
    }


FUNCTION_NAMES = tuple(sorted(functions(Budget())))


def operators(budget: Budget) -> dict[type, Callable[..., Any]]:
    """simpleeval's operators, with those that can outgrow their operands guarded."""
    return {
        **simpleeval.DEFAULT_OPERATORS,
        ast.Add: partial(limits.add, budget), ast.Mult: partial(limits.multiply, budget),
        ast.Mod: partial(limits.modulo, budget), ast.Pow: limits.power, ast.LShift: limits.lshift,
        ast.RShift: operator.rshift,
    }
