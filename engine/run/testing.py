"""Run a single step in a test without a recipe:

    from engine.run.testing import run_step
    out = run_step("problems.arithmetic", {"count": 10, "seed": 1}, workdir=tmp_path)
    rows = out["problems"].read()

Inputs are artifacts or plain paths (wrapped in the slot's declared type).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from engine.recipe import step as step_registry

from .step_process import execute, validate_config


def run_step(uses: str, config: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None,
             *, workdir: str | Path, scratch: str | Path | None = None):
    step_cls = step_registry.get(uses)
    cfg = validate_config(step_cls, config or {})
    slots = step_cls.input_slots()
    bound: dict[str, Any] = {}
    for name, slot in slots.items():
        value = (inputs or {}).get(name)
        if value is None:
            bound[name] = [] if slot.many else None
        elif slot.many:
            bound[name] = [v if hasattr(v, "path") else slot.type(v) for v in value]
        else:
            bound[name] = value if hasattr(value, "path") else slot.type(value)
    workdir = Path(workdir)
    key = hashlib.sha256(json.dumps([uses, cfg.model_dump(mode="json")], sort_keys=True,
                                    default=str).encode()).hexdigest()
    outputs = execute(step_cls, cfg, bound, workdir / "out", Path(scratch or workdir / "scratch"),
                      key=key, label=uses, log_path=workdir / "step.log")
    step_cls(cfg).place(outputs)  # as the runner does after every run
    return outputs
