"""Which input column holds the prompt, the completion or the reference answer.

One order for every step, most specific first. A row that has several of these columns uses
the first one listed; `*_column` / `*_field` in a step's config names another.
"""
from __future__ import annotations

from typing import Iterable

from engine.recipe.errors import StepError

PROMPT_COLUMNS = ("prompt", "problem", "instruction", "question")
COMPLETION_COLUMNS = ("completion", "solution", "response", "output")
ANSWER_COLUMNS = ("expected_answer", "answer")


def pick_column(columns: Iterable[str], configured: str | None, candidates: tuple[str, ...], what: str,
                who: str, setting: str, required: bool = True) -> str | None:
    """The configured column (which must exist), else the first candidate present.

    `who` prefixes the error (step and input, e.g. "train.sft: data.jsonl"); `setting` is the
    config field to name in it. Without a match: an error, or None when not `required`. An
    empty input has no columns to check: the configured column, else None.
    """
    cols = list(columns)
    if not cols:
        return configured or None
    if configured:
        if configured not in cols:
            raise StepError(f"{who}: no {what} column {configured!r} (columns: {', '.join(sorted(cols))}); "
                            f"set {setting} to a column of the input")
        return configured
    for c in candidates:
        if c in cols:
            return c
    if required:
        raise StepError(f"{who}: none of the {what} columns {', '.join(candidates)} "
                        f"(columns: {', '.join(sorted(cols))}); set {setting}")
    return None
