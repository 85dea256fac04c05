"""The six domains' problem makers (algebra ... discrete), shared by problems.synthetic and
generate.problems' programmatic mode.

Each maker returns (problem, answer, think) from an rng and a difficulty 1..3; each answer is
recomputed by the domain's checker in steps/common/domain_checks.py (enumeration, stencils, the
shoelace formula; never the maker's formula again).
"""
from __future__ import annotations

import random
from collections import Counter
from fractions import Fraction
from functools import lru_cache
from typing import Callable

from steps.common.domain_checks import CHECKERS
from steps.common.draw import fmt_num, paren

DOMAINS = ("algebra", "calculus", "geometry", "statistics", "number_theory", "discrete")
# The makers' version: part of the version of every step that draws from them, so that a change
# here reruns those steps instead of serving stale problems from the cache.
# 3: distinct arrangements of words with repeated letters (PROOF: 60, was 120)
VERSION = "3"


# ====================================================================== six domains
# Each maker returns (problem, answer, think) from an rng and a difficulty 1..3; each checker
# recomputes the answer from the problem's numbers by another route.

def _poly(coeffs: list[int], var: str = "x") -> str:
    """[3, 0, -2] -> "3x^2 - 2" (highest power first)."""
    terms = []
    deg = len(coeffs) - 1
    for i, c in enumerate(coeffs):
        p = deg - i
        if c == 0:
            continue
        mag = abs(c)
        body = (str(mag) if mag != 1 or p == 0 else "") + (var if p >= 1 else "") + (f"^{p}" if p >= 2 else "")
        sign = "-" if c < 0 else "+"
        terms.append((sign, body))
    if not terms:
        return "0"
    first_sign, first = terms[0]
    out = ("-" if first_sign == "-" else "") + first
    for sign, body in terms[1:]:
        out += f" {sign} {body}"
    return out


def make_algebra(rng: random.Random, d: int):
    r = 9 * d
    x = rng.randint(-r, r)
    a = rng.choice([v for v in range(-3 * d, 3 * d + 1) if v not in (0,)])
    b = rng.randint(-4 * r, 4 * r)
    if d >= 2 and rng.random() < 0.5:  # unknowns on both sides: ax + b = cx + e
        c = rng.choice([v for v in range(-3 * d, 3 * d + 1) if v not in (0, a)])
        e = (a - c) * x + b
        problem = f"Solve for x: {_poly([a, b])} = {_poly([c, e])}"
        think = f"{_poly([a - c, 0])} = {e} - {paren(b)} = {e - b}, x = {e - b}/{paren(a - c)} = {x}"
    else:
        c = a * x + b
        problem = f"Solve for x: {_poly([a, b])} = {c}"
        think = f"{_poly([a, 0])} = {c} - {paren(b)} = {c - b}, x = {c - b}/{paren(a)} = {x}"
    return problem, str(x), think


def make_calculus(rng: random.Random, d: int):
    deg = rng.randint(1, 1 + d)
    coeffs = [rng.randint(-5 * d, 5 * d) for _ in range(deg + 1)]
    coeffs[0] = coeffs[0] or 1
    f = _poly(coeffs)
    if rng.random() < 0.5:
        at = rng.randint(-3, 3)
        dcoeffs = [c * (deg - i) for i, c in enumerate(coeffs[:-1])]
        value = sum(c * at ** (deg - 1 - i) for i, c in enumerate(dcoeffs))
        problem = f"Find f'({at}) for f(x) = {f}"
        think = f"f'(x) = {_poly(dcoeffs)}, f'({at}) = {value}"
        return problem, fmt_num(value), think
    lo = rng.randint(-2, 1)
    hi = lo + rng.randint(1, 1 + d)
    anti = [Fraction(c, deg - i + 1) for i, c in enumerate(coeffs)] + [Fraction(0)]

    def F(t):
        return sum(c * Fraction(t) ** (deg + 1 - i) for i, c in enumerate(anti))

    value = F(hi) - F(lo)
    problem = f"Integrate {f} from x = {lo} to x = {hi}"
    think = f"F({hi}) - F({paren(lo)}) = {fmt_num(F(hi))} - {paren_frac(F(lo))} = {fmt_num(value)}"
    return problem, fmt_num(value), think


def paren_frac(v: Fraction) -> str:
    s = fmt_num(v)
    return f"({s})" if v < 0 else s


_TRIPLES = [(3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25), (20, 21, 29)]


