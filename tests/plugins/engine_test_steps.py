"""Step types the engine's tests load through RECIPE_STEP_MODULES (the same path a team's own
unpackaged step modules take). They exist to observe the engine: how often a step computes,
where a killed step resumes, what happens to a secret."""
from __future__ import annotations

import os
import time

from engine.recipe.artifact_types import Dataset, Report
from engine.recipe.errors import StepError
from engine.recipe.step import Step, StepConfig, register


@register("test.squares")
class Squares(Step):
    """Squares of 0..n-1, computed in checkpointed shards, `delay` seconds per shard."""

    version = "1"

    class Config(StepConfig):
        n: int = 20
        shard_size: int = 5
        delay: float = 0.0

    outputs = {"data": Dataset}

    def run(self, ctx) -> None:
        def shard(items):
            # one line per computed shard, so a test can see which shards ran in which process
            with open(os.environ["MR_TEST_TRACE"], "a") as f:
                f.write(f"{os.getpid()} shard {items[0]}\n")
            time.sleep(self.config.delay)
            return [{"i": i, "square": i * i} for i in items]

        rows = ctx.map_shards(list(range(self.config.n)), shard, self.config.shard_size, "squares")
        ctx.write_dataset("data", rows)


@register("test.count")
class Count(Step):
    """Copies its input and appends a line to $MR_TEST_TRACE each time it computes."""

    version = "1"

    class Config(StepConfig):
        tag: str = ""
        delay: float = 0.0

    inputs = {"data": Dataset}
    outputs = {"data": Dataset}

    def run(self, ctx) -> None:
        with open(os.environ["MR_TEST_TRACE"], "a") as f:
            f.write(f"{os.getpid()} count {self.config.tag}\n")
        time.sleep(self.config.delay)
        ctx.write_dataset("data", ctx.inputs["data"].rows())


@register("test.secret")
class Secret(Step):
    """Reads a secret, logs it, and fails with it in the message when asked to."""

    version = "1"

    class Config(StepConfig):
        env: str = "MR_TEST_TOKEN"
        fail: bool = False

    outputs = {"data": Dataset}

    def run(self, ctx) -> None:
        token = ctx.secret(self.config.env)
        ctx.log.info("authenticating with token %s", token)
        if self.config.fail:
            raise StepError(f"{ctx.step_name}: the server refused token {token}")
        ctx.write_dataset("data", [{"token_length": len(token)}])


@register("test.report")
class MakeReport(Step):
    """A Report with one metric (to check that a Report cannot feed a Dataset input)."""

    outputs = {"report": Report}

    def run(self, ctx) -> None:
        ctx.write_metrics("report", {"accuracy": 1.0})


@register("test.noisy")
class Noisy(Step):
    """Like a training step on another CPU: a new output on every computation."""

    deterministic = False

    outputs = {"data": Dataset}

    def run(self, ctx) -> None:
        ctx.write_dataset("data", [{"weights": os.urandom(8).hex()}])
