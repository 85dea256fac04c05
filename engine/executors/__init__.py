"""Executors run a step's work where its resources are: `local` (this machine; `-j N` is its
CPU budget) or `ray` (`--executor ray[=ADDRESS]`, a Ray cluster). They are interchangeable:
the executor is never part of a key, so both give the same keys and digests.

An executor offers
    capacity()                        the CPUs and GPUs the scheduler may hand out
    check(nodes)                      a RecipeError, before anything runs, for a node that can never fit
    submit(fn, *args, resources=...)  -> concurrent.futures.Future of fn(*args)
    close()
and its `name` tells a step's job how `ctx.map_shards` runs shards (in process, or as Ray tasks).
Only the ray executor imports ray, and only when chosen.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, Callable, Sequence

from ..errors import RecipeError
from ..plan import Node
from ..resources import Resources

EXECUTORS = "local, ray or ray=ADDRESS"


def make_executor(spec: str | None, jobs: int = 1):
    """`local`, `ray` (start Ray on this machine, or join RAY_ADDRESS) or `ray=ADDRESS`."""
    name, _, address = (spec or "local").strip().partition("=")
    if name == "local" and not address:
        from .local import LocalExecutor

        return LocalExecutor(jobs)
    if name == "ray":
        from .ray import RayExecutor

        return RayExecutor(address or None, jobs)
    raise RecipeError(f"unknown executor {spec!r}; expected {EXECUTORS}")


def check_fits(nodes: Sequence[Node], capacity: Resources, executor: str, cpus_too: bool) -> None:
    """A step that asks for more than the executor will ever have fails now, not by hanging."""
    for n in nodes:
        r = n.resources
        if r.gpus > capacity.gpus or (cpus_too and r.cpus > capacity.cpus):
            have = f"{capacity.gpus:g} GPU(s)" if r.gpus > capacity.gpus else f"{capacity.cpus:g} CPU(s)"
            raise RecipeError(f"step {n.label} asks for {r}, but the {executor} executor has {have}; "
                              f"lower `resources:` of the step or run it where there are enough", n.where)


def in_thread(fn: Callable[..., Any], *args: Any) -> Future:
    """Run fn(*args) in a daemon thread: an interrupted driver exits at once, leaving no entry
    (the thread's step never reaches its commit) and its scratch for the rerun to resume."""
    fut: Future = Future()
    fut.set_running_or_notify_cancel()

    def body() -> None:
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
            fut.set_exception(e)

    threading.Thread(target=body, daemon=True).start()
    return fut
