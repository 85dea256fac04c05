"""train.sft: supervised fine-tuning with trl's SFTTrainer.

    - id: sft
      uses: train.sft
      with: {max_steps: 100, learning_rate: 2.0e-5}
      inputs: {data: "${steps.responses.responses}", model: "${steps.base.model}"}

Rows are prompt/completion pairs (columns chosen by steps.common.columns) or `messages`.
"""
from __future__ import annotations

from typing import Any

from engine.recipe.errors import StepError
from engine.recipe.step import register
from steps.common.chat import assistant_message, prompt
from steps.common.columns import COMPLETION_COLUMNS, pick_column
from steps.train.trl_common import (
    Job,
    TrainConfig,
    TrainStep,
    fit_and_save,
    hf_dataset,
    load_causal_lm,
    open_job,
    peft_config,
    prompt_column,
    read_rows,
    text_of,
)


class SFTSettings(TrainConfig):
    completion_column: str | None = None  # default: the first of steps.common.columns.COMPLETION_COLUMNS
    packing: bool = False
    completion_only_loss: bool | None = None


def sft_rows(step: str, data, cfg: SFTSettings, chat: bool) -> list[dict[str, Any]]:
    rows = read_rows(step, data)
    if "messages" in rows[0] and not (cfg.prompt_column or cfg.completion_column):
        bad = [i for i, r in enumerate(rows) if not isinstance(r.get("messages"), list) or not r["messages"]]
        if bad:
            raise StepError(f"{step}: {data.path}: row {bad[0]}: "
                            "`messages` must be a non-empty list of {role, content}")
        if not chat:
            raise StepError(f"{step}: {data.path}: `messages` rows need a tokenizer with a chat template")
        return [{"messages": r["messages"]} for r in rows]
    p = prompt_column(step, data, rows, cfg.prompt_column)
    c = pick_column(rows[0], cfg.completion_column, COMPLETION_COLUMNS, "completion", f"{step}: {data.path}",
                    "completion_column")
    return [{"prompt": prompt(text_of(step, data, i, r, p), cfg.system_prompt, chat, plain_system=True),
             "completion": assistant_message(text_of(step, data, i, r, c), chat)} for i, r in enumerate(rows)]


def train(job: dict[str, Any], log) -> dict[str, Any]:
    from trl import SFTConfig, SFTTrainer

    run: Job = open_job(job, SFTSettings)
    cfg = run.cfg
    model = load_causal_lm(run.step, run.model)
    args = SFTConfig(**run.args(), max_length=cfg.max_length, packing=cfg.packing,
                     completion_only_loss=cfg.completion_only_loss)
    trainer = SFTTrainer(model=model, args=args, train_dataset=hf_dataset(run.rows), processing_class=run.tokenizer,
                         peft_config=peft_config(cfg))
    summary = fit_and_save(trainer, run, log)
    # trl logs the running count of (non-padding) training tokens as `num_tokens`
    seen = [h["num_tokens"] for h in summary["log_history"] if "num_tokens" in h]
    summary["train_tokens"] = int(seen[-1]) if seen else None
    summary["tokens_per_second"] = seen[-1] / summary["train_seconds"] if seen and summary["train_seconds"] else None
    return summary


@register("train.sft")
class TrainSFT(TrainStep):
    """Supervised fine-tuning with trl's SFTTrainer (prompt/completion or messages rows)."""

    version = "2"  # 2: generation_config.json says do_sample: true
    Config = SFTSettings

    def rows(self, ctx, chat):
        return sft_rows(self.name, ctx.inputs["data"], self.config, chat)
