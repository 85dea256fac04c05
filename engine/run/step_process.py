"""Run one step instance into a directory. The runner adds caching around this; tests of a
single step call it through `engine.run.testing.run_step`."""
from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.cache.digest import tree_files, tree_manifest
from engine.cache.names import shown, symlink_problem
from engine.cache.secrets import Redactor
from engine.recipe.artifact_types import Artifact, Dataset, Model, Tokenizer
from engine.recipe.errors import StepError
from engine.recipe.step import Step, StepConfig

from .capture import captured
from .context import NOTES_FILE, PROGRESS_FILE, Bar, Context, ProgressFile
from .faults import no_space
from .steplog import StepLog


def validate_config(step_cls: type[Step], config: dict[str, Any] | StepConfig) -> StepConfig:
    if isinstance(config, StepConfig):
        return config
    return step_cls.Config.model_validate(config)


def seed_for(config: StepConfig, key: str) -> int:
    seed = getattr(config, "seed", None)
    return int(seed) if isinstance(seed, int) else int(key[:8], 16)


def execute(
    step_cls: type[Step],
    config: StepConfig,
    inputs: dict[str, Any],
    outdir: Path,
    scratch: Path,
    *,
    key: str,
    label: str,
    log_path: Path,
    redactor: Redactor | None = None,
    on_progress: Callable[[Bar], None] | None = None,
    run_info: dict[str, Any] | None = None,
    shards: Any = None,
) -> dict[str, Artifact]:
    """Run the step; return its outputs as artifacts rooted in `outdir`.

    Raises StepError if the step leaves a declared output missing.
    """
    redactor = redactor or Redactor()
    outdir.mkdir(parents=True, exist_ok=True)
    log = StepLog(log_path)
    logger, handler = _step_logger(key, log, redactor)
    try:
        ctx = Context(config=config, inputs=inputs, outdir=outdir, scratch=scratch, seed=seed_for(config, key),
                      log=logger, redactor=redactor, on_progress=on_progress, step_name=label, run_info=run_info,
                      shards=shards)
        logger.info("step %s (%s v%s) starts", label, step_cls.name, step_cls.version)
        with captured(logger, log, redactor.scrub, label):  # library output to the log, not the terminal
            try:
                step_cls(config).run(ctx)
            finally:
                ctx.close()
        missing = [name for name in step_cls.outputs if not (outdir / name).exists()]
        if missing:
            raise StepError(f"{label}: step {step_cls.name} did not write output(s) {', '.join(missing)}")
        if why := output_problem(outdir):
            raise StepError(f"{label}: its output {why}; nothing was cached")
        if hollow := hollow_outputs(step_cls, outdir):
            raise StepError(f"{label}: output {', '.join(hollow)} holds no file with content; nothing was cached")
        check_not_empty(step_cls, config, inputs, outdir, label)
        logger.info("step %s finished", label)
    except Exception as e:
        # a full disk is no bug of the step's: its traceback would only hide the one line that says so
        logger.error("step %s failed: %s", label, e, exc_info=not isinstance(e, StepError) and not no_space(e))
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()
        log.close()  # cut to its bound
    return {name: typ(outdir / name) for name, typ in step_cls.outputs.items()}


def output_problem(outdir: Path) -> str | None:
    """What the digest walk must not meet in a step's outputs: an entry holds its content, so a
    link out of it (to /etc, to a file that changes; `recipe verify` would call it tampered) or a
    loop; and only plain files, as reading a FIFO waits forever for a writer."""
    if why := symlink_problem(outdir):
        return why
    for dirpath, _, filenames in os.walk(outdir):
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = shown(os.path.relpath(path, outdir))
            if not os.path.exists(path):
                return f"{rel} is a symlink to nothing"
            if not stat.S_ISREG(os.stat(path).st_mode):
                return f"{rel} is not a regular file (a FIFO, socket or device)"
    return None


def hollow_outputs(step_cls: type[Step], outdir: Path) -> list[str]:
    """Never silently empty: a Model or Tokenizer output without a byte in it (an empty folder,
    a 0-byte weights file) would only fail where it is loaded, steps later."""
    return [name for name, typ in step_cls.outputs.items()
            if issubclass(typ, (Model, Tokenizer)) and not any(f.stat().st_size for f in tree_files(outdir / name))]


