"""train.* with `launch: {num_processes: 2}`, executed: two processes under `accelerate launch` on
this CPU (gloo), on the tiny test model. They train the same global batch as one process with
twice the per-device batch, save one model, report the global batch, and their output lands in
the step's log.txt while their progress reaches the engine's bar. Plus the subprocess capture
these rest on (`ctx.run_process`) and what of `launch` is in the key.

Tolerance of the loss curves (SFT, DPO): 2 processes × b and 1 process × 2b see the same rows
at every step (accelerate hands each process its slice of the seeded sampler's global batch)
and average the same loss (transformers weighs tokens across processes), so the curves differ
only by float32 rounding in a different summation order (measured: ~1e-7 relative). The test
allows 1e-4 relative: far above rounding on any CPU, far below what other rows make (SFT's
first loss on 2 of these rows instead of 4: 7e-3 relative). GRPO has no such curve: trl seeds
each process apart, so the completions are another draw; its invariants (every completion
scored, the schedule followed) are checked instead.
"""
from __future__ import annotations

import json
import sys

import pytest
from _tiny import dataset, make_tiny_model, preference_rows, problem_rows
from conftest import ROOT, write

from engine.cache.keys import config_for_key
from engine.cache.secrets import Redactor
from engine.recipe.artifact_types import Model
from engine.recipe.errors import StepError
from engine.recipe.step import Step
from engine.run.step_process import execute
from engine.run.testing import run_step
from steps.train.trl_common import LaunchSettings, launch_command
from steps.train.trl_sft import SFTSettings

TWO = {"launch": {"num_processes": 2}}
CHILD_LINES = ("{'loss'", "Writing model shards", "Loading weights", "accelerate launch", "FutureWarning")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def losses(out) -> list[float]:
    return [h["loss"] for h in out["report"].metrics()["log_history"] if "loss" in h]


def notes(out) -> list[str]:
    return json.loads((out["model"].path.parents[1] / "notes.json").read_text())


# ---------------------------------------------------------------------------- a step's subprocess, captured

CHILD = """
import sys, time, warnings
from engine.run.context import FileProgress
print("child says hello"); print("child complains", file=sys.stderr); warnings.warn("child warns")
print("token sk-child-secret-0042 in a URL", flush=True)
with FileProgress(sys.argv[1]).progress(3, "child work") as bar:
    for _ in range(3):
        time.sleep(0.2)
        bar.update(1)
    bar.desc = "child work, loss 0.5"
    bar.update(0)
sys.exit(3)
"""


class Launcher(Step):
    name = "test.launcher"

    def run(self, ctx):
        ctx.secret("MR_TEST_CHILD_TOKEN")
        ctx.log.info("exit status %d", ctx.run_process([sys.executable, "-c", CHILD, str(ctx.scratch / "p.json")],
                                                       progress=ctx.scratch / "p.json", cwd=str(ROOT)))


