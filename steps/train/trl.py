"""Training steps on trl: `train.sft`, `train.dpo`, `train.grpo`, `train.reward_model`.

Configs mirror trl's argument names (`learning_rate`, `per_device_train_batch_size`,
`num_generations`, `beta`, ...); anything else trl accepts goes through `args: {...}`.
Every step:
- takes the model as an optional `model` input (a Model dir, wins) or config `model` (a path or
  a Hub id), and saves the final model *with its tokenizer* as output `model`;
- writes a `report` (metrics.json with trl's log history, a loss or reward curve PNG);
- keeps trl checkpoints in the step's scratch, so a killed run resumes from its last checkpoint;
- uses bf16/fp16 only when the GPU supports it, CPU otherwise; report_to is "none" by default.

Multi-GPU / multi-node: set `launch: {num_processes: 8}` (and optionally `config_file:` an
accelerate config, `extra: [...]` more `accelerate launch` flags). The step then writes its
job to scratch and runs `accelerate launch ... -m steps.train.trl JOB.json`; each process builds
the same trainer. Without `launch` the trainer runs in the step's own process.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.artifacts import Dataset, Model, Report
from engine.errors import StepError
from engine.step import In, Step, StepConfig, register


# ============================================================================ configs

class LoraSettings(BaseModel):
    """peft LoRA; the adapter is merged into the saved model unless `merge: false`."""

    model_config = ConfigDict(extra="forbid")
    r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    merge: bool = True


class LaunchSettings(BaseModel):
    """Run the trainer under `accelerate launch` (multi-GPU, multi-node)."""

    model_config = ConfigDict(extra="forbid")
    num_processes: int = 1
    config_file: str | None = None
    extra: list[str] = Field(default_factory=list)  # e.g. ["--num_machines", "2", "--machine_rank", "0"]


class TrainConfig(StepConfig):
    model: str | None = None  # a local Model dir or a Hub id; a bound `model` input wins
    seed: int = 0
    learning_rate: float = 2e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    warmup_steps: float = 0
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int | None = 1024
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int = 2
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 if the GPU has it, else fp16 on GPU, fp32 on CPU
    gradient_checkpointing: bool = False
    report_to: list[str] = Field(default_factory=lambda: ["none"])
    lora: LoraSettings | None = None
    launch: LaunchSettings | None = None
    system_prompt: str | None = None  # prepended as a system message when the tokenizer has a chat template
    args: dict[str, Any] = Field(default_factory=dict)  # any other trl/transformers training argument


class SFTSettings(TrainConfig):
    prompt_column: str | None = None  # default: prompt | problem | instruction | question
    completion_column: str | None = None  # default: completion | solution | response | output
    packing: bool = False
    completion_only_loss: bool | None = None


class DPOSettings(TrainConfig):
    learning_rate: float = 1e-6
    beta: float = 0.1
    loss_type: str = "sigmoid"
    prompt_column: str | None = None  # default: prompt | instruction | problem


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
    prompt_column: str | None = None  # default: prompt | problem | instruction | question
    answer_column: str = "answer"
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"


class RewardSettings(TrainConfig):
    learning_rate: float = 1e-5
    center_rewards_coefficient: float | None = None
    prompt_column: str | None = None


PROMPT_COLUMNS = ("prompt", "problem", "instruction", "question")
COMPLETION_COLUMNS = ("completion", "solution", "response", "output")


# ============================================================================ data mapping

def _pick(step: str, columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, src: Path) -> str:
    if wanted:
        if wanted not in columns:
            raise StepError(f"{step}: {src}: column {wanted!r} ({what}) not found; columns are {columns}")
        return wanted
    for c in candidates:
        if c in columns:
            return c
    raise StepError(f"{step}: {src}: no {what} column; expected one of {list(candidates)}, found {columns}")


def _user(text: str, system: str | None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": str(text)}]


def _prompt_value(text: str, chat: bool, system: str | None):
    if chat:
        return _user(text, system)
    return f"{system}\n\n{text}" if system else str(text)


def _completion_value(text: str, chat: bool):
    return [{"role": "assistant", "content": str(text)}] if chat else str(text)


def _read(step: str, data: Dataset) -> list[dict[str, Any]]:
    rows = data.read()
    if not rows:
        raise StepError(f"{step}: {data.path}: the dataset is empty")
    return rows


def sft_rows(step: str, data: Dataset, cfg: SFTSettings, chat: bool) -> list[dict[str, Any]]:
    rows = _read(step, data)
    cols = list(rows[0])
    if "messages" in cols and not (cfg.prompt_column or cfg.completion_column):
        bad = [i for i, r in enumerate(rows) if not isinstance(r.get("messages"), list) or not r["messages"]]
        if bad:
            raise StepError(f"{step}: {data.path}: row {bad[0]}: `messages` must be a non-empty list of {{role, content}}")
        if not chat:
            raise StepError(f"{step}: {data.path}: `messages` rows need a tokenizer with a chat template")
        return [{"messages": r["messages"]} for r in rows]
    p = _pick(step, cols, cfg.prompt_column, PROMPT_COLUMNS, "prompt", data.path)
    c = _pick(step, cols, cfg.completion_column, COMPLETION_COLUMNS, "completion", data.path)
    return [{"prompt": _prompt_value(r[p], chat, cfg.system_prompt), "completion": _completion_value(r[c], chat)}
            for r in rows]


def preference_rows(step: str, data: Dataset, cfg, chat: bool) -> list[dict[str, Any]]:
    """rank.preferences' {instruction, chosen, rejected, ...} -> trl's {prompt, chosen, rejected}."""
    rows = _read(step, data)
    cols = list(rows[0])
    p = _pick(step, cols, cfg.prompt_column, ("prompt", "instruction", "problem", "question"), "prompt", data.path)
    for need in ("chosen", "rejected"):
        if need not in cols:
            raise StepError(f"{step}: {data.path}: column {need!r} not found; expected preference pairs "
                            f"{{instruction, chosen, rejected}}, found {cols}")
    return [{"prompt": _prompt_value(r[p], chat, cfg.system_prompt),
             "chosen": _completion_value(r["chosen"], chat),
             "rejected": _completion_value(r["rejected"], chat)} for r in rows]


def grpo_rows(step: str, data: Dataset, cfg: GRPOSettings, chat: bool) -> list[dict[str, Any]]:
    rows = _read(step, data)
    cols = list(rows[0])
    p = _pick(step, cols, cfg.prompt_column, PROMPT_COLUMNS, "prompt", data.path)
    if cfg.answer_column not in cols:
        raise StepError(f"{step}: {data.path}: column {cfg.answer_column!r} (reference answer) not found; columns are {cols}")
    return [{"prompt": _prompt_value(r[p], chat, cfg.system_prompt), "answer": str(r[cfg.answer_column])}
            for r in rows]


# ============================================================================ shared trainer plumbing

def resolve_model(step: str, ctx, cfg: TrainConfig) -> str:
    bound = ctx.inputs.get("model")
    if bound is not None:
        path = Path(bound.path)
        if not (path / "config.json").exists():
            raise StepError(f"{step}: input model {path}: no config.json; expected a Hugging Face model directory")
        return str(path)
    if not cfg.model:
        raise StepError(f"{step}: no model: bind input `model` or set `model:` to a path or a Hub id")
    looks_local = cfg.model.startswith((".", "/", "~")) or Path(cfg.model).exists()
    if looks_local and not (Path(cfg.model).expanduser() / "config.json").exists():
        raise StepError(f"{step}: model: {cfg.model}: not a model directory (no config.json)")
    return str(Path(cfg.model).expanduser()) if looks_local else cfg.model


def precision_flags(step: str, precision: str) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if precision == "auto":
        return {"use_cpu": not cuda, "bf16": bf16_ok, "fp16": cuda and not bf16_ok}
    if precision == "bf16" and not bf16_ok:
        raise StepError(f"{step}: precision: bf16 needs a GPU that supports it; use auto or fp32")
    if precision == "fp16" and not cuda:
        raise StepError(f"{step}: precision: fp16 needs a GPU; use auto or fp32")
    return {"use_cpu": not cuda, "bf16": precision == "bf16", "fp16": precision == "fp16"}


def load_tokenizer(step: str, model_path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_path)
    except Exception as e:  # noqa: BLE001 - a missing/corrupt tokenizer is a user error
        raise StepError(f"{step}: model {model_path}: cannot load its tokenizer ({type(e).__name__}: {e})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(step: str, model_path: str, **kw):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(model_path, **kw)
    except Exception as e:  # noqa: BLE001
        raise StepError(f"{step}: model {model_path}: cannot load it ({type(e).__name__}: {e})") from None


def common_args(cfg: TrainConfig, step: str, seed: int, checkpoints: Path) -> dict[str, Any]:
    args = {
        "output_dir": str(checkpoints),
        "seed": seed,
        "data_seed": seed,
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "warmup_steps": cfg.warmup_steps,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "weight_decay": cfg.weight_decay,
        "max_grad_norm": cfg.max_grad_norm,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "report_to": cfg.report_to,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        **precision_flags(step, cfg.precision),
    }
    if cfg.gradient_checkpointing:  # passed only when asked: transformers 5 warns on the old name
        args["gradient_checkpointing"] = True
    args.update(cfg.args)
    return args


def peft_config(cfg: TrainConfig, task_type: str = "CAUSAL_LM"):
    if cfg.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.lora_alpha, lora_dropout=cfg.lora.lora_dropout,
                      target_modules=cfg.lora.target_modules, task_type=task_type)


def last_checkpoint(checkpoints: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None


def fit_and_save(trainer, tokenizer, cfg: TrainConfig, checkpoints: Path, out: Path, log) -> dict[str, Any]:
    """Train (resuming from the last checkpoint in scratch), save model + tokenizer into `out`."""
    resume = last_checkpoint(checkpoints)
    if resume:
        log.info("resuming from checkpoint %s", resume)
    import torch

    from steps.backends.hf import SMALL_MODEL_PARAMS, cpu_threads

    # one torch thread for a tiny model on CPU: on shared cores 2 threads made GRPO ~20x slower
    params = SMALL_MODEL_PARAMS if torch.cuda.is_available() else sum(p.numel() for p in trainer.model.parameters())
    from steps.common.progress import add_progress

    add_progress(trainer)  # steps and the latest loss on the engine's bar
    t0 = time.perf_counter()
    with cpu_threads(params):
        result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - t0
    model = trainer.model
    if cfg.lora is not None and cfg.lora.merge and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if getattr(model, "config", None) is not None:
        model.config.use_cache = True  # trainers switch the KV cache off; users of the saved model want it
    if trainer.accelerator.is_main_process:
        from steps.common.saved_model import sample_by_default

        sample_by_default(model)
        out.mkdir(parents=True, exist_ok=True)
        if model is trainer.model:
            trainer.save_model(str(out))
        else:
            model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    return {
        "global_step": int(trainer.state.global_step),
        "train_loss": float(result.training_loss) if result.training_loss is not None else None,
        "train_seconds": seconds,
        "resumed_from": Path(resume).name if resume else None,
        "log_history": trainer.state.log_history,
    }


def plot_curves(path: Path, history: list[dict[str, Any]], keys: list[str], title: str,
                band: dict[str, str] | None = None, twin: str | None = None) -> bool:
    """One PNG with the curves of `keys` from trl's log history (x = step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    drawn = False
    for key in keys:
        pts = [(h["step"], h[key]) for h in history if key in h and h[key] is not None]
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=2, label=key)
        std_key = (band or {}).get(key)
        if std_key:
            sd = [h.get(std_key, 0.0) for h in history if key in h and h[key] is not None]
            ax.fill_between(xs, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)], alpha=0.2)
        drawn = True
    if twin:
        pts = [(h["step"], h[twin]) for h in history if twin in h]
        if pts:
            ax2 = ax.twinx()
            ax2.plot(*zip(*pts), color="gray", ls="--", label=twin)
            ax2.set_ylabel(twin)
    ax.set_xlabel("step")
    ax.set_title(title)
    if drawn:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


