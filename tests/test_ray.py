"""The ray executor on a real local Ray cluster: same keys and digests as local, shards as
Ray tasks that survive a killed worker, a killed driver and two drivers on one cache, and a
step that asks for GPUs the cluster lacks fails before anything runs."""
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from conftest import write

pytestmark = pytest.mark.ray

RECIPE = """recipe: rays
steps:
  - {id: squares, uses: raytest.squares, with: {n: N, shard_size: 2, delay: DELAY, trace: TRACE}}
  - {id: scaled, uses: raytest.scaled, with: {n: 12, shard_size: 3, trace: TRACE}}
  - {id: unpicklable, uses: raytest.squares, with: {n: 4, shard_size: 2, trace: TRACE, hold_lock: true}}
  - {id: copy, uses: raytest.copy, with: {trace: TRACE}, inputs: {data: "${steps.squares.data}"}}
"""


@pytest.fixture
def rcli(cli):
    cli.env["RECIPE_STEP_MODULES"] = "engine_test_steps,ray_test_steps"
    return cli


def recipe(cli, n=12, delay=0.0, replicas=False) -> str:
    text = RECIPE.replace("N,", f"{n},").replace("DELAY", str(delay)).replace("TRACE", str(cli.trace))
    if not replicas:
        text = "\n".join(line for line in text.splitlines() if "scaled" not in line and "hold_lock" not in line) + "\n"
    return str(write(cli.tmp / "rays.yaml", text))


def lines(cli, word: str) -> list[list[str]]:
    """Trace lines `pid node WORD arg` with this word."""
    return [line.split() for line in cli.trace_lines() if line.split()[2:3] == [word]]


def outputs(cli, cache=None) -> dict:
    return {n["label"]: (n["key"], n["outputs"]) for n in cli.last_run(cache)["nodes"]}


