"""problems.arithmetic: 1–2 digit integer arithmetic problems (negatives included), each
answer recomputed by walking the expression with exact fractions.

Every record is `{"id", "problem", "answer", "domain", "solution"}` with `solution` written as
`<think>worked steps</think><answer>answer</answer>`, so it doubles as SFT data.
"""
from __future__ import annotations

import random
from fractions import Fraction
from typing import Literal

from pydantic import Field, model_validator

from engine.recipe.artifact_types import Dataset
from engine.recipe.errors import StepError
from engine.recipe.step import In, Step, StepConfig, register
from steps.common.draw import draw_unique, excluded, fmt_num, paren, solution

OPERATORS = ("+", "-", "*", "/")


def make_arithmetic(rng: random.Random, lo: int, hi: int, ops: list[str]) -> tuple[str, str, str]:
    op = rng.choice(ops)
    if op == "/":  # exact integer quotients only: pick divisor and quotient, derive the dividend
        for _ in range(1000):
            b = rng.randint(lo, hi)
            q = rng.randint(lo, hi)
            if b != 0 and lo <= b * q <= hi:
                a = b * q
                break
        else:
            raise StepError(f"problems.arithmetic: no exact division fits in [{lo}, {hi}]; widen the range")
        value = Fraction(a, b)
    else:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        value = Fraction({"+": a + b, "-": a - b, "*": a * b}[op])
    shown = {"*": "*", "/": "/", "+": "+", "-": "-"}[op]
    expr = f"{a}{shown}{paren(b)}"
    answer = fmt_num(value)
    return expr, answer, f"{expr}={answer}"


def check_arithmetic(problem: str) -> str:
    """Independent recomputation: walk the expression's syntax tree with exact fractions."""
    import ast
    import operator

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def ev(node):
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        raise ValueError(f"unexpected syntax in {problem!r}")

    return fmt_num(ev(ast.parse(problem, mode="eval").body))


@register("problems.arithmetic")
class Arithmetic(Step):
    """Integer arithmetic problems (+ - * /, exact quotients, negatives) with worked solutions."""

    version = "1"

    class Config(StepConfig):
        count: int = Field(1000, ge=1, description="number of problems")
        min_value: int = Field(-99, description="smallest operand (and dividend)")
        max_value: int = Field(99, description="largest operand (and dividend)")
        operators: list[Literal["+", "-", "*", "/"]] = Field(default_factory=lambda: list(OPERATORS))
        seed: int = 0
        domain: str = "arithmetic"
        id_prefix: str = "arith"

        @model_validator(mode="after")
        def _range(self):
            if self.min_value > self.max_value:
                raise ValueError(f"min_value {self.min_value} is larger than max_value {self.max_value}")
            if not self.operators:
                raise ValueError("operators: at least one of + - * / is needed")
            return self

    inputs = {"exclude": In(Dataset, required=False)}
    outputs = {"problems": Dataset}

    def run(self, ctx):
        c = self.config
        rng = random.Random(c.seed)
        seen = excluded(ctx.inputs.get("exclude"), "problems.arithmetic")
        drawn = draw_unique(lambda: make_arithmetic(rng, c.min_value, c.max_value, list(c.operators)),
                             c.count, seen, "problems.arithmetic", "arithmetic")
        rows = []
        for i, (problem, answer, think) in enumerate(drawn):
            if check_arithmetic(problem) != answer:
                raise StepError(f"problems.arithmetic: internal check failed for {problem!r}: {answer}")
            rows.append({"id": f"{c.id_prefix}_{i:05d}", "problem": problem, "answer": answer,
                         "domain": c.domain, "solution": solution(think, answer)})
        ctx.write_dataset("problems", rows)
