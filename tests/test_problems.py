"""Problem generators: answers verified independently, counts, seeds, dedup, bad config."""
import random
import re
from fractions import Fraction

import pytest
from pydantic import ValidationError

from engine.recipe.errors import StepError
from engine.run.testing import run_step
from steps.common.domains import DOMAINS
from steps.common.mathcheck import extract_answer, has_think_answer_format


def _arith(tmp_path, name="a", inputs=None, **cfg):
    return run_step("problems.arithmetic", cfg, inputs, workdir=tmp_path / name)["problems"].read()


def _eval_exact(expr: str) -> Fraction:
    # a third route, independent of the step's own check: integer-only tokenizing evaluator
    m = re.fullmatch(r"(-?\d+)([+\-*/])\(?(-?\d+)\)?", expr)
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    if op == "/":
        return Fraction(a, b)
    return Fraction({"+": a + b, "-": a - b, "*": a * b}[op])


def test_arithmetic_answers_counts_and_format(tmp_path):
    rows = _arith(tmp_path, count=300, seed=3, min_value=-99, max_value=99)
    assert len(rows) == 300
    assert len({r["problem"] for r in rows}) == 300
    assert {tuple(sorted(r)) for r in rows} == {("answer", "domain", "id", "problem", "solution")}
    ops = set()
    for r in rows:
        value = _eval_exact(r["problem"])
        assert value.denominator == 1, r  # divisions are exact
        assert r["answer"] == str(value.numerator)
        assert has_think_answer_format(r["solution"]) and extract_answer(r["solution"]) == r["answer"]
        assert all(-99 <= int(v) <= 99 for v in re.findall(r"-?\d+", r["problem"]))
        ops.add(re.search(r"\d([+\-*/])", r["problem"]).group(1))
        assert r["domain"] == "arithmetic"
    assert ops == {"+", "-", "*", "/"}
    assert any(int(r["answer"]) < 0 for r in rows)


def test_arithmetic_is_deterministic_by_seed(tmp_path):
    a = _arith(tmp_path, "a", count=50, seed=1)
    b = _arith(tmp_path, "b", count=50, seed=1)
    c = _arith(tmp_path, "c", count=50, seed=2)
    assert a == b and a != c


def test_arithmetic_operator_and_range_config(tmp_path):
    rows = _arith(tmp_path, count=40, operators=["*"], min_value=0, max_value=9)
    assert all("*" in r["problem"] and "-" not in r["problem"] for r in rows)


def test_arithmetic_exclude_gives_disjoint_heldout(tmp_path):
    train = run_step("problems.arithmetic", {"count": 200, "seed": 1, "min_value": -9, "max_value": 9},
                     workdir=tmp_path / "t")["problems"]
    test = _arith(tmp_path, "h", inputs={"exclude": train}, count=100, seed=2, min_value=-9, max_value=9)
    assert not {r["problem"] for r in test} & {r["problem"] for r in train.read()}


def test_arithmetic_too_small_space_is_a_clear_error(tmp_path):
    with pytest.raises(StepError, match=r"problems.arithmetic: count: only \d+ unique arithmetic problems"):
        _arith(tmp_path, count=100, min_value=0, max_value=2, operators=["+"])


def test_arithmetic_bad_range_is_rejected(tmp_path):
    with pytest.raises(ValidationError, match="min_value 5 is larger than max_value 1"):
        _arith(tmp_path, min_value=5, max_value=1)


def _poly_terms(text: str) -> dict[int, Fraction]:
    """{power: coefficient} read from "3x^2 - x + 5" (the test's own parser)."""
    terms: dict[int, Fraction] = {}
    for part in re.findall(r"[+-]?[^+-]+", text.replace(" ", "")):
        coef, _, power = part.partition("x")
        coef = {"": 1, "+": 1, "-": -1}.get(coef, coef)
        p = 0 if "x" not in part else int(power[1:]) if power else 1
        terms[p] = terms.get(p, 0) + Fraction(coef)
    return terms


def _at(terms: dict[int, Fraction], x) -> Fraction:
    return sum((c * Fraction(x) ** p for p, c in terms.items()), Fraction(0))


