"""train.reward_model: a sequence-classification reward model with trl's RewardTrainer on
preference pairs; the report adds how often the saved model ranks chosen above rejected."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.recipe.step import register
from steps.common.models import load_pretrained
from steps.train.trl_common import (
    Job,
    TrainConfig,
    TrainStep,
    fit_and_save,
    hf_dataset,
    is_main_process,
    open_job,
    peft_config,
    preference_rows,
)


class RewardSettings(TrainConfig):
    learning_rate: float = 1e-5
    center_rewards_coefficient: float | None = None


def load_scorer(run: Job):
    """The model with a freshly initialised one-logit score head (seeded)."""
    import transformers
    from transformers import AutoModelForSequenceClassification

    transformers.set_seed(run.seed)
    model = load_pretrained(run.step, "model", run.model, AutoModelForSequenceClassification.from_pretrained,
                            num_labels=1)
    model.config.pad_token_id = run.tokenizer.pad_token_id
    return model


def train(job: dict[str, Any], log) -> dict[str, Any]:
    from trl import RewardConfig, RewardTrainer

    run: Job = open_job(job, RewardSettings)
    cfg = run.cfg
    model = load_scorer(run)
    extra = ({} if cfg.center_rewards_coefficient is None
             else {"center_rewards_coefficient": cfg.center_rewards_coefficient})
    args = RewardConfig(**run.args(), max_length=cfg.max_length, **extra)
    trainer = RewardTrainer(model=model, args=args, train_dataset=hf_dataset(run.rows), processing_class=run.tokenizer,
                            peft_config=peft_config(cfg, "SEQ_CLS"))
    summary = fit_and_save(trainer, run, log)
    saved = is_main_process() and (run.out / "config.json").exists()  # rank 0 measures, once
    summary["preference_accuracy"] = pairwise_accuracy(run.out, run.rows, run.tokenizer) if saved else None
    return summary


def pairwise_accuracy(model_dir: Path, rows: list[dict[str, Any]], tok) -> float:
    """Share of training pairs the saved reward model ranks chosen above rejected (a sanity figure)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = load_pretrained("train.reward_model", "trained model", str(model_dir),
                            AutoModelForSequenceClassification.from_pretrained).eval()

    def text(prompt, completion):
        if isinstance(prompt, list):
            return tok.apply_chat_template(prompt + completion, tokenize=False)
        return prompt + completion

    wins = 0
    with torch.no_grad():
        for r in rows[:256]:
            enc = tok([text(r["prompt"], r["chosen"]), text(r["prompt"], r["rejected"])], return_tensors="pt",
                      padding=True, truncation=True, max_length=1024)
            s = model(**enc).logits[:, 0]
            wins += int(s[0] > s[1])
    return wins / min(len(rows), 256)


@register("train.reward_model")
class TrainRewardModel(TrainStep):
    """A sequence-classification reward model with trl's RewardTrainer on preference pairs."""

    version = "2"  # 2: generation_config.json says do_sample: true
    Config = RewardSettings

    def rows(self, ctx, chat):
        return preference_rows(self.name, ctx.inputs["data"], self.config, chat)