# ============================================================================ the four trainers
# Each `_train_*` takes a plain job dict (paths and a config dump) so the same code runs in the
# step's process or in every process of `accelerate launch -m steps.train.trl JOB.json`.

def _job_config(job: dict[str, Any]):
    return SETTINGS[job["kind"]].model_validate(job["config"])


def _train_sft(job: dict[str, Any], log) -> dict[str, Any]:
    from datasets import Dataset as HFDataset
    from trl import SFTConfig, SFTTrainer

    cfg: SFTSettings = _job_config(job)
    step, ckpt, out = job["step"], Path(job["checkpoints"]), Path(job["out"])
    tok = load_tokenizer(step, job["model"])
    model = load_causal_lm(step, job["model"])
    rows = [json.loads(x) for x in Path(job["data"]).read_text(encoding="utf-8").splitlines() if x]
    args = SFTConfig(**common_args(cfg, step, job["seed"], ckpt), max_length=cfg.max_length, packing=cfg.packing,
                     completion_only_loss=cfg.completion_only_loss)
    trainer = SFTTrainer(model=model, args=args, train_dataset=HFDataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config(cfg))
    summary = fit_and_save(trainer, tok, cfg, ckpt, out, log)
    # trl logs the running count of (non-padding) training tokens as `num_tokens`
    seen = [h["num_tokens"] for h in summary["log_history"] if "num_tokens" in h]
    summary["train_tokens"] = int(seen[-1]) if seen else None
    summary["tokens_per_second"] = seen[-1] / summary["train_seconds"] if seen and summary["train_seconds"] else None
    return summary


