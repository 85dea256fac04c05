"""Deciding whether a predicted answer matches the reference: math-verify first, and reading a
judgement model's "Judgement: Yes/No" where math-verify cannot decide."""
from __future__ import annotations

import re
import threading

_MATH_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
               "log", "ln", "lg", "exp", "lim", "max", "min", "gcd", "lcm", "mod", "det", "deg", "pi", "inf",
               "infty", "sqrt", "frac", "text", "mathrm", "and", "or", "dx", "dy", "dt"}


def math_verify_decision(pred: str | None, ref: str | None) -> bool | None:
    """True/False when math-verify (or exact rationals) can read both answers; None when it cannot."""
    from steps.common.mathcheck import normalize_number

    if pred is None or ref is None or not str(pred).strip() or not str(ref).strip():
        return None
    pred, ref = str(pred).strip(), str(ref).strip()
    a, b = normalize_number(pred), normalize_number(ref)
    if a is not None and b is not None:
        return a == b
    if _has_words(pred) or _has_words(ref):
        return None  # "a square", "dark blue": math-verify would read them as products of symbols
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()  # its timeouts use signals: main thread only
    kw = {} if main else {"parsing_timeout": None}
    try:
        gold = parse(_latex(ref), **kw)
        guess = parse(_latex(pred), **kw)
    except Exception:
        return None
    if not gold or not guess:
        return None
    try:
        return bool(verify(gold, guess, **({} if main else {"timeout_seconds": None})))
    except Exception:
        return None


def _has_words(s: str) -> bool:
    """Natural-language words (not LaTeX commands or function names) in an answer."""
    plain = re.sub(r"\\[A-Za-z]+", " ", s)
    return any(w.lower() not in _MATH_WORDS for w in re.findall(r"[A-Za-z]{2,}", plain))


def _latex(s: str) -> str:
    return s if s.startswith(("$", "\\(", "\\[")) else f"${s}$"


def parse_judgement(text: str) -> bool | None:
    """The last "Judgement: Yes/No" (or "Correct: Yes/No") in a judge's reply; None without one."""
    found = re.findall(r"judg(?:e)?ment\s*[:：]\s*\**\s*(yes|no)\b", text, re.I)
    if not found:
        found = re.findall(r"\bcorrect\s*[:：]\s*\**\s*(yes|no)\b", text, re.I)
    return None if not found else found[-1].lower() == "yes"