def wait_for(predicate, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_ray_gives_the_same_keys_and_digests_as_local(rcli, ray_address, tmp_path):
    """Also: replicas load their model once; a shard function that cannot be pickled runs its
    shards inside the step's own task."""
    f = recipe(rcli, replicas=True)
    rcli("run", f, "--executor", f"ray={ray_address}")
    assert set(rcli.statuses().values()) == {"ran"}
    on_ray = outputs(rcli)
    assert {p for p, _, *_ in lines(rcli, "start")} - {str(os.getpid())}, "shards ran in worker processes"
    loads = lines(rcli, "load")
    assert len(loads) == len({p for p, *_ in loads}), "a replica loaded its model more than once"
    rcli.trace.write_text("")
    rcli("run", f, cache=tmp_path / "local")
    assert outputs(rcli, tmp_path / "local") == on_ray
    assert len(lines(rcli, "load")) == 1


def test_a_shard_function_holding_a_secret_is_not_shipped_to_ray(ray_address, tmp_path, monkeypatch, caplog):
    """Ray would copy it into its object store and onto every worker: its shards run in the
    step's own task instead (here, this process), and the log says why without the secret."""
    from engine.cache.secrets import read_secret
    from engine.run.executors.ray import RayShards
    from engine.run.shards import Shard

    def runs_on(fn, name: str) -> set[int]:  # this process is a driver of the session's cluster (ray_address)
        done = []
        RayShards().run([Shard(i, [i], tmp_path / f"{name}-{i}.jsonl") for i in range(4)], fn,
                        lambda shard, rows: done.extend(r["pid"] for r in rows))
        return set(done)

    assert runs_on(lambda items: [{"pid": os.getpid()}], "plain") - {os.getpid()}, "a plain function is shipped"
    monkeypatch.setenv("RAYTEST_TOKEN", "s3cr3t-value-for-ray")
    secret = read_secret("RAYTEST_TOKEN")
    assert runs_on(lambda items: [{"pid": os.getpid(), "n": len(secret)}], "secret") == {os.getpid()}
    assert "shards run inside the step's task: the shard function holds a secret this process knows" in caplog.text
    assert "s3cr3t" not in caplog.text


def test_a_setup_too_big_to_ship_is_not_told_to_pass_setup(monkeypatch):
    """The advice to pass setup= is for a shard function holding a model, not for the setup itself."""
    from engine.run.executors import ray as ray_executor

    monkeypatch.setattr(ray_executor, "MAX_SHIPPED", 1 << 20)
    weights = b"w" * (3 << 20)
    assert ray_executor._shipped(lambda: weights, "the replicas' setup")[1] == "the replicas' setup holds 3 MB"
    assert ray_executor._shipped(lambda: weights, "the shard function")[1] == (
        "the shard function holds 3 MB; pass setup= to ctx.map_shards to load it on replicas")


def test_a_step_error_in_a_shard_fails_at_once_without_retry(rcli, ray_address):
    f = recipe(rcli)
    write(rcli.tmp / "rays.yaml", open(f).read().replace("trace:", "fail_at: 4, trace:", 1))
    p = rcli("run", f, "--executor", f"ray={ray_address}", check=1)
    assert "squares: item 4 is bad" in p.stdout and "Traceback" not in p.stdout + p.stderr
    assert [x[3] for x in lines(rcli, "start")].count("4") == 1
    assert not list(rcli.cache.rglob("entry.json")) or rcli.statuses()["squares"] == "failed"
    assert rcli.statuses()["copy"] == "blocked"


def test_a_worker_killed_mid_shard_reruns_exactly_that_shard(rcli, ray_address, tmp_path):
    f = recipe(rcli, n=12, delay=1.5)
    proc = rcli.popen("run", f, "--executor", f"ray={ray_address}")

    def running():  # shards started and not done
        done = {x[3] for x in lines(rcli, "done")}
        return [x for x in lines(rcli, "start") if x[3] not in done]

    wait_for(running)
    pid, _, _, victim = running()[0]
    os.kill(int(pid), signal.SIGKILL)
    assert proc.wait(timeout=300) == 0, proc.communicate()
    starts = [x[3] for x in lines(rcli, "start")]
    assert starts.count(victim) == 2 and all(starts.count(s) == 1 for s in set(starts) - {victim})
    rcli("run", f, cache=tmp_path / "clean")
    assert outputs(rcli, tmp_path / "clean") == outputs(rcli)


def test_a_killed_driver_reruns_only_the_unfinished_shards(rcli, ray_address, tmp_path):
    f = recipe(rcli, n=16, delay=1.0)
    proc = rcli.popen("run", f, "--executor", f"ray={ray_address}")
    wait_for(lambda: len(lines(rcli, "done")) >= 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {x[3] for x in lines(rcli, "done")}
    time.sleep(2)  # let Ray notice the dead driver and stop its tasks
    rcli.trace.write_text("")
    rcli("run", f, "--executor", f"ray={ray_address}")
    rerun = {x[3] for x in lines(rcli, "start")}
    assert rerun and not rerun & done_before and len(rerun) < 8
    rcli("run", f, cache=tmp_path / "clean")
    assert outputs(rcli, tmp_path / "clean") == outputs(rcli)


def test_two_drivers_on_one_cache_compute_each_key_once(rcli, ray_address):
    f = recipe(rcli, n=8, delay=0.3)
    a = rcli.popen("run", f, "--executor", f"ray={ray_address}")
    b = rcli.popen("run", f, "--executor", f"ray={ray_address}")
    assert a.wait(timeout=300) == 0 and b.wait(timeout=300) == 0
    assert len(lines(rcli, "step")) == 1
    assert len(lines(rcli, "copy")) == 1


def test_a_step_asking_for_a_gpu_the_cluster_lacks_fails_at_submission(rcli, ray_address):
    f = write(rcli.tmp / "gpu.yaml", """recipe: gpu
steps:
  - id: train
    uses: test.squares
    resources: {gpus: 1}
""")
    p = rcli("run", str(f), "--executor", f"ray={ray_address}", check=2, timeout=120)
    assert f"error: {f}:4:5: step train asks for cpus: 1, gpus: 1, but the ray executor has 0 GPU(s)" in p.stderr
    assert not rcli.trace_lines()


@pytest.fixture
def two_nodes():
    """A simulated two-node cluster: a head with no CPUs and two nodes with 1 CPU each."""
    Cluster = pytest.importorskip("ray.cluster_utils").Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        yield cluster, nodes
    finally:
        cluster.shutdown()


def test_shards_of_a_removed_node_complete_on_the_other_node(rcli, two_nodes, tmp_path):
    cluster, nodes = two_nodes
    f = recipe(rcli, n=12, delay=1.5)
    proc = rcli.popen("run", f, "--executor", f"ray={cluster.address}")
    wait_for(lambda: lines(rcli, "step"))
    step_node = lines(rcli, "step")[0][1]
    wait_for(lambda: any(x[1] != step_node for x in lines(rcli, "start")))
    victim = next(n for n in nodes if n.node_id != step_node)
    cluster.remove_node(victim, allow_graceful=False)
    lost = {x[3] for x in lines(rcli, "start") if x[1] == victim.node_id} - {x[3] for x in lines(rcli, "done")}
    assert lost, "no shard was running on the removed node"
    assert proc.wait(timeout=300) == 0, proc.communicate()
    assert lost <= {x[3] for x in lines(rcli, "done") if x[1] == step_node}
    rcli("run", f, cache=tmp_path / "clean")
    assert outputs(rcli, tmp_path / "clean") == outputs(rcli)


def _in_process_loads_once_with_the_same_rows(rcli, f, tmp_path):
    """The recipe just run on Ray, again in process: one load of the model, the Ray run's rows."""
    on_ray = outputs(rcli)
    rcli.trace.write_text("")
    rcli("run", f, cache=tmp_path / "local")
    assert len(lines(rcli, "load")) == 1
    assert outputs(rcli, tmp_path / "local") == on_ray


GENERATE = """recipe: gen
steps:
  - {id: problems, uses: problems.arithmetic, with: {count: 12, seed: 1}}
  - id: responses
    uses: generate.responses
    with: {model: tiny/traced, backend: {kind: traced, shard_size: 2}}
    resources: {cpus: 2}
    inputs: {problems: "${steps.problems.problems}"}
"""


def test_generation_runs_on_model_replicas_each_loading_the_model_once(rcli, ray_address, tmp_path):
    """generate.responses hands map_shards a backend spec: on Ray, `resources: {cpus: 2}` gives
    two replica actors that each load the model once; in process it loads once. Same rows."""
    rcli.env["RECIPE_TEST_TRACE"] = str(rcli.trace)
    f = write(rcli.tmp / "gen.yaml", GENERATE)
    p = rcli("run", f, "--executor", f"ray={ray_address}")
    assert "responses responses: 12/12" in p.stdout  # progress of the step's Ray task reached the driver
    assert not list(rcli.cache.rglob("progress.json")), "the progress file is not part of an entry"
    loads = lines(rcli, "load")
    assert len(loads) == 2 and len({p for p, *_ in loads}) == 2, loads
    assert str(os.getpid()) not in {p for p, *_ in loads}
    _in_process_loads_once_with_the_same_rows(rcli, f, tmp_path)


def test_rounds_of_map_shards_with_one_setup_reuse_their_replicas(rcli, ray_address, tmp_path):
    """magpie calls map_shards once per round with the same backend spec: on Ray its replicas
    load the model once each for all rounds, as the step's own process does."""
    rcli.env["RECIPE_TEST_TRACE"] = str(rcli.trace)
    f = write(rcli.tmp / "rounds.yaml", "recipe: rounds\nsteps:\n"
              "  - {id: gen, uses: raytest.rounds, with: {rounds: 3}, resources: {cpus: 2}}\n")
    rcli("run", f, "--executor", f"ray={ray_address}")
    loads = lines(rcli, "load")
    assert len(loads) == 2 and len({p for p, *_ in loads}) == 2, loads  # 2 replicas, not 2 per round
    _in_process_loads_once_with_the_same_rows(rcli, f, tmp_path)


SHARED = """recipe: shared
steps:
  - {id: problems, uses: problems.arithmetic, with: {count: 8, seed: 1}}
  - id: greedy
    uses: generate.responses
    with: {model: tiny/a, backend: {kind: traced, shard_size: 2}}
    inputs: {problems: "${steps.problems.problems}"}
  - id: sampled
    uses: generate.candidates
    with: {model: tiny/a, n: 2, backend: {kind: traced, shard_size: 4}}
    inputs: {problems: "${steps.problems.problems}"}
    needs: [greedy]
  - id: shorter
    uses: generate.responses
    with: {model: tiny/a, max_new_tokens: 8, backend: {kind: traced, shard_size: 3}}
    inputs: {problems: "${steps.problems.problems}"}
    needs: [sampled]
  - id: other
    uses: generate.responses
    with: {model: tiny/b, backend: {kind: traced, shard_size: 2}}
    inputs: {problems: "${steps.problems.problems}"}
    needs: [shorter]
"""


def test_steps_using_one_model_share_its_replica_for_the_run(rcli, ray_address, tmp_path):
    """Three steps on model a (shard sizes differ, which loads nothing different) load it once
    on Ray, as distilabel keeps its LLM actors; a's replica is gone before model b loads,
    although b's one replica would fit beside it: no step still to run uses a. Each replica
    closes its backend before it goes. Same rows as local."""
    rcli.env["RECIPE_TEST_TRACE"] = str(rcli.trace)
    f = write(rcli.tmp / "shared.yaml", SHARED)
    rcli("run", f, "--executor", f"ray={ray_address}")
    loads = [x[3:] for x in lines(rcli, "load")]
    assert sorted(m for m, _ in loads) == ["tiny/a", "tiny/b"], loads
    assert dict(loads)["tiny/b"] == "-", "model a's replica was still alive when model b loaded"
    # each replica closed its backend before it went (a vLLM engine's processes end with it)
    assert sorted(x[:1] + x[3:] for x in lines(rcli, "close")) == sorted(x[:1] + x[3:4] for x in lines(rcli, "load"))
    on_ray = outputs(rcli)
    rcli("run", f, cache=tmp_path / "local")
    assert outputs(rcli, tmp_path / "local") == on_ray


def test_executor_ray_without_an_address_starts_a_cluster_of_its_own(rcli, ray_address):
    """`--executor ray` (no address, no RAY_ADDRESS) starts Ray for the run even where this
    machine has a cluster that a bare `ray.init()` would join (its address in Ray's temp dir,
    as `ray start` leaves it); the workers of its own cluster import the step modules through
    the environment they inherit, and none of its processes outlives the run."""
    import ray

    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    try:
        write(temp / "ray" / "ray_current_cluster", ray_address)
        rcli.env.pop("RAY_ADDRESS", None)
        rcli.env["RAY_TMPDIR"] = str(temp)
        rcli("run", recipe(rcli), "--executor", "ray")
        assert set(rcli.statuses().values()) == {"ran"}
        nodes = {node for _, node, *_ in lines(rcli, "start")}
        assert nodes and ray.get_runtime_context().get_node_id() not in nodes, nodes

        def left() -> list[int]:
            return [q.pid for q in psutil.process_iter(["cmdline"]) if str(temp) in " ".join(q.info["cmdline"] or [])]
        wait_for(lambda: not left(), timeout=15)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
