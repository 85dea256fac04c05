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

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Sequence

from engine.recipe.errors import RecipeError
from engine.recipe.plan import Node
from engine.recipe.resources import Resources

EXECUTORS = "local, ray or ray=ADDRESS"


def make_executor(spec: str | None, jobs: int = 1, log=None):
    """`local`, `ray` (start Ray on this machine, or join RAY_ADDRESS) or `ray=ADDRESS`.
    `log`: where Ray's own output goes (a path under the run), not the run's output."""
    name, _, address = (spec or "local").strip().partition("=")
    if name == "local" and not address:
        from .local import LocalExecutor

        return LocalExecutor(jobs)
    if name == "ray":
        from .ray import RayExecutor

        return RayExecutor(address or None, jobs, log)
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
    (the thread's step never reaches its commit) and its scratch for the rerun to resume.
    Threads are reused: starting one cost as much as the engine's other work on a trivial step."""
    fut: Future = Future()
    fut.set_running_or_notify_cancel()
    with _idle_lock:
        inbox = _idle.pop() if _idle else None
    if inbox is None:
        inbox = queue.SimpleQueue()
        threading.Thread(target=_worker, args=(inbox,), daemon=True).start()
    inbox.put((fut, fn, args))
    return fut


_idle: list[queue.SimpleQueue] = []  # the inboxes of worker threads waiting for work
_idle_lock = threading.Lock()


def _worker(inbox: queue.SimpleQueue) -> None:
    while True:
        fut, fn, args = inbox.get()
        try:
            result, error = fn(*args), None
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
            result, error = None, e
        with _idle_lock:  # idle before the waiter wakes, so that the next step finds this thread
            _idle.append(inbox)
        if error is None:
            fut.set_result(result)
        else:
            fut.set_exception(error)
        del fut, fn, args, result, error  # nothing of a finished step kept alive by an idle thread
