"""Torch CPU threads for training by measured step times, not by model size: `ThreadTuner`
decides from the times of the loop's own steps, and `thread_tuning` is the Trainer callback
that applies it (training on CPU with RECIPE_CPU_THREADS unset; it starts on one thread).
`python benchmarks/bench_train_threads.py` shows where more threads pay on a machine."""
from __future__ import annotations

import os
import time


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cores_busy(want: int, own: int) -> bool:
    """Whether other work (the 1-minute load average less our own `own` threads) is more than one
    core beyond what `want` threads leave free. The average lags by a minute: one core of slack
    keeps a just-quiet machine from reading as busy."""
    return os.getloadavg()[0] - own > usable_cores() - want + 1


class ThreadTuner:
    """Thread count for a training loop by its own measured step times, not by model size.

    After `warmup` steps it times `window` steps on 1 thread, then `window` on `many`, keeps
    `many` only if its median step is under `margin` x one thread's, and probes again every
    `every` steps (other work on the machine comes and goes). A probe of `many` stops at its
    first step slower than `abort` x one thread's median (oversubscribed cores made 2 threads
    10-30x slower here), and is skipped while `busy(many, own threads)` says the cores are taken.
    """

    def __init__(self, many: int, busy=cores_busy, warmup: int = 3, window: int = 8, every: int = 100,
                 margin: float = 0.9, abort: float = 2.0):
        self.many, self.busy = many, busy
        self.window, self.every, self.margin, self.abort = window, every, margin, abort
        self.chosen = self.threads = 1  # between probes / for the next step
        self.probing, self.left = False, warmup
        self.times: list[float] = []
        self.medians: dict[int, float] = {}
        self.why = ""  # of the last choice

    def record(self, seconds: float) -> int:
        """Take the last step's time; return the thread count for the next step."""
        if not self.probing:
            self.left -= 1
            if self.left <= 0:
                self._probe(1)
            return self.threads
        self.times.append(seconds)
        if self.threads == self.many and seconds > self.abort * self.medians[1]:
            return self._decide(use_many=False, why=f"a step on {self.many} took {seconds / self.medians[1]:.1f}x")
        if len(self.times) < self.window:
            return self.threads
        self.medians[self.threads] = sorted(self.times)[len(self.times) // 2]
        if self.threads == self.many:
            return self._decide(use_many=self.medians[self.many] < self.margin * self.medians[1], why="medians")
        if self.busy(self.many, self.chosen):
            return self._decide(use_many=False, why=f"cores busy, {self.many} not tried")
        self._probe(self.many)
        return self.threads

    def _probe(self, threads: int) -> None:
        self.probing, self.threads, self.times = True, threads, []
        if threads == 1:
            self.medians = {}

    def _decide(self, use_many: bool, why: str) -> int:
        self.chosen = self.threads = self.many if use_many else 1
        self.why = why
        self.probing, self.left = False, self.every
        return self.threads


def thread_tuning(on_gpu: bool, log):
    """The callback, or None where threads stay as set (GPU, RECIPE_CPU_THREADS, one core)."""
    if on_gpu or os.environ.get("RECIPE_CPU_THREADS") or usable_cores() < 2:
        return None
    import torch
    from transformers import TrainerCallback

    class ThreadTuning(TrainerCallback):
        def __init__(self):
            self.tuner = ThreadTuner(usable_cores())
            self.t0 = 0.0

        def on_train_begin(self, args, state, control, **kw):
            torch.set_num_threads(self.tuner.threads)

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            probing = self.tuner.probing
            threads = self.tuner.record(time.perf_counter() - self.t0)
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            if probing and not self.tuner.probing:
                medians = ", ".join(f"{n}: {s * 1000:.0f} ms" for n, s in sorted(self.tuner.medians.items()))
                log.info("step %d: %d thread(s) from here (%s; median step by threads %s)", state.global_step,
                         threads, self.tuner.why, medians)

    return ThreadTuning()
