"""The executor seam: where a step's work runs, behind one interface, and the registry that
`--executor NAME[=ADDRESS]` picks from.

An executor offers
    capacity()                        the CPUs and GPUs the scheduler may hand out
    check(nodes)                      a RecipeError, before anything runs, for a node that can never fit
    submit(fn, *args, resources=...)  -> concurrent.futures.Future of fn(*args)
    shard_runner(resources, inputs)   what runs the shards of `ctx.map_shards` inside a step's job
                                      (None: the job's own process, one shard after another)
    release_models(models)            no step still to run uses these models (input digests, names):
                                      replicas kept loaded for them may go (`keeps_replicas`)
    wait(future, staging, on_progress) the job's result; a `remote` executor's jobs report progress
                                      through a file in their staging folder meanwhile
    close()
Executors are interchangeable: the executor is never part of a key, so all give the same keys
and digests. A new one subclasses `Executor` and calls `register_executor`.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from engine.recipe.errors import RecipeError, did_you_mean
from engine.recipe.plan import Node
from engine.recipe.resources import Resources
from engine.run.context import PROGRESS_FILE, Bar, read_progress


class Executor(ABC):
    name: ClassVar[str]
    remote: ClassVar[bool] = False  # jobs run where the driver's hooks do not reach (another machine)
    counts_cpus: ClassVar[bool] = False  # check(): a step asking for more CPUs than there are is an error
    keeps_replicas: ClassVar[bool] = False  # model replicas outlive a step: tell it which models are done

    @classmethod
    def open(cls, address: str | None, jobs: int, log: Path | None = None) -> "Executor":
        """The executor for `--executor NAME[=ADDRESS]` and `-j JOBS`; `log`: where its own output
        goes (a file beside the run's record), not the run's output."""
        if address:
            raise RecipeError(f"the {cls.name} executor takes no address (got {cls.name}={address})")
        return cls(jobs)  # type: ignore[call-arg]

    @abstractmethod
    def capacity(self) -> Resources:
        """The CPUs and GPUs the scheduler may hand out."""

    def check(self, nodes: Sequence[Node]) -> None:
        check_fits(nodes, self.capacity(), self.name, self.counts_cpus)

    @abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any, resources: Resources = Resources()) -> Future:
        """fn(*args) where `resources` are free; a step's own errors come back as they were raised."""

    def shard_runner(self, resources: Resources, inputs: dict[str, Any] | None = None) -> Any:
        """What runs `ctx.map_shards` in a step's job (picklable: it travels with the job); None
        runs the shards in the job's process. `resources`: the step's, which its replicas share;
        `inputs`: its input artifacts (slot -> artifact or list)."""
        return None

    def release_models(self, models: Sequence[str]) -> None:
        """No step still to run uses these models (content digests of Model outputs, or names)."""

    def wait(self, fut: Future, staging: Path, on_progress: Callable[[Bar], None] | None) -> Any:
        """The job's result. A remote job writes its progress to a file in its staging folder,
        shown meanwhile and removed before the commit."""
        if not self.remote:
            return fut.result()
        progress = staging / PROGRESS_FILE

        def show() -> None:
            bar = read_progress(progress) if on_progress else None
            if bar is not None:
                on_progress(bar)
        try:
            while True:
                try:
                    return fut.result(timeout=0.5)
                except FutureTimeout:
                    show()
        finally:
            show()  # the last update, which may land after the last look
            progress.unlink(missing_ok=True)

    def close(self) -> None:
        pass


def check_fits(nodes: Sequence[Node], capacity: Resources, executor: str, cpus_too: bool) -> None:
    """A step that asks for more than the executor will ever have fails now, not by hanging."""
    for n in nodes:
        r = n.resources
        if r.gpus > capacity.gpus or (cpus_too and r.cpus > capacity.cpus):
            have = f"{capacity.gpus:g} GPU(s)" if r.gpus > capacity.gpus else f"{capacity.cpus:g} CPU(s)"
            raise RecipeError(f"step {n.label} asks for {r}, but the {executor} executor has {have}; "
                              f"lower `resources:` of the step or run it where there are enough", n.where)


_EXECUTORS: dict[str, tuple[type[Executor] | str, str]] = {}  # name -> (class or "module:Class", usage)


def register_executor(name: str, cls: type[Executor] | str, usage: str | None = None) -> None:
    """Make `--executor NAME` choose `cls`: a class, or "module:Class" to import only when chosen
    (ray's module imports ray). `usage` is how `--executor` names it in errors."""
    _EXECUTORS[name] = (cls, usage or name)


def check_executor(spec: str | None) -> tuple[str, str]:
    """(name, address) of `--executor NAME[=ADDRESS]` (default: local), its module not imported
    (`recipe plan` checks the name without importing ray)."""
    name, _, address = (spec or "local").strip().partition("=")
    if name not in _EXECUTORS:
        usages = [usage for _, usage in _EXECUTORS.values()]
        raise RecipeError(f"unknown executor {spec!r}; expected {', '.join(usages)}{did_you_mean(name, _EXECUTORS)}")
    return name, address


def make_executor(spec: str | None, jobs: int = 1, log: Path | None = None) -> Executor:
    """The executor for `--executor NAME[=ADDRESS]` (default: local); `log`: see Executor.open."""
    name, address = check_executor(spec)
    cls = _EXECUTORS[name][0]
    if isinstance(cls, str):
        module, _, attr = cls.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    return cls.open(address or None, jobs, log)


register_executor("local", "engine.run.executors.local:LocalExecutor")
register_executor("ray", "engine.run.executors.ray:RayExecutor", "ray or ray=ADDRESS")
