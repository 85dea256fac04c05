"""One `recipe` command under two checkouts of the engine (say main and a branch), alternated
run by run, so that both see the same machine load; medians of wall seconds, CPU seconds and
peak RSS, with the load average before each round.

    git worktree add /tmp/main-tree main
    python benchmarks/ab_trees.py --old /tmp/main-tree --new . --rounds 5 --cwd DIR \\
        --env RECIPE_MAX_INSTANCES=100001 -- plan wide.yaml

`--setup CMD` runs (through the shell, in the run's folder) before every run of either tree:
e.g. removing a cache for a cold run. `--new-cwd DIR` gives the new tree its own folder (a
no-op run: the fast path's snapshot of one tree is not the other's). Each run must exit 0
unless --any-exit.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run_once(tree: str, args: list[str], cwd: str, extra: dict[str, str], any_exit: bool) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra, PYTHONPATH=os.path.abspath(tree))
    started = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=cwd, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - started
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code and not any_exit:
        sys.exit(f"{tree}: recipe {' '.join(args)} exited with {code}:\n{err[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="checkout of the old engine (its root folder)")
    ap.add_argument("--new", required=True, help="checkout of the new engine")
    ap.add_argument("--cwd", required=True, help="folder the recipe command runs in")
    ap.add_argument("--new-cwd", help="the new tree's own folder (default: --cwd)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for both runs")
    ap.add_argument("--setup", help="shell command run in --cwd before every run")
    ap.add_argument("--any-exit", action="store_true")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the recipe arguments")
    a = ap.parse_args()
    args = a.command[1:] if a.command[:1] == ["--"] else a.command
    extra = dict(kv.split("=", 1) for kv in a.env)
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    loads = []
    for i in range(a.rounds):
        loads.append(os.getloadavg()[0])
        for name in (("old", "new") if i % 2 == 0 else ("new", "old")):  # who goes first alternates too
            cwd = a.new_cwd if name == "new" and a.new_cwd else a.cwd
            if a.setup:
                subprocess.run(a.setup, shell=True, cwd=cwd, check=True)  # noqa: S602 - the user's own command
            runs[name].append(run_once(getattr(a, name), args, cwd, extra, a.any_exit))
            r = runs[name][-1]
            print(f"round {i + 1} {name}: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU, {r['rss_mb']:.0f} MB",
                  flush=True)
    med = {name: {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]} for name, rs in runs.items()}
    print(json.dumps({"command": args, "rounds": a.rounds, "median": med,
                      "new/old wall": round(med["new"]["wall_s"] / med["old"]["wall_s"], 3),
                      "load_average_1min": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)}},
                     indent=1))


if __name__ == "__main__":
    main()
