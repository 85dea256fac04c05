"""Second routes to every answer of the six domains' makers (steps/common/domains.py),
independent of the makers' formulas.

A maker builds a problem from numbers it picked and a formula; a checker reads only the
problem text and recomputes the answer another way: exact polynomial evaluation instead of
symbolic algebra, finite-difference stencils and Boole's rule instead of the power rule,
the shoelace formula instead of area formulas, counting by enumeration (brute force) or
dynamic programming instead of closed forms. The same formula twice would repeat a bug
(a PROOF answer of 120 = 5! once passed a checker that also computed 5!).
"""
from __future__ import annotations

import itertools
import math
import re
import statistics
from fractions import Fraction

_TERM_RE = re.compile(r"([+-]?)(\d*)(x(?:\^(\d+))?)?")


def fmt(v: Fraction | int) -> str:
    v = Fraction(v)
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def eval_poly(text: str, x: Fraction) -> Fraction:
    """Evaluate "3x^2 - x + 5" at x exactly, term by term from the text."""
    total = Fraction(0)
    for m in _TERM_RE.finditer(text.replace(" ", "")):
        sign, coef, var, power = m.groups()
        if not coef and not var:
            continue
        c = Fraction(int(coef) if coef else 1) * (-1 if sign == "-" else 1)
        total += c * x ** ((int(power) if power else 1) if var else 0)
    return total


def _nums(problem: str) -> list[int]:
    return [int(v) for v in re.findall(r"\d+", problem)]


def check_algebra(problem: str) -> str:
    lhs, rhs = problem.split(":", 1)[1].split("=")
    g = lambda x: eval_poly(lhs, Fraction(x)) - eval_poly(rhs, Fraction(x))  # linear in x
    slope = g(1) - g(0)
    return fmt(-g(0) / slope)


def check_calculus(problem: str) -> str:
    m = re.fullmatch(r"Find f'\((-?\d+)\) for f\(x\) = (.+)", problem)
    if m:  # five-point stencil: exact for polynomials up to degree 4 (the makers go to 1 + difficulty)
        a, f = int(m.group(1)), lambda t: eval_poly(m.group(2), Fraction(t))
        return fmt((f(a - 2) - 8 * f(a - 1) + 8 * f(a + 1) - f(a + 2)) / 12)
    m = re.fullmatch(r"Integrate (.+) from x = (-?\d+) to x = (-?\d+)", problem)
    body, lo, hi = m.group(1), Fraction(m.group(2)), Fraction(m.group(3))
    h = (hi - lo) / 4  # Boole's rule: exact for polynomials up to degree 5
    f = [eval_poly(body, lo + i * h) for i in range(5)]
    return fmt(2 * h / 45 * (7 * f[0] + 32 * f[1] + 12 * f[2] + 32 * f[3] + 7 * f[4]))


def _shoelace(points: list[tuple[int, int]]) -> Fraction:
    pairs = zip(points, points[1:] + points[:1])
    return abs(Fraction(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in pairs), 2))


def _root(square: int) -> int:
    r = math.isqrt(square)
    if r * r != square:
        raise ValueError(f"{square} is not a perfect square")
    return r


def check_geometry(problem: str) -> str:
    n = _nums(problem)
    if problem.startswith("Find the area of a rectangle"):
        return fmt(_shoelace([(0, 0), (n[0], 0), (n[0], n[1]), (0, n[1])]))
    if problem.startswith("Find the perimeter"):
        return fmt(sum([n[0], n[1], n[0], n[1]]))
    if problem.startswith("Find the area of a square"):
        return fmt(_shoelace([(0, 0), (n[0], 0), (n[0], n[0]), (0, n[0])]))
    if problem.startswith("Find the area of a triangle"):
        return fmt(_shoelace([(0, 0), (n[0], 0), (0, n[1])]))
    if problem.startswith("Find the area of a trapezoid"):
        return fmt(_shoelace([(0, 0), (n[0], 0), (n[1], n[2]), (0, n[2])]))
    if problem.startswith("Find the volume of a box"):
        return fmt(_shoelace([(0, 0), (n[0], 0), (n[0], n[1]), (0, n[1])]) * n[2])
    if "angles of a triangle" in problem:
        return fmt(next(t for t in range(181) if n[0] + n[1] + t == 180))
    if "Find the hypotenuse" in problem:
        return fmt(_root(n[0] ** 2 + n[1] ** 2))
    return fmt(_root(n[0] ** 2 - n[1] ** 2))


