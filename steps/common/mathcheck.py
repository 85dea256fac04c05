"""Answer extraction and checking shared by every step that scores a model's output.

    extract_answer("<think>2+3=5</think><answer>5</answer>")  -> "5"
    extract_answer("so the result is \\boxed{\\frac{1}{2}}")   -> "\\frac{1}{2}"
    extract_answer("... which gives 42.")                      -> "42"
    is_correct("0.5", "1/2")                                    -> True
    has_think_answer_format("<think>..</think><answer>7</answer>") -> True

Extraction order: the last `<answer>…</answer>`, else the last `\\boxed{…}` (nested braces
allowed), else the last number in the text. Checking tries exact rational arithmetic first
(fast, covers the integer/fraction/decimal answers of the generators) and falls back to
math-verify for symbolic answers. This module registers no steps; math_verify is imported
lazily so `recipe plan` stays fast.
"""
from __future__ import annotations

import re
import threading
from fractions import Fraction

__all__ = ["extract_answer", "is_correct", "has_think_answer_format", "normalize_number", "plain_symbols"]

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FORMAT_RE = re.compile(r"^\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*$", re.DOTALL)
# signed integers, decimals and simple fractions like -3/4; thousands separators allowed
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")


# Look-alikes models and copied text produce, mapped to ASCII before comparing (math-verify
# accepts "\u22123" for "-3" too): minus signs and dashes, fraction/division slashes, odd spaces,
# and fullwidth digits.
_LOOKALIKES = str.maketrans({
    **dict.fromkeys("\u2212\u2010\u2011\u2012\u2013\u2014\ufe63\uff0d", "-"),
    **dict.fromkeys("\u2044\u2215\uff0f", "/"),
    **dict.fromkeys("\u00a0\u2007\u2009\u202f\u3000", " "),
    "\uff0b": "+", "\uff0e": ".", "\uff0c": ",",
    **{chr(0xFF10 + d): str(d) for d in range(10)},
})


def plain_symbols(text: str) -> str:
    """Map Unicode look-alikes of -, /, digits and spaces to ASCII ("\u22123" -> "-3")."""
    return text.translate(_LOOKALIKES)


def has_think_answer_format(text: str) -> bool:
    """True when the whole text is `<think>…</think><answer>…</answer>` with a non-empty answer."""
    if not isinstance(text, str):
        return False
    m = _FORMAT_RE.match(text)
    return bool(m and m.group(2).strip() and "<answer>" not in m.group(2) and "<think>" not in m.group(1))


def _last_boxed(text: str) -> str | None:
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
        j += 1
    return None  # unbalanced: the generation was cut off inside the box


def extract_answer(text: str | None) -> str | None:
    """The model's final answer as a string, or None when nothing answer-like is present."""
    if not text:
        return None
    found = _ANSWER_RE.findall(text)
    if found:
        inner = found[-1].strip()
        boxed = _last_boxed(inner)
        return boxed if boxed is not None else inner
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    numbers = _NUMBER_RE.findall(plain_symbols(text))
    return numbers[-1].replace(" ", "") if numbers else None


def normalize_number(s: str) -> Fraction | None:
    """Parse "7", "-3", "1,234", "0.5", "3/4", "$-2$", "\\frac{3}{4}" into a Fraction; else None."""
    t = str(s).strip().strip("$").strip()
    t = t.removeprefix("\\(").removesuffix("\\)").strip()
    t = re.sub(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}", r"\1/\2", t)
    m = re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", t)
    if m:
        t = f"{m.group(1)}{m.group(2)}/{m.group(3)}"
    t = t.rstrip(".").replace(" ", "")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", t):
        t = t.replace(",", "")
    if not re.fullmatch(r"-?(\d+(\.\d+)?|\.\d+)(/-?\d+)?", t):
        return None
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def _math_verify(pred: str, ref: str) -> bool:
    from math_verify import parse, verify

    # math_verify's timeout uses signal.alarm, which only works in the main thread
    main = threading.current_thread() is threading.main_thread()
    kw = {} if main else {"parsing_timeout": None}
    vkw = {} if main else {"timeout_seconds": None}
    try:
        gold = parse(_as_latex(ref), **kw)
        guess = parse(_as_latex(pred), **kw)
        if not gold or not guess:
            return False
        return bool(verify(gold, guess, **vkw))
    except Exception:  # a parser crash on garbage output is simply "not correct"
        return False


def _as_latex(s: str) -> str:
    s = s.strip()
    return s if s.startswith("$") or s.startswith("\\(") or s.startswith("\\[") else f"${s}$"


def is_correct(pred: str | None, ref: str | int | float | None) -> bool:
    """Does the predicted answer equal the reference? Numbers compare exactly as rationals."""
    if pred is None or ref is None:
        return False
    pred, ref = plain_symbols(str(pred)).strip(), plain_symbols(str(ref)).strip()
    if not pred:
        return False
    if pred == ref:
        return True
    a, b = normalize_number(pred), normalize_number(ref)
    if a is not None and b is not None:
        return a == b
    if b is not None and a is None and not re.search(r"[\\a-zA-Z{]", pred):
        return False  # garbage against a number: skip the slow symbolic path
    return _math_verify(pred, ref)
