"""The scheduler: a step starts as soon as its inputs exist and its `resources` fit in the
budget (`-j N` CPUs on the local executor); resources are never part of a key; a step that
asks for GPUs the executor does not have fails before anything runs."""
import json

from conftest import write


def entries(cli, cache=None) -> dict[str, dict]:
    """label -> entry.json of the last run's computed steps."""
    root = cache or cli.cache
    out = {}
    for n in cli.last_run(root)["nodes"]:
        if n["key"]:
            out[n["label"]] = json.loads((root / n["key"][:2] / n["key"] / "entry.json").read_text())
    return out


def test_a_step_starts_when_its_inputs_are_ready_not_when_a_wave_ends(cli):
    f = write(cli.tmp / "dag.yaml", """recipe: dag
steps:
  - {id: slow, uses: test.squares, with: {n: 2, shard_size: 2, delay: 2.0}}
  - {id: fast, uses: test.squares, with: {n: 3, shard_size: 3}}
  - {id: after_fast, uses: test.count, with: {tag: after}, inputs: {data: "${steps.fast.data}"}}
""")
    cli("run", str(f), "-j", "2")
    e = entries(cli)
    assert e["after_fast"]["end"] < e["slow"]["end"], "after_fast waited for the unrelated slow step"


def test_the_cpu_budget_bounds_what_runs_at_once(cli):
    f = write(cli.tmp / "budget.yaml", """recipe: budget
steps:
  - {id: a, uses: test.squares, with: {n: 2, shard_size: 2, delay: 0.5}, resources: {cpus: 2}}
  - {id: b, uses: test.squares, with: {n: 3, shard_size: 3, delay: 0.5}, resources: {cpus: 2}}
  - {id: c, uses: test.squares, with: {n: 4, shard_size: 4, delay: 0.5}}
""")
    cli("run", str(f), "-j", "2")
    e = entries(cli)
    spans = sorted((e[x]["start"], e[x]["end"], x) for x in "abc")
    for (_, end, x), (start, _, y) in zip(spans, spans[1:]):
        assert end <= start, f"{x} and {y} overlapped on a 2-CPU budget although a and b each take 2 CPUs"


def test_a_step_larger_than_the_budget_runs_alone_rather_than_never(cli):
    f = write(cli.tmp / "big.yaml", """recipe: big
steps:
  - {id: a, uses: test.squares, with: {n: 2}, resources: {cpus: 8}}
""")
    cli("run", str(f), "-j", "2")
    assert cli.statuses() == {"a": "ran"}


def test_resources_are_not_part_of_the_key(cli):
    text = """recipe: res
steps:
  - {id: a, uses: test.squares, with: {n: 4}RES}
"""
    cli("run", str(write(cli.tmp / "r.yaml", text.replace("RES", ""))))
    key = cli.last_run()["nodes"][0]["key"]
    cli("run", str(write(cli.tmp / "r.yaml", text.replace("RES", ", resources: {cpus: 2}"))), "-j", "2")
    assert cli.statuses() == {"a": "cached"} and cli.last_run()["nodes"][0]["key"] == key
    record = cli.last_run()  # the record keeps what the step was scheduled with, and where
    assert record["nodes"][0]["resources"] == {"cpus": 2.0, "gpus": 0.0} and record["executor"] == "local"
    cli("run", str(cli.tmp / "r.yaml"), "--set", "steps.a.resources.cpus=1")
    assert cli.statuses() == {"a": "cached"}


def test_a_step_asking_for_a_gpu_on_a_machine_without_one_fails_before_running(cli):
    cli.env["CUDA_VISIBLE_DEVICES"] = ""
    f = write(cli.tmp / "gpu.yaml", """recipe: gpu
steps:
  - {id: first, uses: test.squares, with: {n: 2}}
  - id: train
    uses: test.squares
    with: {n: 3}
    resources: {gpus: 1}
""")
    for cmd in ("run", "plan"):
        p = cli(cmd, str(f), check=2)
        assert p.stderr.startswith(f"error: {f}:5:"), p.stderr
        assert "step train asks for cpus: 1, gpus: 1, but the local executor has 0 GPU(s)" in p.stderr
        assert "Traceback" not in p.stderr
    assert not list(cli.cache.rglob("entry.json")) and not cli.trace_lines()


def test_bad_resources_and_executor_are_recipe_errors(cli):
    f = write(cli.tmp / "bad.yaml", """recipe: bad
steps:
  - id: a
    uses: test.squares
    resources: {gpu: 1}
""")
    p = cli("run", str(f), check=2)
    assert p.stderr.strip() == f"error: {f}:5:5: unknown resource 'gpu'; expected cpus or gpus"
    f.write_text(f.read_text().replace("{gpu: 1}", "{cpus: -1}"))
    assert "resources.cpus must be a number >= 0, found -1" in cli("run", str(f), check=2).stderr
    f.write_text("executor: slurm\n" + f.read_text().replace("    resources: {cpus: -1}\n", ""))
    p = cli("run", str(f), check=2)
    assert p.stderr.strip() == f"error: {f}:1:1: unknown executor 'slurm'; expected local, ray or ray=ADDRESS"
    p = cli("run", str(f), "--executor", "local")
    assert cli.statuses() == {"a": "ran"}
