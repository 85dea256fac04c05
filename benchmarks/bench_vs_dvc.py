"""No-op cost beside DVC's: a 100-step chain as a recipe and as a 100-stage dvc.yaml.

Each step reads the previous step's 1,000-row JSONL and adds its index to `x` (`data.map`
with `derive: {x: 'x + i'}`; in DVC, a stage running map.py). Both are built and run cold in a
temp dir, then their no-ops are timed alternately, A B A B, as whole processes, and the ratio
of medians is reported (target: recipe <= 0.10x `dvc repro`). Also `recipe plan` beside
`dvc status`.

    pip install -e ".[bench]"
    python benchmarks/bench_vs_dvc.py [--steps 100] [--rounds 7]   # writes benchmarks/results/vs_dvc.json
    python -m pytest benchmarks/bench_vs_dvc.py                     # the same, as a test (skips without dvc)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "vs_dvc.json"
MAP = """import json, sys
src, dst, i = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(src) as f, open(dst, "w") as g:
    for line in f:
        row = json.loads(line)
        row["x"] = row["x"] + i
        g.write(json.dumps(row) + "\\n")
"""


def build(d: Path, steps: int) -> None:
    (d / "data.jsonl").write_text("".join(f'{{"x": {i}}}\n' for i in range(1000)))
    (d / "map.py").write_text(MAP)
    recipe = [f"recipe: chain{steps}", "steps:", "  - id: s0", "    uses: data.from_file",
              "    with: {path: data.jsonl}"]
    dvc = ["stages:", "  s0:", "    cmd: cp data.jsonl s0.jsonl", "    deps: [data.jsonl]", "    outs: [s0.jsonl]"]
    for i in range(1, steps):
        recipe += [f"  - id: s{i}", "    uses: data.map", f"    with: {{derive: {{x: 'x + {i}'}}}}",
                   f"    inputs: {{data: '${{steps.s{i - 1}.data}}'}}"]
        dvc += [f"  s{i}:", f"    cmd: {sys.executable} map.py s{i - 1}.jsonl s{i}.jsonl {i}",
                f"    deps: [map.py, s{i - 1}.jsonl]", f"    outs: [s{i}.jsonl]"]
    (d / "chain.yaml").write_text("\n".join(recipe) + "\n")
    (d / "dvc.yaml").write_text("\n".join(dvc) + "\n")


def env() -> dict[str, str]:
    """A user's environment: bytecode caches on, no DVC telemetry, this checkout's engine."""
    e = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**e, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])}


def dvc_cmd(*args: str) -> list[str]:
    exe = shutil.which("dvc", path=os.path.dirname(sys.executable)) or shutil.which("dvc")
    return [exe, *args]


RECIPE = [sys.executable, "-m", "engine.cli"]


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env(), check=True, capture_output=True)
    return time.perf_counter() - t0


def prime(d: Path) -> None:
    subprocess.run(dvc_cmd("init", "--no-scm", "-q"), cwd=d, env=env(), check=True)
    subprocess.run(dvc_cmd("repro", "-q"), cwd=d, env=env(), check=True, capture_output=True)
    for _ in range(2):  # cold, then a no-op that saves the plan
        subprocess.run([*RECIPE, "run", "chain.yaml", "-q"], cwd=d, env=env(), check=True, capture_output=True)


def alternate(d: Path, a: list[str], b: list[str], rounds: int) -> tuple[list[float], list[float]]:
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(timed(a, d))
        tb.append(timed(b, d))
    return ta, tb


def compare(steps: int = 100, rounds: int = 7) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        build(d, steps)
        prime(d)
        pairs = {"noop": ([*RECIPE, "run", "chain.yaml", "-q"], dvc_cmd("repro")),
                 "noop_default_output": ([*RECIPE, "run", "chain.yaml"], dvc_cmd("repro")),
                 "plan": ([*RECIPE, "plan", "chain.yaml"], dvc_cmd("status"))}
        out = {"steps": steps, "rounds": rounds, "command": "python benchmarks/bench_vs_dvc.py",
               "when": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average": os.getloadavg()}
        for name, (mine, theirs) in pairs.items():
            ta, tb = alternate(d, mine, theirs, rounds)
            out[name] = {"recipe_s": ta, "dvc_s": tb, "recipe_median_s": statistics.median(ta),
                         "dvc_median_s": statistics.median(tb),
                         "ratio": round(statistics.median(ta) / statistics.median(tb), 3),
                         "recipe": " ".join(mine[2:]), "dvc": "dvc " + " ".join(theirs[1:])}
        return out


def test_noop_vs_dvc_repro():
    import pytest

    if not shutil.which("dvc", path=os.path.dirname(sys.executable)) and not shutil.which("dvc"):
        pytest.skip("dvc is not installed (pip install -e '.[bench]')")
    result = compare()
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    res = compare(a.steps, a.rounds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    for k in ("noop", "noop_default_output", "plan"):
        r = res[k]
        print(f"{k:20} recipe {r['recipe_median_s']:.3f} s   dvc {r['dvc_median_s']:.3f} s   ratio {r['ratio']:.3f}")
