"""deepseek_all_domains --profile tiny cold, local against `--executor ray` (Ray started by the
run, its model replicas kept loaded for the run and shared by the twelve generation steps),
alternating run by run so that load on the machine hits both alike.

    python benchmarks/bench_ray_replicas.py --rounds 3 --save        # writes benchmarks/results/ray_replicas.json
    python benchmarks/bench_ray_replicas.py --rounds 2 --baseline /tmp/main   # also another checkout's ray run

Every run starts from a copy of one cache holding only the quickstart's tiny pretrain (made
once), so each computes the same 30 nodes. Every run must give the same key and output
digests for every node as the first. Target (issue 20): ray <= 2x local (it was 6.9x while
each step started replicas of its own).
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

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "recipes/deepseek_all_domains.yaml"


def recipe(tree: Path, *args: str, cwd: Path) -> None:
    cmd = [sys.executable, "-m", "engine.cli", *args, "-q"]
    p = subprocess.run(cmd, cwd=cwd, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}")


def cold_run(tree: Path, executor: str, base: Path, scratch: Path) -> dict:
    """One `recipe run` of `tree`'s recipe from a copy of `base`: its wall time and nodes."""
    work = Path(tempfile.mkdtemp(dir=scratch))
    shutil.copytree(base, work / "cache", symlinks=True)
    args = ["run", str(tree / RECIPE), "--profile", "tiny", "--cache-dir", str(work / "cache"),
            "--artifacts-dir", str(work / "artifacts"), "--executor", executor]
    t0 = time.perf_counter()
    recipe(tree, *args, cwd=work)
    wall = time.perf_counter() - t0
    record = json.loads(max((work / "cache" / "runs").glob("*.json")).read_text())
    shutil.rmtree(work)
    return {"executor": executor, "tree": str(tree), "wall_s": round(wall, 2),
            "load_1min": round(os.getloadavg()[0], 2),
            "ran": sum(n["status"] == "ran" for n in record["nodes"]),
            "steps_s": {n["label"]: n["seconds"] for n in record["nodes"] if n["status"] == "ran"},
            "nodes": {n["label"]: [n["key"], n["outputs"]] for n in record["nodes"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="another checkout: its ray run joins each round")
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/ray_replicas.json")
    a = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench_ray_replicas_"))
    try:
        base = scratch / "base"
        recipe(ROOT, "run", str(ROOT / "recipes/quickstart.yaml"), "--profile", "tiny", "--only", "pretrain",
               "--cache-dir", str(base), "--artifacts-dir", str(scratch / "base_artifacts"), cwd=scratch)
        shutil.rmtree(base / "runs")  # the runs below each find only their own record
        plan = [(ROOT, "local"), (ROOT, "ray")] + ([(a.baseline.resolve(), "ray")] if a.baseline else [])
        runs = []
        for r in range(a.rounds):
            for tree, executor in plan if r % 2 == 0 else plan[::-1]:
                runs.append(cold_run(tree, executor, base, scratch))
                print(f"round {r + 1}: {executor:5} {tree}: {runs[-1]['wall_s']} s (load {runs[-1]['load_1min']})",
                      flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    first = runs[0]["nodes"]
    assert all(run["nodes"] == first for run in runs), "a run gave other keys or digests"
    medians = {f"{executor}{'' if tree == ROOT else ' baseline'}": statistics.median(
        x["wall_s"] for x in runs if (x["tree"], x["executor"]) == (str(tree), executor)) for tree, executor in plan}
    summary = {"medians_s": medians, "ray_over_local": round(medians["ray"] / medians["local"], 2),
               "nodes": len(first), "same_keys_and_digests": True,
               "runs": [{k: v for k, v in x.items() if k != "nodes"} for x in runs]}
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    if a.save:
        out = ROOT / "benchmarks" / "results" / "ray_replicas.json"
        out.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
