"""Text generation backends behind one interface (see `base.py`). Nothing heavy is imported
until `load_backend` is called."""
from __future__ import annotations

from .base import Backend, BackendConfig, Completion, Prompt, Sampling


def load_backend(config: BackendConfig, model: str) -> Backend:
    """`model` is a local model directory or a Hub id (or, for openai, the served model name)."""
    if config.kind == "transformers":
        from .hf import TransformersBackend

        return TransformersBackend(config, model)
    if config.kind == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend(config, model)
    if config.kind == "openai":
        from .openai_http import OpenAIBackend

        return OpenAIBackend(config, model)
    raise ValueError(f"unknown backend kind {config.kind!r}")


__all__ = ["Backend", "BackendConfig", "Completion", "Prompt", "Sampling", "load_backend"]
