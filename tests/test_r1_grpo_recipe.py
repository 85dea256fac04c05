"""recipes/r1_grpo.yaml (DeepSeek-R1-style training): the full-scale plan carries the GRPO
parameters, and the tiny profile runs end to end on the project's tiny arithmetic model: SFT ->
GRPO (reward per step, temperature schedule) -> greedy evaluation of both stages, then a rerun
that is fully cached."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from _tiny import run_tiny_profile
from conftest import ROOT, RecipeCLI

from engine.recipe.plan import plan_file

RECIPE = ROOT / "recipes" / "r1_grpo.yaml"


def nodes(plan):
    return {n.label: n for n in plan.nodes}


def test_full_scale_plan_has_the_seed_grpo_parameters():
    plan = nodes(plan_file(RECIPE))
    assert list(plan) == ["problems", "test_problems", "sft", "grpo", "eval_sft", "eval_grpo", "compare"]
    g = plan["grpo"].config
    assert (g.num_generations, g.learning_rate, g.per_device_train_batch_size, g.gradient_accumulation_steps,
            g.warmup_steps, g.logging_steps, g.save_steps) == (8, 1e-6, 1, 8, 100, 10, 500)
    assert (g.initial_temperature, g.final_temperature) == (1.0, 0.1)
    assert (g.reward_bad_format, g.reward_wrong, g.reward_correct) == (0, 1, 10)
    assert plan["sft"].config.model == "Qwen/Qwen2.5-1.5B-Instruct"
    assert plan["grpo"].inputs["model"].label == "sft"


def test_tiny_plan_starts_from_the_tiny_pretrained_model():
    plan = nodes(plan_file(RECIPE, profile="tiny"))
    assert plan["sft"].inputs["model"].label == "arithmetic_llm[tiny]/pretrain"
    assert plan["grpo"].config.per_device_train_batch_size % plan["grpo"].config.num_generations == 0


# ---------------------------------------------------------------------------- the tiny profile, end to end

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return run_tiny_profile(tmp_path_factory, RECIPE, "r1_grpo")


def out(cli: RecipeCLI, step: str, name: str) -> Path:
    return cli.artifacts / "r1_grpo" / step / name


def metrics(cli: RecipeCLI, step: str) -> dict:
    return json.loads((out(cli, step, "report") / "metrics.json").read_text())


def test_tiny_run_reuses_the_tiny_model_and_runs_every_own_step(tiny):
    st = tiny.first_statuses
    assert st["arithmetic_llm[tiny]/pretrain"] == "cached"  # built once for the session, not per recipe
    assert all(st[s] == "ran" for s in ("problems", "test_problems", "sft", "grpo", "eval_sft", "eval_grpo", "compare"))


def test_sft_and_grpo_models_load_with_their_tokenizer(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for step in ("sft", "grpo"):
        path = out(tiny, step, "model")
        model = AutoModelForCausalLM.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        assert model.config.use_cache is True
        assert "<answer>" in tok.get_vocab() and tok.chat_template
    sft = metrics(tiny, "sft")
    assert sft["global_step"] == 60
    losses = [h["loss"] for h in sft["log_history"] if "loss" in h]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert (out(tiny, "sft", "report") / "loss.png").stat().st_size > 0


def test_grpo_report_logs_reward_per_step_under_the_temperature_schedule_and_the_reward_rises(tiny):
    m = metrics(tiny, "grpo")
    per_step = m["reward_per_step"]
    assert [p["step"] for p in per_step] == list(range(1, 61))
    assert all(p["reward_mean"] is not None and p["reward_std"] is not None for p in per_step)
    assert per_step[0]["temperature"] == pytest.approx(1.0) and per_step[-1]["temperature"] == pytest.approx(0.1)
    temps = [p["temperature"] for p in per_step]
    assert temps == sorted(temps, reverse=True)
    assert m["reward_last_quarter"] > m["reward_first_quarter"]
    assert sum(m["outcome_counts"].values()) == 60 * 64  # every completion scored: 8 prompts x 8 per step
    assert m["outcome_counts"]["correct"] > 0 and m["outcome_counts"]["wrong"] > 0  # groups disagree: GRPO has signal
    assert m["temperature_patched_logprobs"] is True
    outcomes = [json.loads(x) for x in (out(tiny, "grpo", "report") / "outcomes.jsonl").read_text().splitlines()]
    assert len(outcomes) == 60
    assert (out(tiny, "grpo", "report") / "reward.png").stat().st_size > 0


def test_both_stages_are_evaluated_greedily_on_unseen_problems(tiny):
    train = {json.loads(x)["problem"]
             for x in (out(tiny, "problems", "problems") / "data.jsonl").read_text().splitlines()}
    for step in ("eval_sft", "eval_grpo"):
        preds = [json.loads(x) for x in (out(tiny, step, "predictions") / "data.jsonl").read_text().splitlines()]
        assert len(preds) == 200 and not {p["problem"] for p in preds} & train
        assert metrics(tiny, step)["n"] == 200
    acc = metrics(tiny, "compare")["accuracy"]
    assert set(acc) == {"sft", "grpo"}
    assert acc["sft"] == metrics(tiny, "eval_sft")["accuracy"] and 0 < acc["sft"] < 1
    table = metrics(tiny, "compare")
    assert table["header"] == ["domain", "sft", "grpo", "change (sft -> grpo)"]
    assert table["rows"][-1][:3] == ["overall", f"{acc['sft']:.1%}", f"{acc['grpo']:.1%}"]


def test_rerun_is_fully_cached(tiny):
    tiny("run", str(RECIPE), "--profile", "tiny", "-q")
    assert set(tiny.statuses().values()) == {"cached"}
