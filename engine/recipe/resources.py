"""What a step needs to run: `resources: {cpus: N, gpus: M}` in a recipe.

Resources shape scheduling only; they are never part of a key. A step type may declare its
own defaults (`Step.resources()`, e.g. a vLLM generation step asks for its tensor-parallel
GPUs); the recipe's `resources:` overrides them field by field.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RecipeError


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0

    def __add__(self, other: "Resources") -> "Resources":
        return Resources(self.cpus + other.cpus, self.gpus + other.gpus)

    def __sub__(self, other: "Resources") -> "Resources":
        return Resources(self.cpus - other.cpus, self.gpus - other.gpus)

    def fits(self, free: "Resources") -> bool:
        return self.cpus <= free.cpus + 1e-9 and self.gpus <= free.gpus + 1e-9

    def __str__(self) -> str:
        return f"cpus: {_num(self.cpus)}, gpus: {_num(self.gpus)}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def parse_resources(value: Any, where: str, base: Resources = Resources()) -> Resources:
    """`{cpus: 2, gpus: 1}` over the step type's defaults; anything else is a RecipeError."""
    if value is None:
        return base
    if not isinstance(value, dict):
        raise RecipeError(f"`resources` must be a mapping like {{cpus: 1, gpus: 0}}, found {value!r}", where)
    fields = dict(cpus=base.cpus, gpus=base.gpus)
    for k, v in value.items():
        if k not in fields:
            raise RecipeError(f"unknown resource {k!r}; expected cpus or gpus", where)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:  # NaN too
            raise RecipeError(f"resources.{k} must be a number >= 0, found {v!r}", where)
        fields[k] = float(v)
    return Resources(**fields)


def local_gpus() -> int:
    """GPUs this machine shows to CUDA, without importing torch (`recipe plan` stays fast)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len([p for p in Path("/dev").glob("nvidia[0-9]*")])
