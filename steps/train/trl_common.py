"""What the four trl training steps share (`train.sft`, `train.dpo`, `train.grpo`,
`train.reward_model`, one module each): configs, the preamble that loads a job's tokenizer
and rows, trainer arguments, fit-and-save, curves, and the step base that writes the job and
runs it here or under `accelerate launch`.

Configs mirror trl's argument names (`learning_rate`, `per_device_train_batch_size`,
`num_generations`, `beta`, ...); anything else trl accepts goes through `args: {...}`.
Every step:
- takes the model as an optional `model` input (a Model dir, wins) or config `model` (a path or
  a Hub id), and saves the final model *with its tokenizer* as output `model`;
- writes a `report` (metrics.json with trl's log history, a loss or reward curve PNG);
- keeps trl checkpoints in the step's scratch, so a killed run resumes from its last checkpoint;
- uses bf16/fp16 only when the GPU supports it, CPU otherwise; report_to is "none" by default.

Multi-GPU / multi-node / multi-process CPU: set `launch: {num_processes: 8}` (and optionally
`config_file:` an accelerate config, `extra: [...]` more `accelerate launch` flags). The step then
writes its job to scratch and runs `accelerate launch ... -m steps.train.trl_common JOB.json`
through `ctx.run_process`, so the processes' output lands in the step's log; each process builds
the same trainer, rank 0 writes the model, the summary and the progress the step's bar shows.
Without a GPU (or with `--cpu` in `extra`) the processes train on the CPU over gloo. Without
`launch` (or with `num_processes: 1`) the trainer runs in the step's own process.
"""
from __future__ import annotations

import importlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.recipe.artifact_types import Dataset, Model, Report
from engine.recipe.errors import StepError
from engine.recipe.step import EXECUTION_ONLY, In, Step, StepConfig
from steps.common.chat import assistant_message, prompt
from steps.common.columns import PROMPT_COLUMNS, pick_column
from steps.common.models import load_pretrained, load_tokenizer_of, require_model_dir, resolve_model
from steps.common.threads import model_threads

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
    """Run the trainer in `num_processes` processes under `accelerate launch` (GPUs, nodes, CPU).

    Only `num_processes` is part of the key: with the per-device batch and the accumulation it
    makes the global batch, and each process draws its own random numbers (GRPO's completions,
    dropout), so 2 × 4 is not the same training as 1 × 8. How the processes are started (config
    file, machines, addresses, `--cpu`) changes where they run, not what they compute."""

    model_config = ConfigDict(extra="forbid")
    num_processes: int = Field(1, ge=1)
    config_file: str | None = Field(None, json_schema_extra=EXECUTION_ONLY)
    # e.g. ["--num_machines", "2", "--machine_rank", "0", "--main_process_ip", "10.0.0.1"]
    extra: list[str] = Field(default_factory=list, json_schema_extra=EXECUTION_ONLY)

    @field_validator("extra")
    @classmethod
    def _no_keyed_flags(cls, flags: list[str]) -> list[str]:
        for flag in flags:
            field = KEYED_FLAGS.get(flag.split("=")[0].replace("-", "_"))
            if field:
                raise ValueError(f"set {field} instead of {flag.split('=')[0]} in launch.extra "
                                 "(it changes what is trained, so it is part of the key)")
        return flags


# accelerate launch flags that change what is trained: the step's own (keyed) fields say them
KEYED_FLAGS = {"__num_processes": "launch.num_processes", "__mixed_precision": "precision",
               "__gradient_accumulation_steps": "gradient_accumulation_steps"}


class TrainConfig(StepConfig):
    model: str | None = None  # a local Model dir or a Hub id; a bound `model` input wins
    seed: int = 0
    learning_rate: float = Field(2e-5, gt=0)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1)  # -1: num_train_epochs decides
    per_device_train_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    warmup_steps: float = Field(0, ge=0)
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int | None = Field(1024, ge=1)
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(500, json_schema_extra=EXECUTION_ONLY)  # checkpoints into scratch: resuming only
    save_total_limit: int = Field(2, json_schema_extra=EXECUTION_ONLY)
    # auto: bf16 if the GPU has it, else fp16 on GPU, fp32 on CPU
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    report_to: list[str] = Field(default_factory=lambda: ["none"], json_schema_extra=EXECUTION_ONLY)
    lora: LoraSettings | None = None
    launch: LaunchSettings | None = None
    system_prompt: str | None = None  # prepended as a system message when the tokenizer has a chat template
    prompt_column: str | None = None  # default: the first of steps.common.columns.PROMPT_COLUMNS
    args: dict[str, Any] = Field(default_factory=dict)  # any other trl/transformers training argument

    @field_validator("max_steps")
    @classmethod
    def _some_steps(cls, n: int) -> int:
        if n == 0:
            raise ValueError("0 trains nothing; expected a positive number of steps, or -1 to train num_train_epochs")
        return n

    @field_validator("launch")
    @classmethod
    def _one_process_is_no_launch(cls, launch: LaunchSettings | None) -> LaunchSettings | None:
        return None if launch is not None and launch.num_processes == 1 else launch  # in-process: one key

    def processes(self) -> int:
        return self.launch.num_processes if self.launch else 1


