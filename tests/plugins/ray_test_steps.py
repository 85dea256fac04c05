"""Step types for the Ray tests: each computed shard leaves a line in the trace file naming
the process and Ray node it ran on, so a test can kill exactly that worker or node."""
from __future__ import annotations

import os
import time

from engine.recipe.artifact_types import Dataset
from engine.recipe.errors import StepError
from engine.recipe.step import Step, StepConfig, register
from steps.backends import register_backend
from steps.backends.base import Backend, Completion, Sampling


def where() -> str:
    try:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    except ImportError:
        node = "local"
    return f"{os.getpid()} {node}"


def trace(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(f"{where()} {text}\n")


@register("raytest.squares")
class Squares(Step):
    """Squares of 0..n-1 in shards; `delay` seconds per shard; `fail_at` raises a StepError."""

    version = "1"

    class Config(StepConfig):
        n: int = 20
        shard_size: int = 5
        delay: float = 0.0
        trace: str
        fail_at: int = -1
        hold_lock: bool = False  # the shard function then cannot be pickled


    outputs = {"data": Dataset}

    def run(self, ctx) -> None:
        import threading

        c = self.config
        trace(c.trace, "step")
        lock = threading.Lock() if c.hold_lock else None

        def shard(items):
            if lock is not None:
                with lock:
                    pass
            trace(c.trace, f"start {items[0]}")
            if items[0] == c.fail_at:
                raise StepError(f"{ctx.step_name}: item {items[0]} is bad")
            time.sleep(c.delay)
            trace(c.trace, f"done {items[0]}")
            return [{"i": i, "square": i * i} for i in items]

        ctx.write_dataset("data", ctx.map_shards(list(range(c.n)), shard, c.shard_size, "squares"))


class Scaler:
    """A stand-in for a model: built once per replica by `setup`, then used shard after shard."""

    def __init__(self, factor: int, trace_path: str):
        trace(trace_path, "load")
        self.factor = factor


@register("raytest.scaled")
class Scaled(Step):
    """i * factor for 0..n-1, on replicas that each load their 'model' once."""

    version = "1"

    class Config(StepConfig):
        n: int = 20
        shard_size: int = 5
        factor: int = 3
        trace: str

    outputs = {"data": Dataset}

    def run(self, ctx) -> None:
        import functools

        c = self.config
        setup = functools.partial(Scaler, c.factor, c.trace)

        def shard(items, model):
            return [{"i": i, "scaled": i * model.factor} for i in items]

        ctx.write_dataset("data", ctx.map_shards(list(range(c.n)), shard, c.shard_size, "scaled", setup=setup))


@register("raytest.copy")
class Copy(Step):
    """Copies its input; leaves a `copy` line in the trace each time it computes."""

    version = "1"

    class Config(StepConfig):
        trace: str

    inputs = {"data": Dataset}
    outputs = {"data": Dataset}

    def run(self, ctx) -> None:
        trace(self.config.trace, "copy")
        ctx.write_dataset("data", ctx.inputs["data"].rows())


class TracedBackend(Backend):
    """Backend kind `traced`: each load leaves a line `load MODEL LIVE` in $RECIPE_TEST_TRACE (Ray
    workers get RECIPE_* variables); LIVE: the processes of other models' loads still alive,
    after waiting up to 10 s for them to end; each close a line `close MODEL`. Answers are a
    function of the prompt, so runs compare equal."""

    def __init__(self, model: str = "-"):
        path = os.environ["RECIPE_TEST_TRACE"]
        others = {int(x[0]) for x in _trace_lines(path) if x[2:3] == ["load"] and x[3:4] != [model]}
        end = time.time() + 10
        while others and time.time() < end:
            others = {p for p in others if _alive(p)}
            time.sleep(0.1)
        trace(path, f"load {model} {','.join(map(str, sorted(others))) or '-'}")
        self.model = model

    def close(self) -> None:
        trace(os.environ["RECIPE_TEST_TRACE"], f"close {self.model}")

    def generate(self, prompts, sampling):
        return [[Completion(text=f"{p[-1]['content'] if isinstance(p, list) else p} -> {k}") for k in range(sampling.n)]
                for p in prompts]


register_backend("traced", lambda config, model: TracedBackend(model))


def _trace_lines(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.split() for line in f]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    """Running (a killed process its parent has not reaped yet is gone too)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class TracedSetup:
    """A map_shards setup that loads the traced backend; equal to itself across calls."""

    def __call__(self) -> TracedBackend:
        return TracedBackend()


def _answers(items, backend) -> list:
    return [{"round": it["round"], "text": backend.generate([f"q{it['i']}"], Sampling())[0][0].text} for it in items]


@register("raytest.rounds")
class Rounds(Step):
    """Several map_shards calls with one setup, as magpie's rounds: loaded once per replica."""

    version = "1"
    uses_replicas = True

    class Config(StepConfig):
        rounds: int = 3

    outputs = {"data": Dataset}

    def run(self, ctx) -> None:
        setup, rows = TracedSetup(), []
        for r in range(self.config.rounds):
            items = [{"round": r, "i": i} for i in range(4)]
            rows += ctx.map_shards(items, _answers, shard_size=1, name=f"round{r}", setup=setup)
        ctx.write_dataset("data", rows)