def make_geometry(rng: random.Random, d: int):
    kind = rng.choice(["rect_area", "rect_perimeter", "triangle_area", "hypotenuse", "leg", "square_area",
                       "trapezoid_area", "box_volume", "third_angle"])
    r = 10 + 10 * d
    if kind == "rect_area":
        w, h = rng.randint(1, r), rng.randint(1, r)
        return f"Find the area of a rectangle with width {w} and height {h}", str(w * h), f"{w}*{h}={w * h}"
    if kind == "rect_perimeter":
        w, h = rng.randint(1, r), rng.randint(1, r)
        p = 2 * (w + h)
        return (f"Find the perimeter of a rectangle with width {w} and height {h}", str(p),
                f"2*({w}+{h})={p}")
    if kind == "square_area":
        s = rng.randint(1, 5 * r)
        return f"Find the area of a square with side {s}", str(s * s), f"{s}*{s}={s * s}"
    if kind == "triangle_area":
        b, h = rng.randint(1, r), rng.randint(1, r)
        area = Fraction(b * h, 2)
        return (f"Find the area of a triangle with base {b} and height {h}", fmt_num(area),
                f"{b}*{h}/2={fmt_num(area)}")
    if kind == "trapezoid_area":
        a, b, h = rng.randint(1, r), rng.randint(1, r), rng.randint(1, r)
        area = Fraction((a + b) * h, 2)
        return (f"Find the area of a trapezoid with bases {a} and {b} and height {h}", fmt_num(area),
                f"({a}+{b})*{h}/2={fmt_num(area)}")
    if kind == "box_volume":
        a, b, c = rng.randint(1, r), rng.randint(1, r), rng.randint(1, r)
        return (f"Find the volume of a box with sides {a}, {b} and {c}", str(a * b * c), f"{a}*{b}*{c}={a * b * c}")
    if kind == "third_angle":
        a = rng.randint(10, 160)
        b = rng.randint(5, 175 - a)
        return (f"Two angles of a triangle are {a} and {b} degrees. Find the third angle in degrees",
                str(180 - a - b), f"180-{a}-{b}={180 - a - b}")
    a, b, c = rng.choice(_TRIPLES[: 2 + d])
    k = rng.randint(1, 3 * d)
    a, b, c = a * k, b * k, c * k
    if kind == "hypotenuse":
        return (f"A right triangle has legs {a} and {b}. Find the hypotenuse", str(c),
                f"{a}^2+{b}^2={a * a + b * b}={c}^2")
    return (f"A right triangle has hypotenuse {c} and one leg {a}. Find the other leg", str(b),
            f"{c}^2-{a}^2={c * c - a * a}={b}^2")


