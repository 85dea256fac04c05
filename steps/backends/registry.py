"""Backend kinds by name: `backend: {kind: NAME}` in a step's config picks one.

A kind is a loader `(BackendConfig, model) -> Backend` plus the BackendConfig fields it reads;
the other kinds' fields do not apply to it (and stay out of step keys). Built-in kinds import
their heavy libraries only when loaded. Tests and plugins add kinds the same way:

    register_backend("scripted", lambda config, model: my_backend, fields=())
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

SHARED_FIELDS = ("kind", "shard_size")  # every kind: rows per checkpointed shard


@dataclass(frozen=True)
class BackendKind:
    name: str
    load: Callable[[Any, str], Any]
    fields: frozenset[str]


_KINDS: dict[str, BackendKind] = {}


def register_backend(name: str, load: Callable[[Any, str], Any], fields: Iterable[str] = ()) -> BackendKind:
    """Register (or replace) backend kind `name`; returns the kind it replaced, if any."""
    previous = _KINDS.get(name)
    _KINDS[name] = BackendKind(name, load, frozenset(SHARED_FIELDS) | frozenset(fields))
    return previous


def unregister_backend(name: str, previous: BackendKind | None = None) -> None:
    """Remove kind `name`, or put back `previous` (what `register_backend` returned)."""
    if previous is None:
        _KINDS.pop(name, None)
    else:
        _KINDS[name] = previous


def backend_kinds() -> list[str]:
    return list(_KINDS)


def backend_kind(name: str) -> BackendKind:
    if name not in _KINDS:  # a plugin's kind, in a process that has not imported it (a Ray replica)
        from engine.recipe.step import load_plugins

        load_plugins()
    if name not in _KINDS:
        raise ValueError(f"unknown backend kind {name!r}; expected one of {', '.join(_KINDS)}")
    return _KINDS[name]


def _transformers(config, model):
    from .hf import TransformersBackend

    return TransformersBackend(config, model)


def _vllm(config, model):
    from .vllm_backend import VLLMBackend

    return VLLMBackend(config, model)


def _openai(config, model):
    from .openai_http import OpenAIBackend

    return OpenAIBackend(config, model)


register_backend("transformers", _transformers, ("device", "dtype", "batch_size"))
register_backend("vllm", _vllm, ("dtype", "tensor_parallel_size", "gpu_memory_utilization", "max_model_len",
                                  "enforce_eager", "kv_cache_gib"))
register_backend("openai", _openai, ("base_url", "api_key_env", "concurrency", "timeout_s", "retries"))
