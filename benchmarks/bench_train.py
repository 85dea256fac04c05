"""SFT tokens/s and GRPO steps/s on a tiny Llama on this machine (CPU unless CUDA is there), and
SFT in one process vs two (`launch: {num_processes: 2}`) at the same global batch.

    python -m pytest benchmarks/bench_train.py --benchmark-only -q -s

Figures come from the steps' own reports (trl's token count, the trainer's wall time), so
model loading and dataset tokenisation are left out.
"""
import statistics
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _tiny import make_tiny_model, problem_rows  # noqa: E402

from engine.recipe.artifact_types import Dataset, Model, write_records  # noqa: E402
from engine.run.testing import run_step  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_train")
    write_records(root / "d" / "data.jsonl", problem_rows(64))
    return Model(make_tiny_model(root / "m", hidden=128, layers=2)), Dataset(root / "d"), root


def test_sft_tokens_per_second(benchmark, tiny):
    model, data, root = tiny
    cfg = {"max_steps": 20, "learning_rate": 1e-4, "per_device_train_batch_size": 16, "max_length": 64}
    runs = iter(range(100))
    out = benchmark.pedantic(lambda: run_step("train.sft", cfg, {"data": data, "model": model},
                                              workdir=root / f"sft{next(runs)}"), rounds=1, iterations=1)
    m = out["report"].metrics()
    benchmark.extra_info.update(tokens_per_second=m["tokens_per_second"], train_seconds=m["train_seconds"])
    print(f"\nSFT: {m['train_tokens']} tokens in {m['train_seconds']:.1f}s = {m['tokens_per_second']:.0f} tokens/s")


def test_grpo_steps_per_second(benchmark, tiny):
    model, data, root = tiny
    cfg = {"max_steps": 10, "learning_rate": 1e-5, "per_device_train_batch_size": 16,
           "gradient_accumulation_steps": 1, "num_generations": 8, "max_completion_length": 32}
    runs = iter(range(100))
    out = benchmark.pedantic(lambda: run_step("train.grpo", cfg, {"data": data, "model": model},
                                              workdir=root / f"grpo{next(runs)}"), rounds=1, iterations=1)
    m = out["report"].metrics()
    rate = m["global_step"] / m["train_seconds"]
    benchmark.extra_info.update(steps_per_second=rate)
    print(f"\nGRPO: {m['global_step']} steps (2 prompts x 8 generations, <= 32 new tokens) in "
          f"{m['train_seconds']:.1f}s = {rate:.2f} steps/s")


def test_sft_one_vs_two_processes(benchmark, tiny):
    """Global batch 16: 1 process x 16 in the step's own process vs 2 processes x 8 under accelerate
    launch (gloo), alternating, 3 rounds each. The step's wall time includes the two processes'
    start (Python, torch, trl imports, model load); train_seconds is the trainer's own time."""
    model, data, root = tiny
    cfg = {"max_steps": 20, "learning_rate": 1e-4, "max_length": 64}
    kinds = {"1 process x 16": {"per_device_train_batch_size": 16},
             "2 processes x 8": {"per_device_train_batch_size": 8, "launch": {"num_processes": 2}}}
    runs = iter(range(100))
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    trains: dict[str, list[float]] = {k: [] for k in kinds}

    def rounds():
        for _ in range(3):
            for kind, extra in kinds.items():
                t0 = time.perf_counter()
                out = run_step("train.sft", {**cfg, **extra}, {"data": data, "model": model},
                               workdir=root / f"mp{next(runs)}")
                walls[kind].append(time.perf_counter() - t0)
                trains[kind].append(out["report"].metrics()["train_seconds"])

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    for kind in kinds:
        wall, train = statistics.median(walls[kind]), statistics.median(trains[kind])
        benchmark.extra_info[kind] = {"step_wall_s": wall, "train_s": train}
        print(f"\nSFT {kind}, 20 steps: step wall {wall:.1f}s (median of 3), trainer {train:.2f}s")