def _independent(domain: str, problem: str) -> Fraction:
    """A third route from the problem text alone: neither the maker's nor the step checker's code."""
    import math
    from collections import Counter

    import sympy

    nums = [int(v) for v in re.findall(r"-?\d+", problem)]
    if domain == "algebra":  # brute force: the unknown is an integer within the maker's range
        lhs, rhs = (_poly_terms(side) for side in problem.split(": ")[1].split(" = "))
        roots = [x for x in range(-40, 41) if _at(lhs, x) == _at(rhs, x)]
        assert len(roots) == 1, (problem, roots)
        return Fraction(roots[0])
    if domain == "calculus":  # power rule on the parsed terms
        if problem.startswith("Find"):
            f = _poly_terms(problem.split("f(x) = ")[1])
            return _at({p - 1: c * p for p, c in f.items() if p}, nums[0])
        f = _poly_terms(problem[len("Integrate "):].split(" from")[0])
        anti = {p + 1: c / (p + 1) for p, c in f.items()}
        return _at(anti, nums[-1]) - _at(anti, nums[-2])
    if domain == "geometry":
        if "Find the hypotenuse" in problem:
            return Fraction(math.isqrt(nums[0] ** 2 + nums[1] ** 2))
        if "other leg" in problem:
            return Fraction(math.isqrt(nums[0] ** 2 - nums[1] ** 2))
        if "angles of a triangle" in problem:
            return Fraction(180 - nums[0] - nums[1])
        if "trapezoid" in problem:
            return Fraction((nums[0] + nums[1]) * nums[2], 2)
        if "volume" in problem:
            return Fraction(nums[0] * nums[1] * nums[2])
        if "triangle" in problem:
            return Fraction(nums[0] * nums[1], 2)
        if "perimeter" in problem:
            return Fraction(2 * nums[0] + 2 * nums[1])
        return Fraction(nums[0] * (nums[1] if len(nums) > 1 else nums[0]))
    if domain == "statistics":
        v = sorted(Fraction(x) for x in nums)
        n = len(v)
        mean = sum(v) / n
        if "mean" in problem:
            return mean
        if "median" in problem:
            return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
        if "mode" in problem:
            (value, times), (_, second) = Counter(v).most_common(2)
            assert times > second, problem
            return value
        if "variance" in problem:  # E[x^2] - E[x]^2, not the mean squared deviation
            return sum(x * x for x in v) / n - mean * mean
        return v[-1] - v[0]
    if domain == "number_theory":
        if "greatest" in problem:
            return Fraction(math.gcd(*nums))
        if "least common" in problem:
            return Fraction(math.lcm(*nums))
        if "remainder" in problem:
            return Fraction(nums[0] % nums[1])
        if "smallest prime" in problem:
            return Fraction(int(sympy.nextprime(nums[0])))
        return Fraction(int(sympy.primepi(nums[0])))
    if domain == "discrete":
        if "choose" in problem:
            return Fraction(math.comb(nums[1], nums[0]))
        if "ordered" in problem:
            return Fraction(math.perm(nums[1], nums[0]))
        if "letters" in problem:  # multinomial n!/prod(k!) over repeated letters
            word = problem.split("letters of ")[1].split()[0]
            return Fraction(math.factorial(len(word)), math.prod(math.factorial(k) for k in Counter(word).values()))
        if "subsets" in problem:
            return Fraction(2 ** nums[0])
        if "sit in a row" in problem:
            return Fraction(math.factorial(nums[0]))
        if "diagonals" in problem:
            return Fraction(nums[0] * (nums[0] - 3), 2)
        if "shortest paths" in problem:
            return Fraction(math.comb(nums[0] + nums[1], nums[1]))
        if "president" in problem:
            return Fraction(nums[0] * (nums[0] - 1))
        if "three-course" in problem:
            return Fraction(nums[0] * nums[1] * nums[2])
        if "identical balls" in problem:
            n, k = nums
            return Fraction(math.comb(n + k - 1, n))
        return Fraction(math.comb(nums[0], 2))
    raise AssertionError(domain)


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_synthetic_answers_rederived_independently_300_per_domain(tmp_path, difficulty):
    # dedup off, as a user may run it: repeated problems (e.g. the letters of PROOF, 5!/2! = 60) all count
    counts = {d: 300 for d in DOMAINS}
    rows = run_step("problems.synthetic", {"counts": counts, "seed": 5, "difficulty": difficulty, "dedup": False},
                    workdir=tmp_path)["problems"].read()
    assert {d: sum(r["domain"] == d for r in rows) for d in DOMAINS} == counts
    wrong = [r for r in rows if Fraction(r["answer"]) != _independent(r["domain"], r["problem"])]
    assert wrong == []
    assert all(has_think_answer_format(r["solution"]) and extract_answer(r["solution"]) == r["answer"] for r in rows)


def test_synthetic_arrangements_of_a_word_with_repeated_letters():
    from steps.common.domain_checks import check_discrete
    from steps.common.domains import make_discrete

    assert check_discrete("In how many ways can the letters of PROOF be arranged?") == "60"
    made = {}
    for seed in range(400):
        problem, answer, _ = make_discrete(random.Random(seed), 2)
        made[problem] = answer
    assert made["In how many ways can the letters of PROOF be arranged?"] == "60"


@pytest.mark.parametrize("difficulty", [1, 3])
def test_synthetic_six_domains_unique_and_counted(tmp_path, difficulty):
    counts = {d: 40 for d in DOMAINS}
    rows = run_step("problems.synthetic", {"counts": counts, "seed": 5, "difficulty": difficulty},
                    workdir=tmp_path)["problems"].read()
    assert len(rows) == 240
    assert {d: sum(r["domain"] == d for r in rows) for d in DOMAINS} == counts
    assert len({r["problem"] for r in rows}) == 240
    assert len({r["id"] for r in rows}) == 240


def test_synthetic_seed_and_single_domain(tmp_path):
    a = run_step("problems.synthetic", {"counts": {"algebra": 10, "discrete": 5}, "seed": 1}, workdir=tmp_path / "a")
    b = run_step("problems.synthetic", {"counts": {"algebra": 10, "discrete": 5}, "seed": 1}, workdir=tmp_path / "b")
    one = run_step("problems.synthetic", {"domain": "algebra", "count": 10, "seed": 1}, workdir=tmp_path / "c")
    rows = a["problems"].read()
    assert rows == b["problems"].read()
    # a domain's problems do not depend on the other domains in the same step
    assert one["problems"].read() == [r for r in rows if r["domain"] == "algebra"]
    c = run_step("problems.synthetic", {"counts": {"algebra": 10}, "seed": 2}, workdir=tmp_path / "d")
    assert c["problems"].read() != one["problems"].read()


def test_synthetic_dedup_exhausted_space_is_a_clear_error(tmp_path):
    # number theory at difficulty 1 has about 2,500 distinct problems, not 5,000
    with pytest.raises(StepError, match="problems.synthetic: count: only .* unique number_theory problems"):
        run_step("problems.synthetic", {"domain": "number_theory", "count": 5000}, workdir=tmp_path)


def test_synthetic_unknown_domain_is_rejected(tmp_path):
    with pytest.raises(ValidationError, match="unknown domain"):
        run_step("problems.synthetic", {"counts": {"topology": 3}}, workdir=tmp_path)