def test_run_process_sends_output_to_the_log_and_progress_to_the_bar(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("MR_TEST_CHILD_TOKEN", "sk-child-secret-0042")
    bars = []
    execute(Launcher, Launcher.Config(), {}, tmp_path / "out", tmp_path / "scratch", key="0" * 64, label="launcher",
            log_path=tmp_path / "log.txt", redactor=Redactor(),
            on_progress=lambda bar: bars.append((bar.desc, bar.done, bar.total)))
    terminal = capfd.readouterr()
    assert "child" not in terminal.out + terminal.err  # not even through the inherited file descriptors
    log = (tmp_path / "log.txt").read_text()
    for line in ("child says hello", "child complains", "UserWarning: child warns", "exit status 3",
                 "token *** in a URL"):
        assert line in log
    assert "child-secret" not in log
    assert bars[-1] == ("child work, loss 0.5", 3, 3)
    assert [done for _, done, _ in bars] == sorted(done for _, done, _ in bars)  # the bar only moves forward


# ---------------------------------------------------------------------------- the key

def test_how_processes_start_is_out_of_the_key_how_many_is_in_it():
    def key(**launch):
        return config_for_key(SFTSettings(per_device_train_batch_size=4, launch=launch or None))

    two = key(num_processes=2)
    assert two["launch"] == {"num_processes": 2}
    assert key(num_processes=2, extra=["--cpu"]) == two
    assert key(num_processes=2, config_file="fsdp.yaml",
               extra=["--num_machines", "2", "--machine_rank", "0", "--main_process_ip", "10.0.0.1"]) == two
    assert key(num_processes=4) != two
    assert key(num_processes=1, config_file="fsdp.yaml") == key()  # one process runs in the step's own
    with pytest.raises(ValueError, match="set launch.num_processes instead of --num_processes"):
        LaunchSettings(num_processes=2, extra=["--num_processes=4"])
    with pytest.raises(ValueError, match="set precision instead of --mixed-precision"):
        LaunchSettings(num_processes=2, extra=["--mixed-precision", "bf16"])


def test_cpu_launch_starts_every_process_under_torchrun_not_accelerates_single_cpu_process():
    cmd = launch_command("job.json", LaunchSettings(num_processes=2, extra=["--cpu", "--num_machines", "1"]),
                         cpu=True, port=29999)
    assert cmd[1:] == ["-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
                       "--main_process_port", "29999", "--num_machines", "1", "-m", "steps.train.trl_common",
                       "job.json"]


# ---------------------------------------------------------------------------- two processes, executed

@pytest.mark.parametrize("uses, rows, lr", [("train.sft", problem_rows, 1e-3), ("train.dpo", preference_rows, 1e-3)])
def test_two_processes_follow_the_one_process_curve_of_the_same_global_batch(tiny, tmp_path, uses, rows, lr):
    from transformers.utils import logging as hf_logging

    # the one-process run trains in this process, where an earlier test's transformers backend
    # turned progress bars off; the launched processes start with them on
    hf_logging.enable_progress_bar()
    data = dataset(tmp_path, "d", rows(16))
    cfg = {"max_steps": 3, "learning_rate": lr, "max_length": 64}
    one = run_step(uses, {**cfg, "per_device_train_batch_size": 4}, {"data": data, "model": Model(tiny)},
                   workdir=tmp_path / "one")
    two = run_step(uses, {**cfg, "per_device_train_batch_size": 2, **TWO}, {"data": data, "model": Model(tiny)},
                   workdir=tmp_path / "two")
    m1, m2 = one["report"].metrics(), two["report"].metrics()
    assert (m1["num_processes"], m1["global_batch"], m2["num_processes"], m2["global_batch"]) == (1, 4, 2, 4)
    assert notes(two) == ["global batch 4 = 2 per device × 2 processes × 1 accumulation"]
    assert m2["global_step"] == 3 and len(losses(two)) == 3
    assert losses(two) == pytest.approx(losses(one), rel=1e-4)
    # one model, written once, by rank 0: the same files as one process writes, and it loads
    files = sorted(p.name for p in two["model"].path.iterdir())
    assert files == sorted(p.name for p in one["model"].path.iterdir())
    writes = [(w / "step.log").read_text().count("Writing model shards: 100%") for w in (tmp_path / "one",
                                                                                       tmp_path / "two")]
    assert writes[0] == writes[1] > 0
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(two["model"].path)


def test_grpo_in_two_processes_scores_every_completion_of_the_global_batch(tiny, tmp_path):
    data = dataset(tmp_path, "d", problem_rows(8))
    # 2 completions per process and step, 4 per prompt: only a 2-process global batch divides
    cfg = {"max_steps": 3, "learning_rate": 1e-5, "per_device_train_batch_size": 2,
           "gradient_accumulation_steps": 1, "num_generations": 4, "max_completion_length": 8,
           "initial_temperature": 1.0, "final_temperature": 0.2, **TWO}
    out = run_step("train.grpo", cfg, {"data": data, "model": Model(tiny)}, workdir=tmp_path / "w")
    m = out["report"].metrics()
    assert (m["global_step"], m["num_processes"], m["global_batch"]) == (3, 2, 4)
    assert sum(m["outcome_counts"].values()) == 3 * 4  # both processes' completions
    assert [round(p["temperature"], 3) for p in m["reward_per_step"]] == [1.0, 0.6, 0.2]
    assert notes(out) == ["global batch 4 = 2 per device × 2 processes × 1 accumulation"]
    assert (out["model"].path / "model.safetensors").exists() and (out["model"].path / "tokenizer.json").exists()


def test_a_process_that_fails_is_one_clear_step_error(tiny, tmp_path):
    import shutil

    broken = shutil.copytree(tiny, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not weights")
    data = dataset(tmp_path, "d", problem_rows(4))
    with pytest.raises(StepError, match=r"^train.sft: model .*broken: cannot load it"):
        run_step("train.sft", {"max_steps": 1, **TWO}, {"data": data, "model": Model(broken)},
                 workdir=tmp_path / "w")


RECIPE = """\
recipe: launch
steps:
  - id: problems
    uses: problems.arithmetic
    with: {count: 16, min_value: 0, max_value: 9, operators: ["+"], seed: 0}
  - id: sft
    uses: train.sft
    with: {model: MODEL, max_steps: 3, per_device_train_batch_size: 2, max_length: 64,
           launch: {num_processes: 2}}
    inputs: {data: "${steps.problems.problems}"}
"""


def test_recipe_run_shows_the_processes_progress_and_logs_their_output(cli, tiny):
    p = cli("run", str(write(cli.tmp / "r.yaml", RECIPE.replace("MODEL", str(tiny)))))
    terminal = p.stdout + p.stderr
    assert not [line for line in CHILD_LINES if line in terminal]
    assert "global batch 4 = 2 per device × 2 processes × 1 accumulation" in p.stdout  # the summary row
    # rank 0's progress, read by the engine: the step's bar reached 3/3 with the latest loss
    assert "sft training, loss " in p.stdout and ": 3/3" in p.stdout
    node = next(n for n in cli.last_run()["nodes"] if n["label"] == "sft")
    entry = cli.cache / node["key"][:2] / node["key"]
    log = (entry / "log.txt").read_text()
    assert not [line for line in CHILD_LINES if line not in log]
    assert log.count("{'loss'") == 3  # rank 0's trainer logs each step once
    assert "global batch 4" in (entry / "notes.json").read_text()
    # how the processes start is not in the key: saying --cpu and a port reuses the entry
    launch = '{"num_processes": 2, "extra": ["--cpu", "--main_process_port", "29517"]}'
    cli("run", str(cli.tmp / "r.yaml"), "--set", f"steps.sft.with.launch={launch}")
    assert cli.statuses() == {"problems": "cached", "sft": "cached"}
