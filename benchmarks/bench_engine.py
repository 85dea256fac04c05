"""Engine overhead as whole `recipe` processes (issue 11 targets):

    recipe --help                                   <= 0.3 s
    no-op of a 100-step data.map chain              <= 0.10x `dvc repro` (bench_vs_dvc.py)
    no-op of a 10,000-instance foreach              <= 2 s, <= 0.2 ms per cached instance
                                                    beyond the fixed cost (vs a 1,000-instance one)
    cold run of a 1,000-step trivial data.map chain <= 10 s (and the same with the cache in memory)
    cold run of a 300-instance foreach with -j 2    (a process per step)
    `recipe plan` of 10,000 instances               <= 5 s
    `recipe plan` of 100,000 instances              <= 5 s, <= 300 MB peak RSS (issue 23)
    `recipe plan` of 500 vars each reading the next, written in that order and in reverse
    `recipe plan` of a var naming 10,000 vars, and of one reading 2,000 by computed names   <= 1 s
    digest of 1 GB, cold and warm                   >= 1 GB/s, <= 50 ms

Run: python -m pytest benchmarks/bench_engine.py --benchmark-only \
         --benchmark-json benchmarks/results/engine.json
Each benchmark also records the child processes' CPU seconds (`extra_info.cpu_s`): on a shared
machine, wall time includes waiting for the CPU and the disk; CPU time is the engine's own cost.
Setting up the 10,000-instance cache takes minutes. Only the 100,000-instance plan:
    python -m pytest benchmarks/bench_engine.py --benchmark-only -k 100000_instance_plan
"""
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_vs_dvc import build as build_chain  # noqa: E402

BIG = {"RECIPE_MAX_INSTANCES": "100001"}  # a 100,000-instance foreach and the step it reads


def env(extra: dict[str, str] | None = None):
    e = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # a user's install has .pyc
    return {**e, "PYTHONPATH": os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]), **(extra or {})}


def recipe_cli(*args, cwd, extra=None):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, env=env(extra), check=True,
                          capture_output=True, text=True)


def peak_rss_mb(*args, cwd, extra=None) -> float:
    """The peak RSS of one `recipe` process (ru_maxrss of RUSAGE_CHILDREN is the largest of all children)."""
    p = subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=cwd, env=env(extra),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    assert p.returncode == 0, f"recipe {' '.join(args)} exited with {p.returncode}"
    return round(usage.ru_maxrss / 1024, 1)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(benchmark, fn, *args, rounds, setup=None, **kw):
    """benchmark.pedantic, plus the mean CPU seconds of the processes it ran."""
    before = children_cpu()
    result = benchmark.pedantic(fn, args=args, kwargs=kw, rounds=rounds, setup=setup)
    benchmark.extra_info["cpu_s"] = round((children_cpu() - before) / rounds, 3)
    benchmark.extra_info["load_average"] = os.getloadavg()
    return result


