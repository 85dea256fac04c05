"""Text generation backends behind one interface (see `base.py`), chosen by kind from a
registry (`registry.py`). Nothing heavy is imported until `load_backend` is called."""
from __future__ import annotations

import json
from dataclasses import dataclass

from engine.recipe.resources import Resources

from .base import Backend, BackendConfig, Completion, Prompt, Sampling, vllm_on_cpu
from .registry import backend_kind, backend_kinds, register_backend, unregister_backend


def load_backend(config: BackendConfig, model: str) -> Backend:
    """`model` is a local model directory or a Hub id (or, for openai, the served model name)."""
    return backend_kind(config.kind).load(config, model)


@dataclass(frozen=True)
class BackendSpec:
    """A backend not loaded yet: what a generation step hands to `ctx.map_shards(setup=...)`.
    In process it is loaded once per step; on Ray each replica actor loads its own copy."""

    config: BackendConfig
    model: str

    def __call__(self) -> Backend:
        return load_backend(self.config, self.model)

    def replica_key(self, digests: dict[str, str]) -> tuple[str, str]:
        """What one replica loads, so that steps loading the same share replicas kept for the run
        (Ray): the kind and its settings (all but shard_size, which only cuts the rows), and the
        model by content digest where it is one of the step's inputs (`digests`: path -> digest),
        else by name."""
        settings = self.config.model_dump(include=set(backend_kind(self.config.kind).fields) - {"shard_size"})
        return json.dumps(settings, sort_keys=True), digests.get(self.model, self.model)

    def replica(self) -> Resources:
        """One replica: tensor_parallel_size GPUs for vLLM, one for transformers on CUDA (no CPU
        reserved beside them), else a CPU."""
        gpus = backend_gpus(self.config)
        return Resources(cpus=0 if gpus else 1, gpus=gpus)


def backend_gpus(config: BackendConfig) -> int:
    """The GPUs one loaded copy of this backend takes; what generation steps ask for by default."""
    if config.kind == "vllm":
        return 0 if vllm_on_cpu() else config.tensor_parallel_size
    return 1 if config.kind == "transformers" and config.device == "cuda" else 0


def backend_resources(*configs: BackendConfig) -> Resources:
    """A generation step's default `resources:`: one replica of its biggest backend."""
    return Resources(cpus=1, gpus=max((backend_gpus(c) for c in configs), default=0))


__all__ = ["Backend", "BackendConfig", "BackendSpec", "backend_resources", "Completion", "Prompt", "Sampling",
           "backend_kind", "backend_kinds", "load_backend", "register_backend", "unregister_backend"]