def _train_dpo(job: dict[str, Any], log) -> dict[str, Any]:
    import copy

    from datasets import Dataset as HFDataset
    from trl import DPOConfig, DPOTrainer

    cfg: DPOSettings = _job_config(job)
    step, ckpt, out = job["step"], Path(job["checkpoints"]), Path(job["out"])
    tok = load_tokenizer(step, job["model"])
    model = load_causal_lm(step, job["model"])
    # trl 1.16 rebuilds a missing reference from the config's name/path, which fails for a model
    # built from a config; a frozen copy always works (LoRA needs none: the adapter-off model is it).
    ref = None
    if cfg.lora is None:
        ref = copy.deepcopy(model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
    rows = [json.loads(x) for x in Path(job["data"]).read_text(encoding="utf-8").splitlines() if x]
    args = DPOConfig(**common_args(cfg, step, job["seed"], ckpt), max_length=cfg.max_length, beta=cfg.beta,
                     loss_type=[cfg.loss_type])
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=HFDataset.from_list(rows),
                         processing_class=tok, peft_config=peft_config(cfg))
    return fit_and_save(trainer, tok, cfg, ckpt, out, log)


def _train_reward(job: dict[str, Any], log) -> dict[str, Any]:
    from datasets import Dataset as HFDataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    cfg: RewardSettings = _job_config(job)
    step, ckpt, out = job["step"], Path(job["checkpoints"]), Path(job["out"])
    tok = load_tokenizer(step, job["model"])
    import transformers

    transformers.set_seed(job["seed"])  # the score head is freshly initialised
    try:
        model = AutoModelForSequenceClassification.from_pretrained(job["model"], num_labels=1)
    except Exception as e:  # noqa: BLE001
        raise StepError(f"{step}: model {job['model']}: cannot load it for sequence classification ({e})") from None
    model.config.pad_token_id = tok.pad_token_id
    rows = [json.loads(x) for x in Path(job["data"]).read_text(encoding="utf-8").splitlines() if x]
    extra = {} if cfg.center_rewards_coefficient is None else {"center_rewards_coefficient": cfg.center_rewards_coefficient}
    args = RewardConfig(**common_args(cfg, step, job["seed"], ckpt), max_length=cfg.max_length, **extra)
    trainer = RewardTrainer(model=model, args=args, train_dataset=HFDataset.from_list(rows), processing_class=tok,
                            peft_config=peft_config(cfg, "SEQ_CLS"))
    summary = fit_and_save(trainer, tok, cfg, ckpt, out, log)
    summary["preference_accuracy"] = _pairwise_accuracy(out, rows, tok) if (out / "config.json").exists() else None
    return summary


