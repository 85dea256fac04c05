"""Training progress on the engine's bar: optimiser steps done of max_steps, and the latest loss.

A trainer step wraps its training in `training_progress(ctx)`; the code that builds the
transformers/trl Trainer then calls `add_progress(trainer)`. The callback finds the step's
context through a thread-local, so trainers that run in a subprocess (accelerate launch)
or outside a recipe simply get no bar.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_current = threading.local()


@contextmanager
def training_progress(ctx, desc: str = "training") -> Iterator[None]:
    """While this is open, trainers given `add_progress` report to a bar of `ctx`."""
    _current.open = (ctx, desc)
    try:
        yield
    finally:
        _current.open = None


def add_progress(trainer) -> None:
    """Attach the engine's progress callback to a transformers Trainer (no-op outside a step)."""
    opened = getattr(_current, "open", None)
    if opened:
        trainer.add_callback(make_callback(*opened))


def loss_text(logs: dict[str, Any]) -> str | None:
    loss = logs.get("loss")
    return f"loss {float(loss):.4g}" if isinstance(loss, (int, float)) else None


def make_callback(ctx, desc: str = "training"):
    from transformers import TrainerCallback

    class EngineProgress(TrainerCallback):
        """Steps done and the latest loss on the engine's bar (the Trainer's own are off)."""

        def __init__(self):
            self.bar, self._opened = None, None

        def on_train_begin(self, args, state, control, **kw):
            self._opened = ctx.progress(state.max_steps or None, desc)
            self.bar = self._opened.__enter__()
            self.bar.update(state.global_step)  # a resumed run starts part way

        def on_step_end(self, args, state, control, **kw):
            if self.bar:
                self.bar.update(state.global_step - self.bar.done)

        def on_log(self, args, state, control, logs=None, **kw):
            note = loss_text(logs or {})
            if self.bar and note:
                self.bar.desc = f"{desc}, {note}"
                self.bar.update(0)

        def on_train_end(self, args, state, control, **kw):
            if self._opened:
                self._opened.__exit__(None, None, None)
                self._opened = None

    return EngineProgress()
