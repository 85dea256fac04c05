"""Run one step instance into a directory. The runner adds caching around this; tests of a
single step call it through `engine.testing.run_step`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from .artifacts import Artifact
from .capture import captured
from .context import Bar, Context
from .errors import StepError
from .secrets import Redactor
from .step import Step, StepConfig


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
) -> dict[str, Artifact]:
    """Run the step; return its outputs as artifacts rooted in `outdir`.

    Raises StepError if the step leaves a declared output missing.
    """
    redactor = redactor or Redactor()
    outdir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"mathrecipe.step.{key[:12]}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(redactor)
    logger.addHandler(handler)
    try:
        ctx = Context(
            config=config,
            inputs=inputs,
            outdir=outdir,
            scratch=scratch,
            seed=seed_for(config, key),
            log=logger,
            redactor=redactor,
            on_progress=on_progress,
            step_name=label,
            run_info=run_info,
        )
        logger.info("step %s (%s v%s) starts", label, step_cls.name, step_cls.version)
        with captured(logger, log_path, redactor.scrub):  # library output goes to the log, not the terminal
            step_cls(config).run(ctx)
        missing = [name for name in step_cls.outputs if not (outdir / name).exists()]
        if missing:
            raise StepError(f"{label}: step {step_cls.name} did not write output(s) {', '.join(missing)}")
        logger.info("step %s finished", label)
    except Exception as e:
        logger.error("step %s failed: %s", label, e, exc_info=not isinstance(e, StepError))
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()
    return {name: typ(outdir / name) for name, typ in step_cls.outputs.items()}