def _pairwise_accuracy(model_dir: Path, rows: list[dict[str, Any]], tok) -> float:
    """Share of training pairs the saved reward model ranks chosen above rejected (a sanity figure)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()

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


def _train_grpo(job: dict[str, Any], log) -> dict[str, Any]:
    from datasets import Dataset as HFDataset
    from trl import GRPOConfig, GRPOTrainer

    from steps.train.rewards import R1Reward, make_trl_reward

    cfg: GRPOSettings = _job_config(job)
    step, ckpt, out = job["step"], Path(job["checkpoints"]), Path(job["out"])
    tok = load_tokenizer(step, job["model"])
    model = load_causal_lm(step, job["model"])
    rows = [json.loads(x) for x in Path(job["data"]).read_text(encoding="utf-8").splitlines() if x]
    gen_batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if gen_batch % cfg.num_generations:
        raise StepError(f"{step}: per_device_train_batch_size × gradient_accumulation_steps = {gen_batch} must be a "
                        f"multiple of num_generations = {cfg.num_generations}")
    extra = {"use_vllm": True, "vllm_mode": cfg.vllm_mode} if cfg.use_vllm else {}
    args = GRPOConfig(**common_args(cfg, step, job["seed"], ckpt), num_generations=cfg.num_generations,
                      max_completion_length=cfg.max_completion_length, beta=cfg.beta,
                      temperature=cfg.initial_temperature, top_p=cfg.top_p, **extra)
    outcomes: list[dict[str, Any]] = []
    schedule = TemperatureSchedule(cfg.initial_temperature, cfg.final_temperature, cfg.temperature_schedule)
    reward = R1Reward(cfg.reward_bad_format, cfg.reward_wrong, cfg.reward_correct)

    def on_batch(kinds: list[str]) -> None:
        outcomes.append({"step": schedule.step, "temperature": schedule.current,
                         **{k: kinds.count(k) for k in ("bad_format", "wrong", "correct")}})

    trainer = GRPOTrainer(model=model, reward_funcs=[make_trl_reward(reward, "answer", on_batch)], args=args,
                          train_dataset=HFDataset.from_list(rows), processing_class=tok,
                          peft_config=peft_config(cfg), callbacks=[schedule.callback()])
    schedule.attach(trainer)
    summary = fit_and_save(trainer, tok, cfg, ckpt, out, log)
    summary["outcomes"] = outcomes
    summary["temperature_patched_logprobs"] = schedule.patched_logprobs
    return summary


class TemperatureSchedule:
    """The seed's `initial_temperature → final_temperature`, applied before every optimiser step.

    trl's GRPOTrainer has one fixed `temperature`; this moves it for generation (the generation
    config and kwargs) and for the log-probs of the loss (the temperature captured by trl's fused
    LM head), so sampling and scoring stay at the same temperature.
    """

    def __init__(self, initial: float, final: float, kind: str = "linear"):
        self.initial, self.final, self.kind = initial, final, kind
        self.current, self.step = initial, 0
        self.trainer = None
        self.patched_logprobs = False

    def value(self, step: int, total: int) -> float:
        if self.kind == "constant" or total <= 1:
            return self.initial
        frac = min(max(step / (total - 1), 0.0), 1.0)
        if self.kind == "cosine":
            frac = (1 - math.cos(math.pi * frac)) / 2
        return self.initial + (self.final - self.initial) * frac

    def attach(self, trainer) -> None:
        self.trainer = trainer

    def apply(self, temperature: float) -> None:
        self.current = temperature
        tr = self.trainer
        if tr is None:
            return
        tr.temperature = temperature
        if getattr(tr, "generation_config", None) is not None:
            tr.generation_config.temperature = temperature
        if isinstance(getattr(tr, "generation_kwargs", None), dict):
            tr.generation_kwargs["temperature"] = temperature
        vgen = getattr(tr, "vllm_generation", None)
        if vgen is not None and hasattr(vgen, "temperature"):
            vgen.temperature = temperature
        self.patched_logprobs = _set_fused_head_temperature(tr.model, temperature) or self.patched_logprobs

    def callback(self):
        from transformers import TrainerCallback

        sched = self

        class TemperatureCallback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                sched.step = state.global_step
                sched.apply(sched.value(state.global_step, state.max_steps))
                return control

            def on_log(self, args, state, control, logs=None, **kw):
                # the Trainer copies `logs` into the history before callbacks run
                if state.log_history and "train_runtime" not in state.log_history[-1]:
                    state.log_history[-1]["temperature"] = sched.current
                return control

        return TemperatureCallback()


def _set_fused_head_temperature(model, temperature: float) -> bool:
    """trl's `add_fused_lm_head` closes over `temperature`; update that cell. False if not found."""
    seen = set()
    for m in (model, getattr(model, "get_base_model", lambda: None)(), getattr(model, "module", None)):
        fwd = getattr(m, "forward", None)
        fn = getattr(fwd, "__func__", None)
        if fn is None or id(fn) in seen or "temperature" not in fn.__code__.co_freevars:
            continue
        seen.add(id(fn))
        fn.__closure__[fn.__code__.co_freevars.index("temperature")].cell_contents = float(temperature)
    return bool(seen)


