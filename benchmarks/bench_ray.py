"""Scaling out: CPU-bound shards on 2 Ray workers vs in process, the overhead of one Ray
shard, and 4 independent 5-second CPU steps under `-j 2` (DAG scheduling, not waves).

    python -m pytest benchmarks/bench_ray.py --benchmark-only --benchmark-json benchmarks/results/ray.json

Targets (2 cores): speed-up >= 1.8x, per-shard overhead <= 10 ms, 4 x 5 s steps with -j 2 <= 11 s.
"""
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
ROWS, SHARDS = 200_000, 20


def square_digits(rows):
    """A data.map-like row function with real CPU work: digit sums of i**3 in pure Python."""
    return [{"i": i, "s": sum(int(c) for c in str(i ** 3))} for i in rows]


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}"}})
    yield ray
    ray.shutdown()


def context(tmp: Path, shards):
    from engine.run.context import Context

    return Context(config=None, inputs={}, outdir=tmp / "out", scratch=tmp / "scratch", seed=0,
                   log=logging.getLogger("bench"), shards=shards)


def run_shards(tmp_factory, shards, items, shard_size, fn):
    ctx = context(tmp_factory.mktemp("run"), shards)  # a fresh scratch: nothing to resume
    return ctx.map_shards(items, fn, shard_size)


def test_cpu_shards_in_process(benchmark, tmp_path_factory):
    from engine.run.shards import InProcessShards

    rows = benchmark.pedantic(run_shards, args=(tmp_path_factory, InProcessShards(), range(ROWS), ROWS // SHARDS,
                                                square_digits), rounds=3)
    assert len(rows) == ROWS


def test_cpu_shards_on_2_ray_workers(benchmark, ray_session, tmp_path_factory):
    from engine.run.executors.ray import RayShards

    rows = benchmark.pedantic(run_shards, args=(tmp_path_factory, RayShards(), range(ROWS), ROWS // SHARDS,
                                                square_digits), rounds=3, warmup_rounds=1)
    assert len(rows) == ROWS


def nothing(rows):
    return [{"i": i} for i in rows]


@pytest.mark.parametrize("runner", ["in_process", "ray"])
def test_overhead_of_200_empty_shards(benchmark, ray_session, tmp_path_factory, runner):
    from engine.run.executors.ray import RayShards
    from engine.run.shards import InProcessShards

    shards = RayShards() if runner == "ray" else InProcessShards()
    benchmark.pedantic(run_shards, args=(tmp_path_factory, shards, range(200), 1, nothing), rounds=3, warmup_rounds=1)
    benchmark.extra_info["ms_per_shard"] = round(benchmark.stats.stats.mean / 200 * 1000, 2)


FOUR = "recipe: four\nsteps:\n" + "".join(
    f"  - {{id: s{i}, uses: bench.busy, with: {{seconds: 5.0, tag: '{i}'}}}}\n" for i in range(4))


def test_four_independent_5s_cpu_steps_with_j2(benchmark, tmp_path):
    (tmp_path / "four.yaml").write_text(FOUR)
    env = {**os.environ, "RECIPE_STEP_MODULES": "bench_steps",
           "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def run():
        cache = tmp_path / f"cache{time.time_ns()}"  # nothing cached: all four compute
        subprocess.run([sys.executable, "-m", "engine.cli", "run", "four.yaml", "-j", "2", "-q",
                        "--cache-dir", str(cache)],
                       cwd=tmp_path, env=env, check=True, capture_output=True)

    benchmark.pedantic(run, rounds=2)
