"""Errors a user can cause. The CLI prints them as one message (no traceback)."""
from __future__ import annotations


class RecipeError(Exception):
    """An invalid recipe, found before anything runs (exit code 2).

    `where` is "file:line:col" when the problem can be pinned to a YAML node.
    """

    exit_code = 2

    def __init__(self, message: str, where: str | None = None):
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class StepError(Exception):
    """A step failed on its input or config at run time (exit code 1).

    Steps raise it for bad data (a missing column, a corrupt file, a missing model) so the
    user sees one clear sentence naming the step, the file and the field.
    """

    exit_code = 1


class CacheError(Exception):
    """The cache or a remote refused something (tampered entry, missing record)."""

    exit_code = 1


class ExprError(Exception):
    """An expression (`${...}` or a per-row one) failed; the message says why, the caller says where."""


class LimitError(ExprError):
    """An expression asked for more than a limit in engine/recipe/expr/limits.py allows."""


def did_you_mean(word: str, choices, prefix: str = "", suffix: str = "") -> str:
    """"; did you mean PREFIX+CLOSEST+SUFFIX?" for a typo among `choices`, or "" when none is close."""
    import difflib

    others = [str(c) for c in choices if str(c) != str(word)]  # the word itself is misplaced, not misspelt
    close = difflib.get_close_matches(str(word), others, n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {prefix}{close[0]}{'.' + suffix if suffix else ''}?"