def make_statistics(rng: random.Random, d: int):
    n = rng.randint(4, 4 + d)
    vals = [rng.randint(1, 10 * d) for _ in range(n)]
    kind = rng.choice(["mean", "median", "mode", "range", "variance"])
    shown = ", ".join(map(str, vals))
    s = sorted(vals)
    if kind == "mode":  # a unique mode: m twice, every other value once
        m = rng.randint(1, 10 * d)
        vals = rng.sample([v for v in range(1, 10 * d + 1) if v != m], n - 2) + [m, m]
        rng.shuffle(vals)
        shown = ", ".join(map(str, vals))
        return f"Find the mode of {shown}", str(m), f"{m} appears twice"
    if kind == "mean":
        mean = Fraction(sum(vals), n)
        return f"Find the mean of {shown}", fmt_num(mean), f"{sum(vals)}/{n}={fmt_num(mean)}"
    if kind == "median":
        med = Fraction(s[n // 2]) if n % 2 else Fraction(s[n // 2 - 1] + s[n // 2], 2)
        return f"Find the median of {shown}", fmt_num(med), f"sorted {', '.join(map(str, s))}, median {fmt_num(med)}"
    if kind == "range":
        return f"Find the range of {shown}", str(s[-1] - s[0]), f"{s[-1]}-{s[0]}={s[-1] - s[0]}"
    mean = Fraction(sum(vals), n)
    var = sum((Fraction(v) - mean) ** 2 for v in vals) / n
    return (f"Find the population variance of {shown}", fmt_num(var),
            f"mean {fmt_num(mean)}, variance {fmt_num(var)}")


@lru_cache(maxsize=64)
def _primes_below(limit: int) -> tuple[int, ...]:
    sieve = bytearray([1]) * limit
    sieve[:2] = b"\x00\x00"
    for i in range(2, int(limit ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, limit, i)))
    return tuple(i for i, v in enumerate(sieve) if v)


def make_number_theory(rng: random.Random, d: int):
    import math

    kind = rng.choice(["gcd", "lcm", "mod", "next_prime", "count_primes"])
    r = 20 * d
    if kind in ("gcd", "lcm"):
        k = rng.randint(1, 6 * d)
        a, b = k * rng.randint(1, r // 2), k * rng.randint(1, r // 2)
        v = math.gcd(a, b) if kind == "gcd" else math.lcm(a, b)
        name = "greatest common divisor" if kind == "gcd" else "least common multiple"
        return f"Find the {name} of {a} and {b}", str(v), f"{kind}({a}, {b}) = {v}"
    if kind == "mod":
        a, m = rng.randint(0, 10 * r), rng.randint(2, 3 + 4 * d)
        return f"Find the remainder when {a} is divided by {m}", str(a % m), f"{a} = {m}*{a // m} + {a % m}"
    n = rng.randint(2, 10 * r)
    primes = _primes_below(2 * n + 10)
    if kind == "next_prime":
        p = next(q for q in primes if q > n)
        return f"Find the smallest prime greater than {n}", str(p), f"{p} is prime"
    c = sum(1 for q in primes if q <= n)
    return f"How many primes are less than or equal to {n}?", str(c), f"primes up to {n}: {c}"


_WORDS = ["CAT", "MATH", "PRIME", "NUMBER", "GRAPH", "LOGIC", "SET", "PROOF", "DOG", "ORBIT"]


def make_discrete(rng: random.Random, d: int):
    import math

    kind = rng.choice(["choose", "permute", "arrange", "subsets", "handshakes", "diagonals", "grid_paths",
                       "officers", "seating", "meals", "meals", "distribute"])
    if kind == "meals":  # the multiplication principle; three free numbers give the widest space
        a, b, c = (rng.randint(2, 10 + 10 * d) for _ in range(3))
        return (f"A menu has {a} starters, {b} mains and {c} desserts. How many three-course meals are possible?",
                str(a * b * c), f"{a}*{b}*{c} = {a * b * c}")
    if kind == "distribute":
        n, k = rng.randint(1, 10 + 10 * d), rng.randint(2, 2 + d)
        v = math.comb(n + k - 1, k - 1)
        return (f"In how many ways can {n} identical balls be put into {k} distinct boxes?", str(v),
                f"C({n + k - 1},{k - 1}) = {v}")
    if kind == "choose":
        n = rng.randint(4, 10 + 10 * d)
        k = rng.randint(2, min(n - 1, 2 + d))
        v = math.comb(n, k)
        return f"How many ways are there to choose {k} items from {n}?", str(v), f"C({n},{k}) = {v}"
    if kind == "permute":
        n = rng.randint(3, 8 + 6 * d)
        k = rng.randint(2, min(n, 1 + d))
        v = math.perm(n, k)
        return (f"How many ordered arrangements of {k} items can be made from {n} distinct items?", str(v),
                f"P({n},{k}) = {v}")
    if kind == "arrange":
        w = rng.choice([w for w in _WORDS if len(w) <= 3 + 2 * d])
        repeats = [k for k in Counter(w).values() if k > 1]  # PROOF: 5!/2! = 60, not 5!
        v = math.factorial(len(w)) // math.prod(math.factorial(k) for k in repeats)
        think = f"{len(w)}!" + "".join(f"/{k}!" for k in repeats) + f" = {v}"
        return f"In how many ways can the letters of {w} be arranged?", str(v), think
    if kind == "seating":
        n = rng.randint(2, 5 + 2 * d)
        v = math.factorial(n)
        return f"In how many ways can {n} people sit in a row?", str(v), f"{n}! = {v}"
    if kind == "subsets":
        n = rng.randint(1, 6 + 4 * d)
        return f"How many subsets does a set with {n} elements have?", str(2 ** n), f"2^{n} = {2 ** n}"
    if kind == "diagonals":
        n = rng.randint(4, 50 + 50 * d)
        v = n * (n - 3) // 2
        return f"How many diagonals does a polygon with {n} sides have?", str(v), f"{n}*({n}-3)/2 = {v}"
    if kind == "grid_paths":
        a, b = rng.randint(1, 3 + 2 * d), rng.randint(1, 3 + 2 * d)
        v = math.comb(a + b, a)
        return (f"How many shortest paths go from corner to corner of a {a} by {b} grid?", str(v),
                f"C({a + b},{a}) = {v}")
    if kind == "officers":
        n = rng.randint(2, 50 + 50 * d)
        v = n * (n - 1)
        return (f"In how many ways can a president and a vice-president be chosen from {n} people?", str(v),
                f"{n}*{n - 1} = {v}")
    n = rng.randint(2, 50 + 50 * d)
    v = n * (n - 1) // 2
    return (f"{n} people each shake hands once with every other person. How many handshakes?", str(v),
            f"C({n},2) = {v}")


MAKERS = {"algebra": make_algebra, "calculus": make_calculus, "geometry": make_geometry,
          "statistics": make_statistics, "number_theory": make_number_theory, "discrete": make_discrete}


def verify_answer(domain: str, problem: str, answer: str) -> bool:
    """Recompute a generated answer by the domain's independent checker."""
    return CHECKERS[domain](problem) == answer


def domain_draw(domain: str, difficulty: int, seed: int) -> Callable[[], tuple[str, str, str]]:
    """Draw (problem, answer, think) for one domain, one rng per (seed, domain): changing one
    domain's count leaves the others' problems alone. generate.problems draws from it too."""
    rng = random.Random(f"{seed}:{domain}")
    make = MAKERS[domain]
    return lambda: make(rng, difficulty)
