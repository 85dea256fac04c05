"""The quickstart cold, as a user runs it: `recipe run recipes/quickstart.yaml` in a fresh cache,
per round the whole run's wall and CPU seconds, each step's wall seconds, and the held-out
accuracy before and after error fine-tuning (the run's own before/after table).

    python benchmarks/bench_quickstart.py                          # one cold run of this checkout
    python benchmarks/bench_quickstart.py --rounds 3 --save        # medians; writes benchmarks/results/quickstart.json
    python benchmarks/bench_quickstart.py --rounds 3 --baseline /tmp/main   # alternates with another checkout
    python benchmarks/bench_quickstart.py --profile tiny           # the smoke profile

Goal (issue 23): <= 90 s cold on 2 cores, held-out accuracy within 1 point of before. Trained
models differ per CPU and thread count, so compare accuracies measured on one machine. Each
run is a fresh `recipe` process (imports included, as a user pays them); `--baseline` runs the
other checkout's code and recipe the same way, alternating run by run, so load hits both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("tokenizer", "pretrain", "before", "mine", "finetune", "after")


def cold_run(tree: Path, profile: str | None, scratch: Path) -> dict:
    """One `recipe run` of `tree`'s quickstart in an empty cache; its times and accuracies."""
    work = Path(tempfile.mkdtemp(dir=scratch))
    cmd = [sys.executable, "-m", "engine.cli", "run", str(tree / "recipes" / "quickstart.yaml"), "-q",
           "--cache-dir", str(work / "cache"), "--artifacts-dir", str(work / "artifacts")]
    if profile:
        cmd += ["--profile", profile]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        sys.exit(f"{tree}: recipe run failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    record = json.loads(max((work / "cache" / "runs").glob("*.json")).read_text())
    reports = work / "artifacts" / "quickstart"
    accuracy = {label: json.loads((reports / label / "report" / "metrics.json").read_text())["accuracy"]
                for label in ("before", "after")}
    subprocess.run(["rm", "-rf", str(work)], check=True)
    return {"wall_s": round(wall, 2),
            "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2),
            "steps_s": {n["label"]: n["seconds"] for n in record["nodes"]},
            "accuracy": accuracy, "load_1min": round(os.getloadavg()[0], 2)}


def median_of(runs: list[dict], pick) -> float:
    return round(statistics.median(pick(r) for r in runs), 2)


def summary(runs: list[dict]) -> dict:
    return {"wall_s": median_of(runs, lambda r: r["wall_s"]), "cpu_s": median_of(runs, lambda r: r["cpu_s"]),
            "steps_s": {s: median_of(runs, lambda r: r["steps_s"].get(s, 0.0)) for s in STEPS},
            "accuracy": [r["accuracy"] for r in runs], "load_1min": [r["load_1min"] for r in runs]}


def show(results: dict[str, dict]) -> None:
    names = list(results)
    print(f"{'median of ' + str(len(results[names[0]]['accuracy'])) + ' cold runs':<28}"
          + "".join(f"{n:>14}" for n in names))
    for what in ("wall_s", "cpu_s"):
        print(f"{what:<28}" + "".join(f"{results[n][what]:>14.1f}" for n in names))
    for s in STEPS:
        print(f"  {s + ' wall s':<26}" + "".join(f"{results[n]['steps_s'][s]:>14.1f}" for n in names))
    for n in names:
        acc = ", ".join(f"{a['before']:.1%} -> {a['after']:.1%}" for a in results[n]["accuracy"])
        print(f"held-out accuracy {n}: {acc} (load {results[n]['load_1min']})")
    if len(names) == 2:
        print(f"wall ratio {names[1]}/{names[0]}: {results[names[1]]['wall_s'] / results[names[0]]['wall_s']:.2f}, "
              f"CPU ratio: {results[names[1]]['cpu_s'] / results[names[0]]['cpu_s']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--profile", default=None, help="a profile of the quickstart (default: none, the full run)")
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout, run alternately")
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/quickstart.json")
    a = ap.parse_args()
    trees = {"this": ROOT} if a.baseline is None else {"baseline": a.baseline.resolve(), "this": ROOT}
    runs: dict[str, list[dict]] = {n: [] for n in trees}
    with tempfile.TemporaryDirectory(prefix="bench_quickstart_") as scratch:
        for r in range(a.rounds):
            for name, tree in trees.items():
                runs[name].append(cold_run(tree, a.profile, Path(scratch)))
                print(f"round {r + 1} {name}: {json.dumps(runs[name][-1])}", flush=True)
    results = {n: summary(rs) for n, rs in runs.items()}
    show(results)
    if a.save:
        out = {"profile": a.profile, "rounds": a.rounds, "trees": {n: str(t) for n, t in trees.items()},
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()},
               "results": results, "runs": runs}
        (ROOT / "benchmarks" / "results" / "quickstart.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
