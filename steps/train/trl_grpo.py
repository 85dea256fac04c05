"""train.grpo: GRPO with trl's GRPOTrainer, the R1 reward (bad format / wrong / right) on a
reference answer column, and a temperature schedule (steps/train/temperature.py).

    - id: grpo
      uses: train.grpo
      with: {num_generations: 8, max_completion_length: 256, initial_temperature: 1.0, final_temperature: 0.1}
      inputs: {data: "${steps.problems.problems}", model: "${steps.sft.model}"}
"""
from __future__ import annotations

import json
from typing import Any, Literal

from engine.recipe.errors import StepError
from engine.recipe.step import register
from steps.common.chat import prompt
from steps.train.temperature import TemperatureSchedule
from steps.train.trl_common import (
    Job,
    TrainConfig,
    TrainStep,
    fit_and_save,
    hf_dataset,
    load_causal_lm,
    open_job,
    peft_config,
    plot_curves,
    prompt_column,
    read_rows,
    text_of,
)

OUTCOMES = ("bad_format", "wrong", "correct")


class GRPOSettings(TrainConfig):
    learning_rate: float = 1e-6
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    num_generations: int = 8
    max_completion_length: int = 256
    beta: float = 0.0
    initial_temperature: float = 1.0
    final_temperature: float = 0.1
    temperature_schedule: Literal["linear", "cosine", "constant"] = "linear"
    top_p: float = 1.0
    reward_bad_format: float = 0.0
    reward_wrong: float = 1.0
    reward_correct: float = 10.0
    answer_column: str = "answer"
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"


def grpo_rows(step: str, data, cfg: GRPOSettings, chat: bool) -> list[dict[str, Any]]:
    rows = read_rows(step, data)
    p = prompt_column(step, data, rows, cfg.prompt_column)
    if cfg.answer_column not in rows[0]:
        raise StepError(f"{step}: {data.path}: column {cfg.answer_column!r} (reference answer) not found; "
                        f"columns are {list(rows[0])}")
    bad = next((i for i, r in enumerate(rows) if r.get(cfg.answer_column) in (None, "")), None)
    if bad is not None:
        raise StepError(f"{step}: {data.path}: row {bad}: no {cfg.answer_column!r} (reference answer) "
                        "to reward against")
    return [{"prompt": prompt(text_of(step, data, i, r, p), cfg.system_prompt, chat, plain_system=True),
             "answer": str(r[cfg.answer_column])} for i, r in enumerate(rows)]


def check_generation_batch(step: str, cfg: GRPOSettings) -> None:
    """trl samples num_generations completions per prompt across the whole global batch."""
    batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * cfg.processes()
    if batch % cfg.num_generations:
        raise StepError(f"{step}: per_device_train_batch_size × gradient_accumulation_steps × launch.num_processes "
                        f"= {batch} must be a multiple of num_generations = {cfg.num_generations}")


def grpo_args(run: Job):
    from trl import GRPOConfig

    cfg = run.cfg
    check_generation_batch(run.step, cfg)
    extra = {"use_vllm": True, "vllm_mode": cfg.vllm_mode} if cfg.use_vllm else {}
    return GRPOConfig(**run.args(), num_generations=cfg.num_generations,
                      max_completion_length=cfg.max_completion_length,
                      beta=cfg.beta, temperature=cfg.initial_temperature, top_p=cfg.top_p, **extra)


def train(job: dict[str, Any], log) -> dict[str, Any]:
    from trl import GRPOTrainer

    from steps.train.rewards import R1Reward, make_trl_reward

    run: Job = open_job(job, GRPOSettings)
    cfg = run.cfg
    model = load_causal_lm(run.step, run.model)
    args = grpo_args(run)
    schedule = TemperatureSchedule(cfg.initial_temperature, cfg.final_temperature, cfg.temperature_schedule)
    reward = R1Reward(cfg.reward_bad_format, cfg.reward_wrong, cfg.reward_correct)
    outcomes: list[dict[str, Any]] = []

    def on_batch(kinds: list[str]) -> None:
        outcomes.append({"step": schedule.step, "temperature": schedule.current,
                         **{k: kinds.count(k) for k in OUTCOMES}})

    trainer = GRPOTrainer(model=model, reward_funcs=[make_trl_reward(reward, "answer", on_batch)], args=args,
                          train_dataset=hf_dataset(run.rows), processing_class=run.tokenizer,
                          peft_config=peft_config(cfg), callbacks=[schedule.callback()])
    schedule.attach(trainer, run.step)
    summary = fit_and_save(trainer, run, log)
    from accelerate.utils import gather_object

    # each process scored its own completions: rank 0 reports them all
    summary["outcomes"] = sorted(gather_object(outcomes), key=lambda o: o["step"])
    summary["temperature_patched_logprobs"] = schedule.patched_logprobs
    return summary


@register("train.grpo")
class TrainGRPO(TrainStep):
    """GRPO with trl's GRPOTrainer and the R1 reward (0 bad format / 1 wrong / 10 right), temperature schedule."""

    version = "2"  # 2: generation_config.json says do_sample: true
    Config = GRPOSettings

    def rows(self, ctx, chat):
        check_generation_batch(self.name, self.config)  # before any process starts
        return grpo_rows(self.name, ctx.inputs["data"], self.config, chat)

    def report(self, ctx, summary):
        history = summary.get("log_history", [])
        out = ctx.out("report")
        reward_key = "reward" if any("reward" in h for h in history) else "rewards/r1_reward/mean"
        plot_curves(out / "reward.png", history, [reward_key], "GRPO reward (mean ± std per step)",
                    band={reward_key: "reward_std"}, twin="temperature")
        outcomes = summary.get("outcomes", [])
        per_step = [{"step": h["step"], "reward_mean": h.get(reward_key), "reward_std": h.get("reward_std"),
                     "temperature": h.get("temperature")} for h in history if reward_key in h]
        summary["reward_per_step"] = per_step
        if per_step:
            k = max(1, len(per_step) // 4)
            summary["reward_first_quarter"] = sum(p["reward_mean"] for p in per_step[:k]) / k
            summary["reward_last_quarter"] = sum(p["reward_mean"] for p in per_step[-k:]) / k
        if outcomes:
            summary["outcome_counts"] = {k: sum(o[k] for o in outcomes) for k in OUTCOMES}
        (out / "outcomes.jsonl").write_text("".join(json.dumps(o) + "\n" for o in outcomes))
        super().report(ctx, summary)
