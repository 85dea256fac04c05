"""How many torch CPU threads a model gets (generation and training share this policy)."""
from __future__ import annotations

import os
from contextlib import contextmanager

SMALL_MODEL_PARAMS = 50_000_000


@contextmanager
def cpu_threads(parameters: int):
    """Torch CPU threads for a model of `parameters` weights, restored afterwards.

    Tiny models gain nothing from intra-op threads and lose badly when the cores are shared
    (measured here: 2 threads on a busy 2-core box were 10-30x slower than 1). So a model under
    50 M parameters runs on one thread unless RECIPE_CPU_THREADS says otherwise; larger models
    keep torch's default.
    """
    import torch

    env = os.environ.get("RECIPE_CPU_THREADS")
    want = int(env) if env else (1 if parameters < SMALL_MODEL_PARAMS else None)
    before = torch.get_num_threads()
    if want and want != before:
        torch.set_num_threads(want)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def model_threads(model, on_gpu: bool):
    """`cpu_threads` sized for `model` (on a GPU the CPU does little: keep torch's default)."""
    params = SMALL_MODEL_PARAMS if on_gpu else sum(p.numel() for p in model.parameters())
    return cpu_threads(params)
