"""Expressions in recipes, and the limits they run under. Three evaluators, one per use:

- template.py: recipe-level `${...}` in `vars`, `with`, `inputs` and `foreach`, evaluated once
  while a recipe is planned (simpleeval's tree walk, evaluator.py);
- rows.py: per-row expressions of a step (`data.map`'s `derive` and `where`), compiled once into
  one Python function over all rows, with the same results and errors as the walk;
- steps/filter/rowexpr.py: `filter.by_label`'s `where`, vectorized over Arrow batches.

The first two share one table of functions and operators (names.py). All keep the limits in
limits.py (integer digits, lengths, items built, comprehension steps, time, foreach instances);
README "Limits" says how to raise the one that can be raised.
"""
from ..errors import ExprError, LimitError
from .evaluator import Evaluator
from .template import evaluate, evaluator, has_expr, resolve

__all__ = ["Evaluator", "ExprError", "LimitError", "evaluate", "evaluator", "has_expr", "resolve"]
