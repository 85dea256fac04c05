"""The small-LM training loop that `train.pretrain` (small_lm_pretrain.py) and `train.finetune`
(small_lm_finetune.py) share: a small causal LM trained with transformers' Trainer on
problem/solution rows, with packed batches (packing.py) and measured thread counts
(thread_tuning.py). The trl-based steps (`train.sft`, `train.dpo`, ...) are the trl_*.py modules.

Each training example is the chat-template rendering of the problem as a user message (with
the generation prompt), followed by the `<think>…</think><answer>…</answer>` solution and EOS,
so the model answers exactly what `apply_chat_template(..., add_generation_prompt=True)` and
the generation backends send it. By default the loss covers the solution only: the problems
are random, there is nothing to learn from predicting them.

Training runs CPU-safe (no bf16/fp16, no gradient checkpointing), checkpoints into the step's
scratch so a killed run resumes, and saves the model and the tokenizer into one Model
directory, plus a Report with the loss curve.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from engine.recipe.errors import StepError
from engine.recipe.step import EXECUTION_ONLY, StepConfig
from steps.common.chat import user_messages
from steps.common.columns import COMPLETION_COLUMNS, PROMPT_COLUMNS, pick_column
from steps.common.models import load_pretrained
from steps.common.threads import model_threads
from steps.train.packing import collate, packs_exactly
from steps.train.thread_tuning import thread_tuning


class FitSettings(StepConfig):
    max_steps: int = Field(3000, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = 0.01
    loss_on: Literal["completion", "all"] = Field("completion", description="completion: loss on the solution only")
    prompt_field: str | None = Field(None, description="default: the first of prompt, problem, instruction, question")
    completion_field: str | None = Field(None,
                                         description="default: the first of completion, solution, response, output")
    logging_steps: int = Field(25, ge=1, description="loss-logging interval; a shorter run logs every "
                                                 "max_steps // 10 steps, so every loss curve has points")
    save_steps: int = Field(500, ge=1, description="checkpoint interval (into scratch) for resuming",
                            json_schema_extra=EXECUTION_ONLY)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0


def encode_examples(step: str, rows: list[dict[str, Any]], tok, cfg: FitSettings, max_length: int,
                    src: Path, log) -> tuple[list[dict[str, list[int]]], int]:
    """Token ids and labels per row; rows longer than the context are set aside (counted)."""
    if not rows:
        return [], 0
    where = f"{step}: data: {src}"
    pf = pick_column(rows[0], cfg.prompt_field, PROMPT_COLUMNS, "prompt", where, "prompt_field")
    cf = pick_column(rows[0], cfg.completion_field, COMPLETION_COLUMNS, "completion", where, "completion_field")
    eos = tok.eos_token or ""
    examples, too_long = [], 0
    for i, row in enumerate(rows):
        if row.get(pf) is None or row.get(cf) is None:
            raise StepError(f"{step}: data: {src}: row {i} has no {pf if row.get(pf) is None else cf!r} value")
        prompt = tok.apply_chat_template(user_messages(row[pf]), tokenize=False, add_generation_prompt=True)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(str(row[cf]) + eos, add_special_tokens=False)["input_ids"]
        if len(p) + len(c) > max_length:
            too_long += 1
            continue
        labels = ([-100] * len(p) if cfg.loss_on == "completion" else list(p)) + c
        examples.append({"input_ids": p + c, "labels": labels})
    if too_long:
        log.warning("%d of %d rows are longer than %d tokens and were set aside", too_long, len(rows), max_length)
    if not examples:
        raise StepError(f"{step}: max_length: all {len(rows)} rows are longer than {max_length} tokens; "
                        "raise max_length (and the model's context)")
    return examples, too_long


def _no_final_checkpoint():
    from transformers import TrainerCallback

    class NoFinalCheckpoint(TrainerCallback):
        """The step saves the trained model itself: a checkpoint of the last step (model, optimizer,
        scheduler, into scratch) would be written only to be thrown away."""

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= state.max_steps:
                control.should_save = False

    return NoFinalCheckpoint()


def logging_interval(configured: int, max_steps: int) -> int:
    """Steps between loss points: the configured interval, or shorter where the run would log fewer
    than ten points (20 steps at the default 25 logged none). Logging never changes what is trained."""
    return max(1, min(configured, max_steps // 10))


def _last_checkpoint(folder: Path) -> str | None:
    ckpts = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def fit(ctx, step: str, model, tok, examples: list[dict[str, list[int]]], cfg: FitSettings) -> dict[str, Any]:
    """Train `model` in place on pre-tokenized examples; return curve + throughput figures."""
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the step's own progress bar reports steps

    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise StepError(f"{step}: device: cuda requested but no CUDA device is available; use auto or cpu")
    checkpoints = ctx.scratch / "checkpoints"
    args = TrainingArguments(
        output_dir=str(checkpoints), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, logging_steps=logging_interval(cfg.logging_steps, cfg.max_steps),
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=1, seed=cfg.seed, data_seed=cfg.seed,
        report_to="none", use_cpu=not cuda, bf16=False, fp16=False, dataloader_num_workers=0,
        disable_tqdm=True, remove_unused_columns=False, logging_strategy="steps",
    )
    tokens = sum(len(e["input_ids"]) for e in examples) / len(examples)

    from steps.common.progress import make_callback

    packed = packs_exactly(model, examples, tok.pad_token_id)
    ctx.log.info("batches: %s", "packed (several examples per row)" if packed else "padded (one example per row)")
    tuning = thread_tuning(cuda, ctx.log)
    with model_threads(model, on_gpu=cuda):
        trainer = Trainer(model=model, args=args, train_dataset=examples,
                          data_collator=collate(tok.pad_token_id, packed),
                          callbacks=[make_callback(ctx, f"{step} steps"), _no_final_checkpoint(),
                                     *([tuning] if tuning else [])])
        trainer.remove_callback(PrinterCallback)  # loss lines go to the Report, not stdout
        resume = _last_checkpoint(checkpoints)
        start = int(resume.rsplit("-", 1)[-1]) if resume else 0
        if resume:
            ctx.log.info("resuming from %s", resume)
        t0 = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - t0
        threads = tuning.tuner.chosen if tuning else torch.get_num_threads()
    history = [h for h in trainer.state.log_history if "loss" in h]
    return {
        "steps": cfg.max_steps,
        "train_seconds": round(seconds, 2),
        "train_loss": round(float(result.training_loss), 4),
        "final_loss": history[-1]["loss"] if history else None,
        "resumed_from_step": start,
        "tokens_per_second": round(cfg.batch_size * tokens * (cfg.max_steps - start) / max(seconds, 1e-9)),
        "examples": len(examples),
        "packed": packed,
        "threads": threads,
        "curve": [{"step": h["step"], "loss": h["loss"], "lr": h.get("learning_rate")} for h in history],
    }


def write_report(ctx, step: str, metrics: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = ctx.out("report")
    ctx.write_metrics("report", metrics)
    curve = metrics.get("curve") or []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if curve:
        ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"{step}: {metrics.get('parameters', 0):,} parameters")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)


def save_model(ctx, model, tok) -> None:
    out = ctx.out("model")
    from steps.common.saved_model import sample_by_default

    sample_by_default(model)
    model.save_pretrained(out)
    tok.save_pretrained(out)  # a Model dir alone is enough to load and generate


def load_tokenizer(step: str, path: Path, what: str):
    from transformers import AutoTokenizer

    if not (path / "tokenizer_config.json").exists() and not (path / "tokenizer.json").exists():
        raise StepError(f"{step}: {what}: {path} holds no tokenizer (tokenizer.json / tokenizer_config.json)")
    tok = load_pretrained(step, what, path, AutoTokenizer.from_pretrained)
    if tok.pad_token_id is None or tok.eos_token_id is None:
        raise StepError(f"{step}: {what}: the tokenizer at {path} needs a pad and an eos token")
    if not getattr(tok, "chat_template", None):
        raise StepError(f"{step}: {what}: the tokenizer at {path} has no chat template; train it with tokenizer.train")
    return tok