def check_not_empty(step_cls: type[Step], config: StepConfig, inputs: dict[str, Any], outdir: Path,
                    label: str) -> None:
    """Never silently empty: a Dataset output with 0 rows fails the step (nothing is cached),
    unless the step declares it may be (`may_be_empty`) or the config says `allow_empty: true`.
    Where the step is allowed to be empty, its summary row says so."""
    empty = [name for name, typ in step_cls.outputs.items()
             if issubclass(typ, Dataset) and name not in step_cls.may_be_empty and typ(outdir / name).is_empty()]
    if not empty:
        return
    notes_path = outdir.parent / NOTES_FILE
    notes = json.loads(notes_path.read_text()) if notes_path.exists() else []
    outputs = f"output{'s' if len(empty) > 1 else ''} {', '.join(empty)}"
    if getattr(config, "allow_empty", False):
        notes_path.write_text(json.dumps(notes + [f"{outputs}: 0 rows (allow_empty)"]))
        return
    aside = [f"{name}: {n} rows" for name in step_cls.may_be_empty if (n := len(Dataset(outdir / name)))]
    why = "; ".join(notes) or ", ".join(aside + _input_rows(inputs))
    raise StepError(f"{label}: {outputs} ha{'ve' if len(empty) > 1 else 's'} 0 rows"
                    + (f" ({why})" if why else "")
                    + "; nothing was cached. Set `allow_empty: true` in the step's `with:` if empty is expected")


def _input_rows(inputs: dict[str, Any]) -> list[str]:
    """'input data: 300 rows' for each bound Dataset input: was the input empty, or did the step drop it all?"""
    counts = []
    for slot, value in inputs.items():
        arts = value if isinstance(value, list) else [value]
        if arts and all(isinstance(a, Dataset) for a in arts):
            counts.append(f"input {slot}: {sum(len(a) for a in arts)} rows")
    return counts


def _step_logger(key: str, log: StepLog, redactor: Redactor) -> tuple[logging.Logger, logging.Handler]:
    """A logger of its own writing to the step's log.txt, scrubbed, outside logging's registry:
    one per step instance would otherwise pile up there, and each setLevel walks them all."""
    logger = logging.Logger(f"mathrecipe.step.{key[:12]}", logging.INFO)
    logger.propagate = False
    handler = _StepLog(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(redactor)
    logger.addHandler(handler)
    return logger, handler


class _StepLog(logging.StreamHandler):
    """The step's log.txt. A write that fails (a full disk) is not printed as a traceback: the
    step's own error says what happened."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


@dataclass
class Hooks:
    """What only works in the driver's process: the live progress bar and the run's redactor."""

    redactor: Redactor | None = None
    on_progress: Callable[[Bar], None] | None = None


@dataclass
class StepJob:
    """Everything `execute` needs, picklable, so an executor can run it anywhere that sees the
    cache root. Its hooks stay behind when it travels to another process."""

    step_cls: type[Step]
    config: StepConfig
    inputs: dict[str, Any]
    staging: Path
    scratch: Path
    key: str
    label: str
    run_info: dict[str, Any] | None = None
    hooks: Hooks = field(default_factory=Hooks)
    shards: Any = None  # what runs ctx.map_shards's shards (`Executor.shard_runner`); None: this process
    progress_file: bool = False  # progress goes to a file in staging (the job runs where hooks do not reach)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "hooks": Hooks()}


def run_job(job: StepJob) -> dict[str, dict[str, Any]]:
    """Execute the step into `job.staging`; return its outputs' digest, size and type, and under
    "files" each file's stamp and digest (the runner seeds the stat cache with them).

    In another process, errors come back as StepError / StepFailed whose text went through
    the redactor there, where the secrets the step read are known."""
    redactor = job.hooks.redactor or Redactor()
    on_progress = job.hooks.on_progress
    if on_progress is None and job.progress_file:  # e.g. on a Ray worker: the driver reads it from a file
        on_progress = ProgressFile(job.staging / PROGRESS_FILE)
    try:
        execute(job.step_cls, job.config, job.inputs, job.staging / "outputs", job.scratch, key=job.key,
                label=job.label, log_path=job.staging / "log.txt", redactor=redactor,
                on_progress=on_progress, run_info=job.run_info, shards=job.shards)
    except Exception as e:
        if job.hooks.redactor is not None:  # in the driver: the runner describes and scrubs it
            raise
        cls = StepError if isinstance(e, StepError) else StepFailed
        raise cls(redactor.scrub(describe_error(e))) from None
    outputs = {}
    for name, typ in job.step_cls.outputs.items():
        p = job.staging / "outputs" / name
        digest, size, files = tree_manifest(p)
        outputs[name] = {"digest": digest, "size": size, "type": typ.kind, "files": files}
    return outputs


class StepFailed(Exception):
    """A step's unexpected exception, described and scrubbed where it happened."""


def describe_error(e: BaseException) -> str:
    """One line: a StepError's own text, or the exception type, message and where it was raised."""
    import traceback

    from pydantic import ValidationError

    if isinstance(e, (StepError, StepFailed)):
        return str(e)
    if isinstance(e, ValidationError):
        return f"invalid data: {e}"
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {e}{where}"
