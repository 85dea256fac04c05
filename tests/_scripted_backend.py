"""An in-process Backend with scripted answers and failures, for tests of the generation,
ranking and judging steps (the real backends have their own tests). Register it by name and
point a step's backend at it:

    loads = use_scripted_backend(monkeypatch, ScriptedBackend(...))   # registers kind "scripted"
    run_step("generate.responses", {"backend": SCRIPTED, ...}, ...)    # SCRIPTED = {"kind": "scripted"}
"""
from __future__ import annotations

import hashlib
from typing import Callable

from steps.backends.base import Backend, Completion, Prompt, Sampling


def prompt_text(p: Prompt) -> str:
    return p if isinstance(p, str) else p[-1]["content"]


class ScriptedBackend(Backend):
    """`answer(prompt_text, seed, k)` gives the k-th sample's text (default: a digest, so
    samples are distinct); `fail(prompt_text, attempt)` returns a Completion to send instead
    (an error, a length cut, an empty text) or None. `attempt` counts calls per prompt."""

    def __init__(self, answer: Callable[[str, int, int], str] | None = None,
                 fail: Callable[[str, int], Completion | None] | None = None,
                 interrupt_on_call: int | None = None):
        self.answer = answer or (
            lambda p, seed, k: f"answer {hashlib.sha256(f'{p}|{seed}|{k}'.encode()).hexdigest()[:8]}")
        self.fail = fail or (lambda p, attempt: None)
        self.calls: list[tuple[list[str], Sampling]] = []
        self.attempts: dict[str, int] = {}
        self.interrupt_on_call = interrupt_on_call
        self.closed = 0

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Completion]]:
        if self.interrupt_on_call is not None and len(self.calls) + 1 == self.interrupt_on_call:
            raise KeyboardInterrupt("killed mid-step (test)")
        texts = [prompt_text(p) for p in prompts]
        self.calls.append((texts, sampling))
        out = []
        for t in texts:
            a = self.attempts.get(t, 0)
            self.attempts[t] = a + 1
            comps = []
            for k in range(sampling.n):
                bad = self.fail(t, a)
                comps.append(bad if bad is not None else Completion(text=self.answer(t, sampling.seed, k)))
            out.append(comps)
        return out

    def close(self) -> None:
        self.closed += 1


SCRIPTED = {"kind": "scripted"}


def use_scripted_backend(monkeypatch, backend: Backend) -> list[tuple[object, str]]:
    """Register `backend` as backend kind "scripted" for this test; returns the (config, model)
    each load asked for."""
    from steps.backends import registry

    loads: list[tuple[object, str]] = []

    def load(cfg, model):
        loads.append((cfg, model))
        return backend

    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))  # restored after the test
    registry.register_backend("scripted", load)
    return loads
