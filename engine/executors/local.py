"""The local executor: this machine. `-j N` is the CPU budget the scheduler hands out; each
started step runs in its own driver thread (heavy steps spend their time in torch, numpy or
tokenizers, which release the GIL). GPUs are the ones CUDA would see."""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable, Sequence

from ..plan import Node
from ..resources import Resources, local_gpus
from . import check_fits


class LocalExecutor:
    name = "local"

    def __init__(self, jobs: int = 1):
        self.jobs = max(1, jobs)

    def capacity(self) -> Resources:
        return Resources(cpus=self.jobs, gpus=local_gpus())

    def check(self, nodes: Sequence[Node]) -> None:
        check_fits(nodes, self.capacity(), self.name, cpus_too=False)

    def submit(self, fn: Callable[..., Any], *args: Any, resources: Resources = Resources()) -> Future:
        """Runs fn now, in the caller's thread: the scheduler already gave this step its own
        thread and its share of the budget."""
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - raised again by fut.result()
            fut.set_exception(e)
        return fut

    def close(self) -> None:
        pass
