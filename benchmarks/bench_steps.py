"""Step types for the scheduling benchmarks (loaded with RECIPE_STEP_MODULES=bench_steps)."""
from __future__ import annotations

import time

from engine.recipe.artifact_types import Dataset
from engine.recipe.step import Step, StepConfig, register


def busy(seconds: float) -> int:
    """Pure-Python CPU work for about `seconds` (holds the GIL the whole time)."""
    end, n = time.process_time() + seconds, 0
    while time.process_time() < end:
        n += sum(i * i for i in range(1000)) % 7
    return n


@register("bench.busy")
class Busy(Step):
    """`seconds` of CPU work, then one row."""

    class Config(StepConfig):
        seconds: float = 5.0
        tag: str = ""

    outputs = {"data": Dataset}

    def run(self, ctx) -> None:
        ctx.write_dataset("data", [{"tag": self.config.tag, "n": busy(self.config.seconds)}])
