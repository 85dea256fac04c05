"""The vLLM backend: the offline `vllm.LLM` engine on one or more GPUs.

vLLM is an optional extra (`pip install 'mathrecipe[vllm]'`) imported only here, only when a
step chooses `backend: {kind: vllm}`. All prompts of a call go to one `LLM.generate` so vLLM
schedules them together; `n` samples per prompt come from one request with `n=n`, which vLLM
draws independently (one sequence each), unlike Magpie's API path that reused one future.

Chat message prompts are rendered with the model's own chat template (through the engine's
tokenizer) before generation. Stop strings that are single special tokens of the tokenizer
(`<|eot_id|>`, `<|im_end|>`, `<｜Assistant｜>`) are also passed as stop token ids: vLLM drops
special tokens from the text it matches stop strings against, so the string alone never hits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.recipe.errors import StepError

from .base import Backend, BackendConfig, Completion, Prompt, Sampling


class VLLMBackend(Backend):
    def __init__(self, config: BackendConfig, model: str | Path):
        try:
            import vllm
        except ImportError:
            raise StepError(
                "backend: kind vllm needs the vllm package, which is not installed; "
                "pip install 'mathrecipe[vllm]' on a machine with a CUDA GPU, or use backend kind transformers"
            ) from None
        self._vllm = vllm
        self.config = config
        self.model_name = str(model)
        kwargs: dict[str, Any] = dict(
            model=self.model_name,
            tensor_parallel_size=config.tensor_parallel_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            trust_remote_code=False,
        )
        if config.max_model_len:
            kwargs["max_model_len"] = config.max_model_len
        if config.dtype != "auto":
            kwargs["dtype"] = config.dtype
        self.llm = vllm.LLM(**kwargs)
        self._tokenizer = None

    # ------------------------------------------------------------------ prompts
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self.llm.get_tokenizer()
        return self._tokenizer

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        if not getattr(self.tokenizer, "chat_template", None):
            raise StepError(
                f"backend: model {self.model_name} has no chat template, so chat message prompts cannot be "
                "rendered; send plain-text prompts or use a model whose tokenizer has a chat_template"
            )
        return self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)

    def stop_token_ids(self, stop: list[str]) -> list[int]:
        """Ids of the stop strings that are one special token each."""
        tok = self.tokenizer
        special = set(getattr(tok, "all_special_tokens", []) or [])
        special |= set((getattr(tok, "added_tokens_encoder", None) or {}).keys())
        ids = []
        for s in stop:
            if s in special:
                i = tok.convert_tokens_to_ids(s)
                if isinstance(i, int) and i >= 0 and i != getattr(tok, "unk_token_id", None):
                    ids.append(i)
        return ids

    def sampling_params(self, sampling: Sampling):
        greedy = sampling.temperature <= 0
        kw: dict[str, Any] = dict(
            n=max(1, sampling.n),
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            skip_special_tokens=True,
        )
        if sampling.stop:
            kw["stop"] = list(sampling.stop)
            ids = self.stop_token_ids(list(sampling.stop))
            if ids:
                kw["stop_token_ids"] = ids
        if sampling.logprobs:
            kw["logprobs"] = 0  # the sampled token's own log-prob only
        return self._vllm.SamplingParams(**kw)

    # ------------------------------------------------------------------ generation
    @staticmethod
    def to_completion(out: Any) -> Completion:
        """Map one vllm CompletionOutput to a Completion."""
        reason = getattr(out, "finish_reason", None)
        if reason not in ("stop", "length"):
            return Completion(text=out.text or "", finish_reason="error",
                              error=f"vllm finished with {reason!r}")
        lp = None
        if getattr(out, "logprobs", None):
            lp = []
            for tid, step in zip(out.token_ids, out.logprobs):
                entry = step.get(tid) if isinstance(step, dict) else None
                if entry is not None:
                    lp.append(float(getattr(entry, "logprob", entry)))
        return Completion(text=out.text, finish_reason=reason, token_logprobs=lp)

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Completion]]:
        if not prompts:
            return []
        texts = [self.render(p) for p in prompts]
        params = self.sampling_params(sampling)
        outputs = self.llm.generate(texts, params, use_tqdm=False)
        if len(outputs) != len(texts):
            raise RuntimeError(f"vllm returned {len(outputs)} outputs for {len(texts)} prompts")
        n = max(1, sampling.n)
        result = []
        for req in outputs:
            comps = [self.to_completion(o) for o in sorted(req.outputs, key=lambda o: getattr(o, "index", 0))]
            while len(comps) < n:  # an aborted request can come back short
                comps.append(Completion(text="", finish_reason="error", error="vllm returned fewer samples than n"))
            result.append(comps[:n])
        return result

    def close(self) -> None:
        self.llm = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass
