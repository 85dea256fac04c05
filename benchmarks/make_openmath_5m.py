"""Write a large synthetic file with nvidia/OpenMathReasoning's exact schema (default 5M rows)
for the filter benchmark. Nothing is downloaded.

    python benchmarks/make_openmath_5m.py [--out /tmp/openmath_5m/openmath_5m.parquet] [--rows 5000000]

Columns, order and types match the real dataset (all strings but `used_in_kaggle`). Like the
real data, each problem has several solutions (16 here); `pass_rate_72b_tir` is a string k/32 for problems
with an extracted answer and "n/a" otherwise (about a third of the rows). Texts are short
(problem ~77 chars, solution 144-359 chars with per-row numbers so no two are alike; real
solutions average ~20 KB): 5M rows are ~2.1 GB in memory and 257 MB on disk (snappy), so the
benchmark measures the per-row work of filtering rather than disk bandwidth.
Row groups hold 100,000 rows, as large exported Hub parquet files do.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

SOURCES = ["aops_c4_high_school_math", "aops_c6_high_school_olympiads", "aops_c5_contests_amp_programs",
           "aops_c7_college_math", "MATH_training_set"]
MODELS = ["DeepSeek-R1", "QwQ-32B"]
MODES = ["cot", "tir", "genselect"]
TYPES = ["has_answer_extracted", "no_answer_extracted", "converted_proof"]
STEPS = ["We expand the product and collect like terms.", "Substituting back gives a linear equation.",
         "By the AM-GM inequality the minimum is attained at equality.", "Reducing modulo the divisor simplifies it.",
         "We check small cases to see the pattern.", "Applying Vieta's formulas to the quadratic.",
         "The number of ways follows from stars and bars.", "Taking logarithms of both sides."]


def schema():
    import pyarrow as pa

    cols = ["expected_answer", "problem_type", "problem_source", "generation_model", "pass_rate_72b_tir",
            "problem", "generated_solution", "inference_mode", "used_in_kaggle"]
    return pa.schema([(c, pa.bool_() if c == "used_in_kaggle" else pa.string()) for c in cols])


def chunk(rng, start: int, n: int):
    """Rows [start, start+n): problems change every few rows (several solutions per problem)."""
    import numpy as np
    import pyarrow as pa

    pid = (np.arange(start, start + n) // 16).astype(np.int64)  # ~16 solutions per problem
    h = (pid * 2654435761) % 4294967296
    ptype_idx = np.where(h % 100 < 65, 0, np.where(h % 100 < 90, 1, 2))
    k = (h // 100) % 33
    rate_txt = np.array([f"{i / 32}" for i in range(33)], dtype=object)
    rate = np.where(ptype_idx == 0, rate_txt[k], "n/a")
    a, b = (h // 3300) % 97 + 2, (h // 320100) % 89 + 3
    answers = [str(x * y + 1) for x, y in zip(a.tolist(), b.tolist())]
    problems = [f"Problem {p}: compute ${x} \\times {y} + 1$ and simplify the result completely."
                for p, x, y in zip(pid.tolist(), a.tolist(), b.tolist())]
    nsteps = rng.integers(1, 6, n)
    step_idx = rng.integers(0, len(STEPS), n)
    checks = rng.integers(0, 10**9, (n, 2))  # per-row numbers: solutions are distinct, as in the real data
    solutions = [f"<think>\n{' '.join(STEPS[(s + j) % len(STEPS)] for j in range(m))} "
                 f"As a check, {c0} + {c1} = {c0 + c1}.\n</think>\n"
                 f"Hence the value is {ans}, so the answer is $\\boxed{{{ans}}}$."
                 for s, m, ans, c0, c1 in zip(step_idx.tolist(), nsteps.tolist(), answers,
                                              checks[:, 0].tolist(), checks[:, 1].tolist())]
    return pa.table({
        "expected_answer": pa.array(answers, pa.string()),
        "problem_type": pa.array(np.array(TYPES, dtype=object)[ptype_idx], pa.string()),
        "problem_source": pa.array(np.array(SOURCES, dtype=object)[h % len(SOURCES)], pa.string()),
        "generation_model": pa.array(np.array(MODELS, dtype=object)[rng.integers(0, 2, n)], pa.string()),
        "pass_rate_72b_tir": pa.array(rate, pa.string()),
        "problem": pa.array(problems, pa.string()),
        "generated_solution": pa.array(solutions, pa.string()),
        "inference_mode": pa.array(np.array(MODES, dtype=object)[rng.choice(3, n, p=[0.6, 0.3, 0.1])], pa.string()),
        "used_in_kaggle": pa.array(rng.random(n) < 0.5, pa.bool_()),
    }, schema=schema())


def write(out: Path, rows: int, seed: int = 0, row_group: int = 100_000) -> Path:
    import numpy as np
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with pq.ParquetWriter(tmp, schema()) as writer:
        for start in range(0, rows, row_group):
            writer.write_table(chunk(rng, start, min(row_group, rows - start)), row_group_size=row_group)
    tmp.replace(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/openmath_5m/openmath_5m.parquet")  # bench_filter.py's default
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    path = write(Path(args.out), args.rows, args.seed)
    print(f"wrote {args.rows} rows to {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
