"""Write tests/data/openmath_fixture.parquet: a few hundred synthetic rows with the exact
column names, order and types of nvidia/OpenMathReasoning (all strings but `used_in_kaggle`).

The rows are made here, not downloaded: simple arithmetic/algebra problems whose solutions end
in \\boxed{answer}, several solutions per problem like the real data (cot/tir/genselect,
two generation models), and `pass_rate_72b_tir` as a string k/32 or "n/a" where the problem
has no extracted answer (as in the real dataset).

    python tests/data/make_openmath_fixture.py [--rows 300] [--out tests/data/openmath_fixture.parquet]
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

COLUMNS = [
    "expected_answer", "problem_type", "problem_source", "generation_model",
    "pass_rate_72b_tir", "problem", "generated_solution", "inference_mode", "used_in_kaggle",
]
SOURCES = ["aops_c4_high_school_math", "aops_c6_high_school_olympiads", "aops_c5_contests_amp_programs",
           "aops_c7_college_math", "MATH_training_set"]
MODELS = ["DeepSeek-R1", "QwQ-32B"]
MODES = ["cot", "cot", "cot", "tir", "genselect"]


def make_problem(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(4)
    a, b, c = rng.randint(2, 60), rng.randint(2, 60), rng.randint(1, 9)
    if kind == 0:
        return f"Compute ${a} \\times {b} + {c}$.", str(a * b + c)
    if kind == 1:
        return f"Find $x$ such that ${c}x + {a} = {a + c * b}$.", str(b)
    if kind == 2:
        return (f"What is the remainder when ${a}^{{{c + 1}}}$ is divided by ${b}$?", str(pow(a, c + 1, b)))
    num, den = a, a + b
    from math import gcd

    g = gcd(num, den)
    return (f"A bag has {num} red and {b} blue marbles. What is the probability of drawing a red one?",
            f"\\frac{{{num // g}}}{{{den // g}}}")


def make_solution(rng: random.Random, problem: str, answer: str, mode: str) -> str:
    steps = rng.randint(1, 4)
    body = " ".join(f"Step {i + 1}: we simplify the expression carefully." for i in range(steps))
    tool = "\n```python\nprint('check')\n```\n```output\ncheck\n```\n" if mode == "tir" else ""
    return f"<think>\nLet me work through this. {body}{tool}\n</think>\nTherefore the answer is $\\boxed{{{answer}}}$."


def make_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows: list[dict] = []
    while len(rows) < n:
        problem, answer = make_problem(rng)
        ptype = rng.choices(["has_answer_extracted", "no_answer_extracted", "converted_proof"], [6, 2, 1])[0]
        # the real dataset: pass rate only for problems with an extracted answer, else "n/a"
        rate = f"{rng.choice([0, 0, 1, 2, 3, 4, 8, 16, 24, 31, 32]) / 32}" if ptype == "has_answer_extracted" else "n/a"
        source = rng.choice(SOURCES)
        for _ in range(rng.randint(1, 3)):
            mode = rng.choice(MODES)
            rows.append({
                "expected_answer": answer,
                "problem_type": ptype,
                "problem_source": source,
                "generation_model": rng.choice(MODELS),
                "pass_rate_72b_tir": rate,
                "problem": problem,
                "generated_solution": make_solution(rng, problem, answer, mode),
                "inference_mode": mode,
                "used_in_kaggle": rng.random() < 0.5,
            })
    return rows[:n]


def schema():
    import pyarrow as pa

    return pa.schema([(c, pa.bool_() if c == "used_in_kaggle" else pa.string()) for c in COLUMNS])


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).with_name("openmath_fixture.parquet")))
    args = ap.parse_args()
    table = pa.Table.from_pylist(make_rows(args.rows, args.seed), schema=schema())
    pq.write_table(table, args.out)
    print(f"wrote {table.num_rows} rows to {args.out} ({Path(args.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