def wide(d: Path, n: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "data.jsonl").write_text("".join(f'{{"i": {i}}}\n' for i in range(100)))
    (d / "wide.yaml").write_text(
        "recipe: wide\nsteps:\n  - id: load\n    uses: data.from_file\n    with: {path: data.jsonl}\n"
        f"  - id: pick\n    uses: data.sample\n    foreach: ${{range({n})}}\n"
        "    with: {n: '${item % 50 + 1}', seed: '${item}'}\n"
        "    inputs: {data: '${steps.load.data}'}\n")
    return d


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A cached 100-step chain and cached 1,000- and 10,000-instance foreach recipes."""
    dirs = {"chain": tmp_path_factory.mktemp("chain"), "1k": wide(tmp_path_factory.mktemp("w1k"), 1000),
            "10k": wide(tmp_path_factory.mktemp("w10k"), 10000)}
    build_chain(dirs["chain"], 100)
    for name, d in dirs.items():
        f = "chain.yaml" if name == "chain" else "wide.yaml"
        for _ in range(2):  # cold, then a no-op after which folders are settled
            recipe_cli("run", f, "-q", cwd=d)
    return dirs


def test_help(benchmark):
    measure(benchmark, recipe_cli, "--help", cwd=ROOT, rounds=5)


def test_noop_100_step_chain(benchmark, cached):
    measure(benchmark, recipe_cli, "run", "chain.yaml", "-q", cwd=cached["chain"], rounds=7)


def test_noop_1000_instance_foreach(benchmark, cached):
    measure(benchmark, recipe_cli, "run", "wide.yaml", "-q", cwd=cached["1k"], rounds=5)


def test_noop_10000_instance_foreach(benchmark, cached):
    out = measure(benchmark, recipe_cli, "run", "wide.yaml", "-q", cwd=cached["10k"], rounds=5)
    benchmark.extra_info["quiet_lines"] = len(out.stdout.splitlines())


def test_plan_of_10000_instance_foreach(benchmark, cached):
    measure(benchmark, recipe_cli, "plan", "wide.yaml", cwd=cached["10k"], rounds=2)


def chained_vars(d: Path, n: int, reverse: bool) -> Path:
    """`n` vars, each reading the one after it (reverse) or the one before it, and a step reading the last."""
    reads = [(i, i + 1) for i in range(1, n)] if reverse else [(i, i - 1) for i in range(2, n + 1)]
    first, last = (n, 1) if reverse else (1, n)
    (d / "vars.yaml").write_text(
        "recipe: vars\nvars:\n" + "".join(f"  v{i}: ${{vars.v{j}}}\n" for i, j in reads) + f"  v{first}: 3\n"
        f"steps:\n  - id: p\n    uses: problems.arithmetic\n    with: {{count: '${{vars.v{last}}}'}}\n")
    return d


@pytest.mark.parametrize("order", ["reverse", "forward"])
def test_plan_of_500_chained_vars(benchmark, tmp_path, order):
    chained_vars(tmp_path, 500, order == "reverse")
    measure(benchmark, recipe_cli, "plan", "vars.yaml", cwd=tmp_path, rounds=5)


@pytest.mark.parametrize("reads", ["named", "computed"])
def test_plan_of_a_var_reading_many(benchmark, tmp_path, reads):
    """One var naming 10,000 others (`vars.v0, vars.v1, ...`: each hint was looked for from the first,
    1.8 s), or reading 2,000 by computed names (`vars['v' + str(i)]`: each read restarted it, 12 s)."""
    n = 10_000 if reads == "named" else 2_000
    total = "[" + ", ".join(f"vars.v{i}" for i in range(n)) + "]" if reads == "named" else \
        f"[vars['v' + str(i)] for i in range({n})]"
    (tmp_path / "vars.yaml").write_text(
        f"recipe: vars\nvars:\n  total: \"${{sum({total}) % 7 + 1}}\"\n"
        + "".join(f"  v{i}: ${{{i}}}\n" for i in range(n))
        + "steps:\n  - id: p\n    uses: problems.arithmetic\n    with: {count: '${vars.total}'}\n")
    measure(benchmark, recipe_cli, "plan", "vars.yaml", cwd=tmp_path, rounds=3)


@pytest.fixture(scope="module")
def planned_100k(tmp_path_factory):
    """A 100,000-instance foreach whose upstream step is cached; its instances never ran (a cold
    run of them takes many minutes), so the plan keys every one and says why it will run."""
    d = wide(tmp_path_factory.mktemp("w100k"), 100_000)
    recipe_cli("run", "wide.yaml", "-q", "--only", "load", cwd=d, extra=BIG)
    return d


def test_100000_instance_plan(benchmark, planned_100k):
    out = measure(benchmark, recipe_cli, "plan", "wide.yaml", cwd=planned_100k, extra=BIG, rounds=3)
    assert "1 cached, 100000 to run" in out.stdout
    benchmark.extra_info["peak_rss_mb"] = peak_rss_mb("plan", "wide.yaml", cwd=planned_100k, extra=BIG)


def cold_chain(benchmark, folder: Path, rounds: int = 5) -> None:
    """Each round in a fresh folder built beforehand; no folder is removed while rounds run (on
    this VM's disk, mounted with `discard`, deleting 10,000 files slows the next minute's I/O)."""
    folders = iter(range(rounds))

    def fresh():
        d = folder / f"round{next(folders)}"
        d.mkdir()
        build_chain(d, 1000)
        os.sync()
        return (), {"cwd": d}

    measure(benchmark, lambda cwd: recipe_cli("run", "chain.yaml", "-q", cwd=cwd), setup=fresh, rounds=rounds)
    d = folder / "round0"
    record = sorted((d / "cache" / "runs").glob("*.json"))[-1]
    benchmark.extra_info.update(engine_ms_per_step(record, d / "cache"))


def test_cold_1000_step_chain(benchmark, tmp_path):
    cold_chain(benchmark, tmp_path)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_cold_1000_step_chain_in_memory(benchmark):
    """The same with the cache in memory (tmpfs): the engine's and the step's CPU without the disk."""
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        cold_chain(benchmark, Path(d))


def test_cold_300_instance_foreach_in_processes(benchmark, tmp_path):
    """`-j 2`: each trivial step in a process forked from the forkserver."""
    folders = iter(range(3))

    def fresh():
        d = wide(tmp_path / f"round{next(folders)}", 300)
        return (), {"cwd": d}

    measure(benchmark, lambda cwd: recipe_cli("run", "wide.yaml", "-q", "-j", "2", cwd=cwd), setup=fresh, rounds=3)


def engine_ms_per_step(record_path: Path, cache: Path) -> dict:
    """Per computed step: its time in the runner minus the step's own `run` (from the entry)."""
    import json

    record = json.loads(record_path.read_text())
    total = own = 0.0
    for n in record["nodes"]:
        entry = json.loads((cache / n["key"][:2] / n["key"] / "entry.json").read_text())
        total += n["seconds"]
        own += entry["end"] - entry["start"]
    steps = len(record["nodes"])
    return {"steps": steps, "runner_ms_per_step": round(1000 * total / steps, 2),
            "step_run_ms_per_step": round(1000 * own / steps, 2),
            "engine_ms_per_step": round(1000 * (total - own) / steps, 2)}


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
    from engine.cache.digest import tree_digest

    benchmark.pedantic(tree_digest, args=(big_file.parent,), rounds=3)
    benchmark.extra_info["GB/s"] = round((1 << 30) / benchmark.stats.stats.mean / 1e9, 2)


def test_digest_1gb_warm_recheck(benchmark, big_file, tmp_path):
    from engine.cache.digest import StatCache, tree_digest

    cache = StatCache(tmp_path / "stat")
    tree_digest(big_file.parent, cache)
    benchmark(tree_digest, big_file.parent, cache)
