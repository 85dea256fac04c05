"""A Trainer callback that sets torch's CPU threads step by step from measured step times
(steps.common.threads.ThreadTuner), for training on CPU when RECIPE_CPU_THREADS is unset."""
from __future__ import annotations

import os
import time

from steps.common.threads import ThreadTuner, usable_cores


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
