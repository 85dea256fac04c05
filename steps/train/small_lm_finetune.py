"""train.finetune: continue training a small LM on its error set (the rows it answered wrongly)
mixed with replayed original rows: one round of error fine-tuning. Training itself is the loop in
small_lm_common.py; for supervised fine-tuning of any chat model with trl, see `train.sft` (trl_sft.py)."""
from __future__ import annotations

import random
import shutil

from pydantic import Field

from engine.recipe.artifact_types import Dataset, Model, Report
from engine.recipe.errors import StepError
from engine.recipe.step import In, Step, register
from steps.common.models import load_pretrained
from steps.train.small_lm_common import FitSettings, encode_examples, fit, load_tokenizer, save_model, write_report


@register("train.finetune")
class Finetune(Step):
    """Continue training a Model on a Dataset (an error set), mixed with replayed original data."""

    version = "2"  # 2: generation_config.json says do_sample: true
    deterministic = False

    class Config(FitSettings):
        max_steps: int = Field(300, ge=1)
        learning_rate: float = Field(5e-4, gt=0)
        warmup_steps: int = Field(10, ge=0)
        replay_fraction: float = Field(0.5, ge=0, lt=1,
                                       description="share of the mixed training set drawn "
                                                   "from `replay` (0.5: as many replay rows as errors)")
        max_length: int | None = Field(None, description="default: the model's context length")

    inputs = {"model": Model, "data": Dataset, "replay": In(Dataset, required=False)}
    outputs = {"model": Model, "report": Report}

    def run(self, ctx):
        from transformers import AutoModelForCausalLM

        c = self.config
        step = "train.finetune"
        src = ctx.inputs["model"].path
        if not (src / "config.json").exists():
            raise StepError(f"{step}: model: {src} is not a model directory (no config.json)")
        tok = load_tokenizer(step, src, "model")
        model = load_pretrained(step, "model", src, AutoModelForCausalLM.from_pretrained, dtype="float32")
        max_length = c.max_length or getattr(model.config, "max_position_embeddings", 2048)
        data = ctx.inputs["data"]
        errors = data.read()
        replay = ctx.inputs.get("replay")
        replay_rows = replay.read() if replay is not None else []
        rng = random.Random(c.seed)
        n_replay = 0
        if replay_rows and c.replay_fraction > 0:
            want = max(1, round(len(errors) * c.replay_fraction / (1 - c.replay_fraction))) if errors else 0
            n_replay = min(want, len(replay_rows))
        mixed = errors + rng.sample(replay_rows, n_replay)
        rng.shuffle(mixed)
        if not errors:
            # nothing was answered wrongly: the fine-tuned model is the input model
            ctx.log.info("the error set is empty; the model is passed through unchanged")
            shutil.copytree(src, ctx.out("model"), dirs_exist_ok=True)
            write_report(ctx, step, {"steps": 0, "errors": 0, "replay": 0, "skipped": "empty error set"})
            return
        examples, too_long = encode_examples(step, mixed, tok, c, max_length, data.path, ctx.log)
        params = sum(p.numel() for p in model.parameters())
        metrics = fit(ctx, step, model, tok, examples, c)
        metrics.update(parameters=params, errors=len(errors), replay=n_replay, too_long=too_long,
                       epochs=round(c.max_steps * c.batch_size / len(examples), 2))
        save_model(ctx, model, tok)
        write_report(ctx, step, metrics)
