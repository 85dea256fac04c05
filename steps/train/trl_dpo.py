"""train.dpo: DPO with trl's DPOTrainer on rank.preferences' {instruction, chosen, rejected} pairs."""
from __future__ import annotations

import copy
from typing import Any

from engine.recipe.step import register
from steps.train.trl_common import (
    Job,
    TrainConfig,
    TrainStep,
    fit_and_save,
    hf_dataset,
    load_causal_lm,
    open_job,
    peft_config,
    preference_rows,
)


class DPOSettings(TrainConfig):
    learning_rate: float = 1e-6
    beta: float = 0.1
    loss_type: str = "sigmoid"


def frozen_reference(model, lora: bool):
    """trl 1.16 rebuilds a missing reference from the config's name/path, which fails for a model
    built from a config; a frozen copy always works (LoRA needs none: the adapter-off model is it)."""
    if lora:
        return None
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def train(job: dict[str, Any], log) -> dict[str, Any]:
    from trl import DPOConfig, DPOTrainer

    run: Job = open_job(job, DPOSettings)
    cfg = run.cfg
    model = load_causal_lm(run.step, run.model)
    ref = frozen_reference(model, lora=cfg.lora is not None)
    args = DPOConfig(**run.args(), max_length=cfg.max_length, beta=cfg.beta, loss_type=[cfg.loss_type])
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=hf_dataset(run.rows),
                         processing_class=run.tokenizer, peft_config=peft_config(cfg))
    return fit_and_save(trainer, run, log)


@register("train.dpo")
class TrainDPO(TrainStep):
    """DPO with trl's DPOTrainer on {instruction, chosen, rejected} preference pairs."""

    version = "2"  # 2: generation_config.json says do_sample: true
    Config = DPOSettings

    def rows(self, ctx, chat):
        return preference_rows(self.name, ctx.inputs["data"], self.config, chat)