# ============================================================================ rows for trl

def read_rows(step: str, data: Dataset) -> list[dict[str, Any]]:
    rows = data.read()
    if not rows:
        raise StepError(f"{step}: {data.path}: the dataset is empty")
    return rows


def prompt_column(step: str, data: Dataset, rows: list[dict[str, Any]], configured: str | None) -> str:
    return pick_column(rows[0], configured, PROMPT_COLUMNS, "prompt", f"{step}: {data.path}", "prompt_column")


def text_of(step: str, data: Dataset, i: int, row: dict[str, Any], column: str) -> str:
    """Row i's `column` as training text: str(None) or str(5) would be trained on as if it were text."""
    v = row.get(column)
    if not isinstance(v, str) or not v.strip():
        got = ("missing" if column not in row else "null" if v is None else "empty" if isinstance(v, str)
               else f"{type(v).__name__} {str(v)[:40]}")
        raise StepError(f"{step}: {data.path}: row {i}: {column!r} is {got}; expected non-empty text")
    return v


def preference_rows(step: str, data: Dataset, cfg: TrainConfig, chat: bool) -> list[dict[str, Any]]:
    """rank.preferences' {instruction, chosen, rejected, ...} -> trl's {prompt, chosen, rejected}."""
    rows = read_rows(step, data)
    p = prompt_column(step, data, rows, cfg.prompt_column)
    for need in ("chosen", "rejected"):
        if need not in rows[0]:
            raise StepError(f"{step}: {data.path}: column {need!r} not found; expected preference pairs "
                            f"{{instruction, chosen, rejected}}, found {list(rows[0])}")
    return [{"prompt": prompt(text_of(step, data, i, r, p), cfg.system_prompt, chat, plain_system=True),
             "chosen": assistant_message(text_of(step, data, i, r, "chosen"), chat),
             "rejected": assistant_message(text_of(step, data, i, r, "rejected"), chat)} for i, r in enumerate(rows)]


# ============================================================================ the shared preamble

@dataclass
class Job:
    """One training run as every process sees it: config, paths, tokenizer and rows."""

    cfg: Any
    step: str
    model: str
    seed: int
    checkpoints: Path
    out: Path
    tokenizer: Any
    rows: list[dict[str, Any]]

    def args(self) -> dict[str, Any]:
        """trl/transformers training arguments common to every trainer."""
        return common_args(self.cfg, self.step, self.seed, self.checkpoints)


def open_job(job: dict[str, Any], settings: type[TrainConfig]) -> Job:
    rows = [json.loads(x) for x in Path(job["data"]).read_text(encoding="utf-8").splitlines() if x]
    return Job(settings.model_validate(job["config"]), job["step"], job["model"], job["seed"],
               Path(job["checkpoints"]), Path(job["out"]), load_tokenizer(job["step"], job["model"]), rows)


