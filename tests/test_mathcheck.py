"""Answer extraction and checking shared by evaluation, filtering and rewards."""
import threading

import pytest

from steps.common.mathcheck import extract_answer, has_think_answer_format, is_correct, normalize_number


@pytest.mark.parametrize("text,expected", [
    ("<think>2+3=5</think><answer>5</answer>", "5"),
    ("<answer>1</answer> then <answer> -7 </answer>", "-7"),
    ("<answer>\\boxed{12}</answer>", "12"),
    ("so the result is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("nested \\boxed{\\frac{a}{b^{2}}}", "\\frac{a}{b^{2}}"),
    ("which gives -42.", "-42"),
    ("values 5, 6 and 1,234", "1,234"),
    ("ratio 3/4", "3/4"),
    ("no numbers here", None),
    ("", None),
    (None, None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("pred,ref,ok", [
    ("5", "5", True), ("5", 5, True), ("-3", "-3", True), ("0.5", "1/2", True),
    ("\\frac{1}{2}", "0.5", True), ("1,234", "1234", True), ("7.50", "15/2", True),
    ("5", "6", False), ("abc", "5", False), (None, "5", False), ("", "5", False), ("5", None, False),
    ("x+1", "1+x", True), ("\\sqrt{4}", "2", True), ("2x", "x+1", False),
])
def test_is_correct(pred, ref, ok):
    assert is_correct(pred, ref) is ok


def test_is_correct_symbolic_works_off_the_main_thread():
    # math_verify's default timeout uses signal.alarm, which raises outside the main thread
    result = []
    t = threading.Thread(target=lambda: result.append(is_correct("x+1", "1+x")))
    t.start()
    t.join()
    assert result == [True]


def test_think_answer_format():
    assert has_think_answer_format("<think>3*4=12</think><answer>12</answer>")
    assert has_think_answer_format("  <think>\nx\n</think>\n<answer>12</answer>\n")
    assert not has_think_answer_format("<think>x</think>12")
    assert not has_think_answer_format("<answer>12</answer>")
    assert not has_think_answer_format("<think>x</think><answer> </answer>")
    assert not has_think_answer_format("<think>x</think><answer>1</answer> trailing")


def test_normalize_number():
    assert normalize_number("$-2$") == -2
    assert normalize_number("-\\frac{3}{4}") == normalize_number("-3/4")
    assert normalize_number("x") is None


@pytest.mark.parametrize("pred,ref", [
    ("\u22123", "-3"),            # U+2212 MINUS SIGN, what typeset math and many models write
    ("\u2013 3", "-3"),           # en dash
    ("\uff0d3", "-3"),            # fullwidth hyphen-minus
    ("\u22123\u20444", "-3/4"),   # minus and FRACTION SLASH
    ("\uff11\uff12", "12"),       # fullwidth digits
    ("1\u202f234", "1234"),       # narrow no-break space as thousands separator
    ("-3", "\u22123"),            # look-alikes in the reference too
])
def test_unicode_lookalikes_compare_equal(pred, ref):
    assert is_correct(pred, ref)
    assert not is_correct(pred, ref + "0")


def test_unicode_minus_in_free_text_is_extracted_as_negative():
    assert is_correct(extract_answer("so x = \u221236"), "-36")
