"""Console commands' speed. Run: python -m pytest benchmarks/bench_console.py --benchmark-only -q
--benchmark-json benchmarks/results/console.json

1. `recipe run recipes/deepseek_all_domains.yaml` without vllm: the preflight failure, from
   process start to exit 1 (target <= 2 s; nothing starts).
2. `recipe dag recipes/quickstart.yaml` (27 steps), text.
3. Preflight of a 10,000-instance foreach, in process (target: a small share of planning it).
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, cwd, rc):
    p = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, capture_output=True, text=True)
    assert p.returncode == rc, p.stderr


def test_preflight_failure_of_deepseek_without_vllm(benchmark, tmp_path):
    benchmark.pedantic(_cli, args=("run", str(ROOT / "recipes" / "deepseek_all_domains.yaml")),
                       kwargs={"cwd": tmp_path, "rc": 1}, rounds=5, iterations=1)


def test_dag_of_the_quickstart(benchmark, tmp_path):
    benchmark.pedantic(_cli, args=("dag", str(ROOT / "recipes" / "quickstart.yaml")),
                       kwargs={"cwd": tmp_path, "rc": 0}, rounds=5, iterations=1)


def test_preflight_of_10000_instances(benchmark, tmp_path):
    from engine.cache.store import Store
    from engine.cli.preflight import check
    from engine.recipe.plan import plan_file
    from engine.run.runner import Runner

    (tmp_path / "data.jsonl").write_text('{"i": 1}\n')
    (tmp_path / "wide.yaml").write_text(
        f"recipe: wide\nsteps:\n  - id: load\n    uses: data.from_file\n    with: {{path: {tmp_path}/data.jsonl}}\n"
        "  - id: pick\n    uses: data.sample\n    foreach: ${range(10000)}\n    with: {n: 1, seed: '${item}'}\n"
        "    inputs: {data: '${steps.load.data}'}\n")
    runner = Runner(plan_file(tmp_path / "wide.yaml"), Store(tmp_path / "cache"))
    benchmark.pedantic(check, args=(runner,), rounds=5, iterations=1)