def check_statistics(problem: str) -> str:
    kind = problem.split()[2]
    vals = [Fraction(int(v)) for v in problem.split(" of ", 1)[1].split(", ")]
    if kind == "range":
        return fmt(max(vals) - min(vals))
    fn = {"mean": statistics.mean, "median": statistics.median, "mode": statistics.mode,
          "population": statistics.pvariance}[kind]
    return fmt(Fraction(fn(vals)))


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def check_number_theory(problem: str) -> str:
    n = _nums(problem)
    if "greatest common divisor" in problem:  # largest common divisor by search
        return str(max(d for d in range(1, min(n) + 1) if n[0] % d == 0 and n[1] % d == 0))
    if "least common multiple" in problem:  # first multiple of the larger that the smaller divides
        big, small = max(n), min(n)
        return str(next(big * k for k in itertools.count(1) if big * k % small == 0))
    if "remainder" in problem:
        return str(n[0] - n[1] * (n[0] // n[1]))
    if "smallest prime" in problem:
        return str(next(p for p in itertools.count(n[0] + 1) if _is_prime(p)))
    return str(sum(1 for p in range(2, n[0] + 1) if _is_prime(p)))


def _pascal(n: int, k: int) -> int:
    row = [1]
    for _ in range(n):
        row = [a + b for a, b in zip([0] + row, row + [0])]
    return row[k] if 0 <= k <= n else 0


def _ordered(n: int, k: int) -> int:
    """Ordered selections of k from n: enumerated when small, else built up one pick at a time."""
    if math.perm(n, k) <= 50_000:
        return sum(1 for _ in itertools.permutations(range(n), k))
    ways = 1
    for remaining in range(n, n - k, -1):
        ways *= remaining
    return ways


def _boxes(balls: int, boxes: int) -> int:
    """Ways to put identical balls in distinct boxes, box by box (dynamic programming)."""
    ways = [1] * (balls + 1)  # ways[b]: b balls in the first box alone
    for _ in range(boxes - 1):
        ways = list(itertools.accumulate(ways))  # the next box takes any 0..b of them
    return ways[balls]


def check_discrete(problem: str) -> str:
    n = _nums(problem)
    if "letters of" in problem:  # distinct arrangements, enumerated
        word = problem.split("letters of ")[1].split()[0]
        return str(len(set(itertools.permutations(word))))
    if "choose" in problem:
        return str(_pascal(n[1], n[0]))
    if "ordered arrangements" in problem:
        return str(_ordered(n[1], n[0]))
    if "subsets" in problem:
        return str(sum(_pascal(n[0], k) for k in range(n[0] + 1)))
    if "sit in a row" in problem:
        return str(_ordered(n[0], n[0]))
    if "diagonals" in problem:  # vertex pairs that are not neighbours on the polygon
        return str(sum(1 for i, j in itertools.combinations(range(n[0]), 2) if (j - i) % n[0] not in (1, n[0] - 1)))
    if "shortest paths" in problem:
        return str(_pascal(n[0] + n[1], n[1]))
    if "president" in problem:
        return str(sum(1 for _ in itertools.permutations(range(n[0]), 2)))
    if "three-course" in problem:
        return str(n[0] * n[1] * n[2])
    if "identical balls" in problem:
        return str(_boxes(n[0], n[1]))
    return str(sum(1 for _ in itertools.combinations(range(n[0]), 2)))


CHECKERS = {"algebra": check_algebra, "calculus": check_calculus, "geometry": check_geometry,
            "statistics": check_statistics, "number_theory": check_number_theory, "discrete": check_discrete}