TRAINERS = {"sft": _train_sft, "dpo": _train_dpo, "grpo": _train_grpo, "reward_model": _train_reward}
SETTINGS: dict[str, type[TrainConfig]] = {"sft": SFTSettings, "dpo": DPOSettings, "grpo": GRPOSettings,
                                          "reward_model": RewardSettings}


def run_job(job: dict[str, Any], log) -> dict[str, Any]:
    summary = TRAINERS[job["kind"]](job, log)
    Path(job["summary"]).write_text(json.dumps(summary, default=str, indent=1))
    return summary


def launch_command(job_path: Path, launch: LaunchSettings) -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(launch.num_processes)]
    if launch.config_file:
        cmd += ["--config_file", launch.config_file]
    return cmd + list(launch.extra) + ["-m", "steps.train.trl", str(job_path)]


# ============================================================================ the steps

class _TrainStep(Step):
    kind = ""
    inputs = {"data": Dataset, "model": In(Model, required=False)}
    outputs = {"model": Model, "report": Report}
    deterministic = False  # thread scheduling makes float reductions differ between runs

    def rows(self, ctx, chat: bool) -> list[dict[str, Any]]:
        raise NotImplementedError

    def run(self, ctx) -> None:
        cfg = self.config
        step = self.name
        model_path = resolve_model(step, ctx, cfg)
        tok = load_tokenizer(step, model_path)
        chat = bool(getattr(tok, "chat_template", None))
        rows = self.rows(ctx, chat)
        job_dir = ctx.scratch / "job"
        job_dir.mkdir(parents=True, exist_ok=True)
        data_path = job_dir / "train.jsonl"
        data_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        job = {"kind": self.kind, "step": step, "model": model_path, "data": str(data_path),
               "checkpoints": str(ctx.scratch / "checkpoints"), "out": str(ctx.out("model")),
               "summary": str(job_dir / "summary.json"), "seed": ctx.seed,
               "config": cfg.model_dump(mode="json")}
        ctx.log.info("%s: %d training rows, model %s, chat format %s", step, len(rows), model_path, chat)
        if cfg.launch is not None and cfg.launch.num_processes > 1:
            job_path = job_dir / "job.json"
            job_path.write_text(json.dumps(job, indent=1))
            cmd = launch_command(job_path, cfg.launch)
            ctx.log.info("launching: %s", " ".join(cmd))
            proc = subprocess.run(cmd, cwd=str(Path(__file__).resolve().parents[1]), env=dict(os.environ))
            if proc.returncode != 0:
                raise StepError(f"{step}: accelerate launch exited with status {proc.returncode}; see the step log")
            summary = json.loads(Path(job["summary"]).read_text())
        else:
            from steps.common.progress import training_progress

            with training_progress(ctx):
                summary = run_job(job, ctx.log)
        self.report(ctx, summary)

    def report(self, ctx, summary: dict[str, Any]) -> None:
        history = summary.pop("log_history", [])
        out = ctx.out("report")
        plot_curves(out / "loss.png", history, ["loss"], f"{self.name} training loss")
        final = {k: v for k, v in summary.items() if k not in ("outcomes",)}
        ctx.write_metrics("report", {**final, "log_history": history})
        (out / "log_history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))


@register("train.sft")
class TrainSFT(_TrainStep):
    """Supervised fine-tuning with trl's SFTTrainer (prompt/completion or messages rows)."""

    version = "2"  # 2: generation_config.json says do_sample: true
    kind = "sft"
    Config = SFTSettings

    def rows(self, ctx, chat):
        return sft_rows(self.name, ctx.inputs["data"], self.config, chat)


@register("train.dpo")
class TrainDPO(_TrainStep):
    """DPO with trl's DPOTrainer on {instruction, chosen, rejected} preference pairs."""

    version = "2"  # 2: generation_config.json says do_sample: true
    kind = "dpo"
    Config = DPOSettings

    def rows(self, ctx, chat):
        return preference_rows(self.name, ctx.inputs["data"], self.config, chat)


@register("train.reward_model")
class TrainRewardModel(_TrainStep):
    """A sequence-classification reward model with trl's RewardTrainer on preference pairs."""

    version = "2"  # 2: generation_config.json says do_sample: true
    kind = "reward_model"
    Config = RewardSettings

    def rows(self, ctx, chat):
        return preference_rows(self.name, ctx.inputs["data"], self.config, chat)


@register("train.grpo")
class TrainGRPO(_TrainStep):
    """GRPO with trl's GRPOTrainer and the R1 reward (0 bad format / 1 wrong / 10 right), temperature schedule."""

    version = "2"  # 2: generation_config.json says do_sample: true
    kind = "grpo"
    Config = GRPOSettings

    def rows(self, ctx, chat):
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
            tot = {k: sum(o[k] for o in outcomes) for k in ("bad_format", "wrong", "correct")}
            summary["outcome_counts"] = tot
        (out / "outcomes.jsonl").write_text("".join(json.dumps(o) + "\n" for o in outcomes))
        super().report(ctx, summary)


def _main(argv: list[str]) -> int:
    """Entry point for `accelerate launch -m steps.train.trl JOB.json` (one process per device)."""
    import logging

    logging.basicConfig(level=logging.INFO)
    job = json.loads(Path(argv[0]).read_text())
    run_job(job, logging.getLogger("steps.train.trl"))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
