"""Engine speed: no-op run of a cached 100-step recipe, plan of a 10,000-instance foreach,
digest of a 1 GB output cold and warm. Run: python -m pytest benchmarks/bench_engine.py
--benchmark-only (targets: 0.5 s, 5 s, >= 1 GB/s cold, <= 50 ms warm)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def recipe_cli(*args, cwd):
    subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    (d / "data.jsonl").write_text("".join(f'{{"i": {i}}}\n' for i in range(100)))
    (d / "hundred.yaml").write_text(
        "recipe: hundred\nsteps:\n  - id: load\n    uses: data.from_file\n    with: {path: data.jsonl}\n"
        "  - id: pick\n    uses: data.sample\n    foreach: ${range(99)}\n    with: {n: 5, seed: '${item}'}\n"
        "    inputs: {data: '${steps.load.data}'}\n")
    (d / "wide.yaml").write_text(
        "recipe: wide\nsteps:\n  - id: load\n    uses: data.from_file\n    with: {path: data.jsonl}\n"
        "  - id: pick\n    uses: data.sample\n    foreach: ${range(10000)}\n    with: {n: '${item % 50 + 1}', seed: '${item}'}\n"
        "    inputs: {data: '${steps.load.data}'}\n")
    recipe_cli("run", "hundred.yaml", "-q", cwd=d)
    recipe_cli("run", "wide.yaml", "-q", "--only", "load", cwd=d)
    return d


def test_noop_run_of_cached_100_step_recipe(benchmark, workdir):
    benchmark.pedantic(recipe_cli, args=("run", "hundred.yaml", "-q"), kwargs={"cwd": workdir}, rounds=5)


def test_plan_of_10000_instance_foreach(benchmark, workdir):
    benchmark.pedantic(recipe_cli, args=("plan", "wide.yaml"), kwargs={"cwd": workdir}, rounds=2)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "out" / "big.bin"
    path.parent.mkdir()
    with path.open("wb") as f:
        block = os.urandom(1 << 24)
        for _ in range(64):  # 1 GiB
            f.write(block)
    return path


def test_digest_1gb_cold(benchmark, big_file):
    from engine.digest import tree_digest

    benchmark.pedantic(tree_digest, args=(big_file.parent,), rounds=3)
    benchmark.extra_info["GB/s"] = round((1 << 30) / benchmark.stats.stats.mean / 1e9, 2)


def test_digest_1gb_warm_recheck(benchmark, big_file, tmp_path):
    from engine.digest import StatCache, tree_digest

    cache = StatCache(tmp_path / "stat")
    tree_digest(big_file.parent, cache)
    benchmark(tree_digest, big_file.parent, cache)