def hf_dataset(rows: list[dict[str, Any]]):
    from datasets import Dataset as HFDataset

    return HFDataset.from_list(rows)


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
    tok = load_tokenizer_of(step, model_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(step: str, model_path: str, **kw):
    from transformers import AutoModelForCausalLM

    return load_pretrained(step, "model", model_path, AutoModelForCausalLM.from_pretrained, **kw)


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


def fit_and_save(trainer, job: Job, log) -> dict[str, Any]:
    """Train (resuming from the last checkpoint in scratch), save model + tokenizer into `out`
    (rank 0 writes; every process returns once it is written)."""
    cfg = job.cfg
    started = trainer.accelerator.num_processes
    if started != cfg.processes():
        raise StepError(f"{job.step}: launch.num_processes is {cfg.processes()} but accelerate started {started} "
                        "process(es); check launch.config_file and launch.extra")
    resume = last_checkpoint(job.checkpoints)
    if resume:
        log.info("resuming from checkpoint %s", resume)
    import torch

    from steps.common.progress import add_progress

    add_progress(trainer)  # steps and the latest loss on the engine's bar
    # one torch thread for a tiny model on CPU: on shared cores 2 threads made GRPO ~20x slower
    kept = trainer.train_dataset
    if kept is not None and hasattr(kept, "__len__") and len(kept) == 0:
        raise StepError(f"{job.step}: no row left to train on: trl dropped all {len(job.rows)} rows while tokenizing "
                        f"(max_length {cfg.max_length} leaves no completion tokens?)")
    t0 = time.perf_counter()
    with model_threads(trainer.model, on_gpu=torch.cuda.is_available()):
        result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - t0
    save_model(trainer, job)
    a = trainer.args
    return {
        "global_step": int(trainer.state.global_step),
        "train_loss": float(result.training_loss) if result.training_loss is not None else None,
        "train_seconds": seconds,
        "resumed_from": Path(resume).name if resume else None,
        "num_processes": started,
        "per_device_batch": a.train_batch_size,
        "gradient_accumulation_steps": a.gradient_accumulation_steps,
        "global_batch": a.train_batch_size * a.gradient_accumulation_steps * started,
        "log_history": trainer.state.log_history,
    }


def save_model(trainer, job: Job) -> None:
    model = trainer.model
    if job.cfg.lora is not None and job.cfg.lora.merge and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if getattr(model, "config", None) is not None:
        model.config.use_cache = True  # trainers switch the KV cache off; users of the saved model want it
    from steps.common.saved_model import sample_by_default

    sample_by_default(model)
    main = trainer.accelerator.is_main_process
    if model is trainer.model:
        trainer.save_model(str(job.out))  # called by every process (sharded weights are gathered); rank 0 writes
    elif main:
        model.save_pretrained(str(job.out))
    if main:
        job.tokenizer.save_pretrained(str(job.out))
    trainer.accelerator.wait_for_everyone()  # no process reads the model, or exits, before it is whole


def is_main_process() -> bool:
    """Rank 0 under `accelerate launch` (torchrun sets RANK), or the step's own process."""
    return int(os.environ.get("RANK", "0")) == 0


def batch_note(summary: dict[str, Any]) -> str:
    """The run summary's line: the global batch and what makes it."""
    n = summary["num_processes"]
    return (f"global batch {summary['global_batch']} = {summary['per_device_batch']} per device × {n} "
            f"process{'es' if n > 1 else ''} × {summary['gradient_accumulation_steps']} accumulation")


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


# ============================================================================ the step base

class TrainStep(Step):
    """Base of the trl steps: resolve the model, map the rows, write the job, run `train(job)` of
    the step's module here or under `accelerate launch`, then report. Subclasses set Config
    and `rows`, and may extend `report`."""

    inputs = {"data": Dataset, "model": In(Model, required=False)}
    outputs = {"model": Model, "report": Report}
    deterministic = False  # thread scheduling makes float reductions differ between runs

    def rows(self, ctx, chat: bool) -> list[dict[str, Any]]:
        raise NotImplementedError

    def run(self, ctx) -> None:
        cfg = self.config
        step = self.name
        model_path = resolve_model(ctx, cfg, who=step)
        if ctx.inputs.get("model") is not None:
            require_model_dir(step, model_path)
        tok = load_tokenizer(step, model_path)
        chat = bool(getattr(tok, "chat_template", None))
        rows = self.rows(ctx, chat)
        job_dir = ctx.scratch / "job"
        job_dir.mkdir(parents=True, exist_ok=True)
        data_path = job_dir / "train.jsonl"
        data_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        job = {"module": type(self).__module__, "step": step, "model": model_path, "data": str(data_path),
               "checkpoints": str(ctx.scratch / "checkpoints"), "out": str(ctx.out("model")),
               "summary": str(job_dir / "summary.json"), "seed": ctx.seed,
               "config": cfg.model_dump(mode="json")}
        ctx.log.info("%s: %d training rows, model %s, chat format %s", step, len(rows), model_path, chat)
        if cfg.launch is not None:
            summary = launch_job(ctx, job, cfg.launch, job_dir)
        else:
            from steps.common.progress import training_progress

            with training_progress(ctx):
                summary = run_job(job, ctx.log)
        ctx.note(batch_note(summary))
        self.report(ctx, summary)

    def report(self, ctx, summary: dict[str, Any]) -> None:
        history = summary.pop("log_history", [])
        out = ctx.out("report")
        plot_curves(out / "loss.png", history, ["loss"], f"{self.name} training loss")
        final = {k: v for k, v in summary.items() if k not in ("outcomes",)}
        ctx.write_metrics("report", {**final, "log_history": history})
        (out / "log_history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))


def run_job(job: dict[str, Any], log) -> dict[str, Any]:
    """Run the job's trainer: `train(job, log)` of the step's own module; rank 0 writes the summary."""
    summary = importlib.import_module(job["module"]).train(job, log)
    if is_main_process():
        Path(job["summary"]).write_text(json.dumps(summary, default=str, indent=1))
    return summary


def launch_job(ctx, job: dict[str, Any], launch: LaunchSettings, job_dir: Path) -> dict[str, Any]:
    """Run the job in `launch.num_processes` processes; their output goes to the step's log, and
    what rank 0 writes (progress, summary, the error of a failed job) comes back to the step."""
    import torch

    cpu = "--cpu" in launch.extra or not torch.cuda.is_available()
    job.update(progress=str(job_dir / "progress.json"), error=str(job_dir / "error.txt"))
    Path(job["error"]).unlink(missing_ok=True)
    job_path = job_dir / "job.json"
    job_path.write_text(json.dumps(job, indent=1))
    cmd = launch_command(job_path, launch, cpu=cpu, port=free_port(launch))
    ctx.log.info("launching: %s", " ".join(cmd))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""} if cpu else None  # --cpu on a GPU machine: hide them
    status = ctx.run_process(cmd, progress=Path(job["progress"]), cwd=str(Path(__file__).resolve().parents[2]),
                             env=env)
    if status != 0:
        error = Path(job["error"])
        raise StepError(error.read_text() if error.exists()
                        else f"{job['step']}: accelerate launch exited with status {status}; see the step log")
    return json.loads(Path(job["summary"]).read_text())


def launch_command(job_path: Path, launch: LaunchSettings, *, cpu: bool = False, port: int | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(launch.num_processes)]
    extra = list(launch.extra)
    if cpu:
        # accelerate's `--cpu` starts ONE process (its multi-CPU path needs MPI); its multi-process
        # launcher (torchrun) starts them all, and each trains on the CPU over gloo (use_cpu)
        extra = [f for f in extra if f != "--cpu"]
        cmd.append("--multi_gpu")
    if launch.config_file:
        cmd += ["--config_file", launch.config_file]
    if port:
        cmd += ["--main_process_port", str(port)]
    return cmd + extra + ["-m", "steps.train.trl_common", str(job_path)]


def free_port(launch: LaunchSettings) -> int | None:
    """A free port for the processes' rendezvous on this machine, so two launches at once do not
    both take accelerate's default 29500; a config file or several machines name their own."""
    named = any(f.split("=")[0] in ("--main_process_port", "--num_machines") for f in launch.extra)
    if named or launch.config_file:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _main(argv: list[str]) -> int:
    """Entry point for `accelerate launch -m steps.train.trl_common JOB.json` (one process per device)."""
    import logging

    from engine.run.context import FileProgress
    from steps.common.progress import training_progress

    logging.basicConfig(level=logging.INFO)
    os.environ["ACCELERATE_MIXED_PRECISION"] = "no"  # `precision` decides (common_args), not a config file
    job = json.loads(Path(argv[0]).read_text())
    log = logging.getLogger("steps.train.trl_common")
    try:
        if is_main_process():  # rank 0 reports the progress, through a file the step reads
            with training_progress(FileProgress(job["progress"])):
                run_job(job, log)
        else:
            run_job(job, log)
    except Exception as e:
        if is_main_process():  # the step's error: one line (a traceback, if any, is in the log)
            Path(job["error"]).write_text(str(e) if isinstance(e, StepError)
                                          else f"{job['step']}: {type(e).__name__}: {e}")
        if not isinstance(e, StepError):
            raise
        log.error("%s", e)
        return 1
    leave_process_group()
    return 0


def leave_process_group() -> None:
    """Leave the processes' group before exiting, once every process is done: torn down at
    interpreter exit instead, gloo's threads now and then abort a process ("terminate called
    without an active exception", SIGABRT) after a finished job, and the launch fails."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    if _main(sys.argv[1:]):
        raise SystemExit(1)  # the usual exit: a process that ends at once gets rank 0 killed before it writes the error
    # A finished job, written, the group left: exit without the interpreter's and C++'s teardown,
    # where a thread of gloo's or the store's still aborted a process now and then ("terminate
    # called without an active exception", after the model was saved), failing the launch.
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
