"""Text generation backends behind one interface (see `base.py`), chosen by kind from a
registry (`registry.py`). Nothing heavy is imported until `load_backend` is called."""
from __future__ import annotations

from .base import Backend, BackendConfig, Completion, Prompt, Sampling
from .registry import backend_kind, backend_kinds, register_backend, unregister_backend


def load_backend(config: BackendConfig, model: str) -> Backend:
    """`model` is a local model directory or a Hub id (or, for openai, the served model name)."""
    return backend_kind(config.kind).load(config, model)


__all__ = ["Backend", "BackendConfig", "Completion", "Prompt", "Sampling", "backend_kind", "backend_kinds",
           "load_backend", "register_backend", "unregister_backend"]
