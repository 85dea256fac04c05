"""The local executor: this machine. `-j N` is the CPU budget the scheduler hands out.

With `-j 1` a step runs in the driver's process (one step at a time, nothing to gain from
another process). With `-j N > 1` each started step runs in its own process, forked from a
forkserver, so that N pure-Python steps use N cores; its progress bar is relayed back over a
pipe. GPUs are the ones CUDA would see.
"""
from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import Future
from multiprocessing import forkserver
from typing import Any, Callable

from engine.recipe.resources import Resources, local_gpus
from engine.run.context import Bar
from engine.run.step_process import Hooks, StepFailed, StepJob

from .base import Executor


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, jobs: int = 1, processes: bool | None = None):
        self.jobs = max(1, jobs)
        self.processes = self.jobs > 1 if processes is None else processes
        if self.processes:
            prestart()

    def capacity(self) -> Resources:
        return Resources(cpus=self.jobs, gpus=local_gpus())

    def submit(self, fn: Callable[..., Any], *args: Any, resources: Resources = Resources()) -> Future:
        """Runs fn now and waits for it, in the caller's thread (the scheduler already gave
        this step its own driver thread and its share of the budget)."""
        fut: Future = Future()
        try:
            fut.set_result(in_child(fn, *args) if self.processes else fn(*args))
        except BaseException as e:  # noqa: BLE001 - raised again by fut.result()
            fut.set_exception(e)
        return fut


def in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a child process; a StepJob's progress comes back to its driver-side hooks."""
    mp = _forkserver()
    receive, send = mp.Pipe(duplex=False)
    from engine.run import capture

    child = mp.Process(target=_child, args=(fn, args, send, capture._verbose), daemon=True)
    child.start()
    send.close()
    hooks = args[0].hooks if args and isinstance(args[0], StepJob) else Hooks()
    try:
        while True:
            try:
                kind, *payload = receive.recv()
            except EOFError:
                child.join()
                raise StepFailed(f"the step's process died (exit code {child.exitcode})") from None
            if kind == "progress" and hooks.on_progress:
                bar = Bar(payload[2], payload[0], None)
                bar.done = payload[1]
                hooks.on_progress(bar)
            elif kind == "ok":
                return payload[0]
            elif kind == "error":
                raise payload[0]
    finally:
        receive.close()
        child.join(timeout=5)
        if child.is_alive():
            child.kill()


def prestart() -> None:
    """Start the forkserver (~0.4 s: a Python that imports the engine) in the background, so it
    is ready when the first step starts instead of delaying it."""
    threading.Thread(target=lambda: _forkserver() and forkserver.ensure_running(), daemon=True).start()


def _forkserver():
    mp = multiprocessing.get_context("forkserver")
    mp.set_forkserver_preload(["engine.run.step_process", "engine.run.executors.step_library"])
    return mp


def _child(fn: Callable[..., Any], args: tuple, conn, verbose: bool) -> None:
    from engine.run.capture import set_verbose

    set_verbose(verbose)  # `recipe run -v` streams step output from this process too
    if args and isinstance(args[0], StepJob):
        args[0].hooks = Hooks(on_progress=lambda bar: conn.send(("progress", bar.desc, bar.done, bar.total)))
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as e:  # noqa: BLE001 - run_job already made it one scrubbed line
        conn.send(("error", e if isinstance(e, Exception) else StepFailed(repr(e))))
    finally:
        conn.close()
