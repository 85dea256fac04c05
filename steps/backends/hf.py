"""The transformers backend: batched `model.generate` with left padding and a KV cache.

CPU or CUDA, any causal LM directory or Hub id. Prompts are sorted by length and generated
in batches of `config.batch_size`; a chat message list is rendered with the tokenizer's chat
template (generation prompt added). Greedy when `temperature == 0` (the n copies of a prompt
are then identical and computed once); otherwise `n` independent samples per prompt, drawn
from a torch generator seeded with `sampling.seed`, so a rerun gives the same text.
Stop strings are cut from the returned text (as vLLM and OpenAI do); `finish_reason` is
"length" when the token budget ran out first.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from engine.recipe.errors import StepError
from steps.common.models import load_pretrained, load_tokenizer_of
from steps.common.threads import SMALL_MODEL_PARAMS, cpu_threads

from .base import Backend, BackendConfig, Completion, Prompt, Sampling


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise StepError(f"backend.device: {name!r} requested but no CUDA device is available; use device: cpu or auto")
    return name


def _resolve_dtype(name: str, device: str):
    import torch

    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise StepError(f"backend.dtype: unknown dtype {name!r}; expected auto, float32, bfloat16 or float16")
    return dtype


class TransformersBackend(Backend):
    def __init__(self, config: BackendConfig, model: str | Path):
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars would break the runner's display

        self.config = config
        self.model_name = str(model)
        looks_local = self.model_name.startswith((".", "/", "~")) or Path(self.model_name).exists()
        if looks_local and not (Path(self.model_name).expanduser() / "config.json").exists():
            raise StepError(
                f"backend: model path {self.model_name} is not a model directory (no config.json); "
                "expected a directory written by save_pretrained or a Hub id"
            )
        self.device = _resolve_device(config.device)
        dtype = _resolve_dtype(config.dtype, self.device)
        self.tokenizer = load_tokenizer_of("backend", self.model_name)
        self.model = load_pretrained("backend", "model", self.model_name, AutoModelForCausalLM.from_pretrained,
                                     dtype=dtype)
        rows = self.model.get_input_embeddings().weight.shape[0]
        if len(self.tokenizer) > rows:  # its top ids would index past the embedding mid-generation
            raise StepError(f"backend: model {self.model_name}: its tokenizer has {len(self.tokenizer)} tokens but "
                            f"the model's embedding only {rows} rows; the tokenizer does not belong to this model")
        self.model.to(self.device).eval()
        tok = self.tokenizer
        tok.padding_side = "left"  # decoder-only batches must be padded on the left
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = tok.eos_token_id
        self.eos_ids: list[int] = [i for i in (eos if isinstance(eos, list) else [eos]) if i is not None]
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self._torch = torch

    # ------------------------------------------------------------------ prompts
    def render(self, prompt: Prompt) -> tuple[str, bool]:
        """Text of the prompt and whether the tokenizer should still add its special tokens."""
        if isinstance(prompt, str):
            return prompt, True
        if not getattr(self.tokenizer, "chat_template", None):
            raise StepError(
                f"backend: model {self.model_name} has no chat template, so chat message prompts cannot be "
                "rendered; send plain-text prompts or use a model whose tokenizer has a chat_template"
            )
        text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return text, False  # the template already wrote BOS and friends

    def encode(self, prompt: Prompt) -> list[int]:
        text, add_special = self.render(prompt)
        return self.tokenizer(text, add_special_tokens=add_special)["input_ids"]

    # ------------------------------------------------------------------ generation
    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Completion]]:
        if not prompts:
            return []
        greedy = sampling.temperature <= 0
        encoded = [self.encode(p) for p in prompts]
        copies = 1 if greedy else max(1, sampling.n)
        results: dict[tuple[int, int], Completion] = {}
        # a prompt that fills the model's positions leaves no room to answer (and crashes a model with
        # learned positions, taking its whole batch along): it alone fails
        fits = [not self.max_positions or len(ids) < self.max_positions for ids in encoded]
        for i in (i for i, ok in enumerate(fits) if not ok):
            results.update({(i, k): Completion(text="", finish_reason="error", error=(
                f"prompt is {len(encoded[i])} tokens; the model takes at most {self.max_positions} positions"))
                for k in range(copies)})
        # one job per (prompt, sample); longest first so a batch holds similar lengths
        jobs = [(i, k) for i in range(len(prompts)) if fits[i] for k in range(copies)]
        jobs.sort(key=lambda j: -len(encoded[j[0]]))
        bs = max(1, self.config.batch_size)
        for b, start in enumerate(range(0, len(jobs), bs)):
            batch = jobs[start : start + bs]
            outs = self._generate_batch([encoded[i] for i, _ in batch], sampling, greedy, batch_seed=sampling.seed + b)
            for job, comp in zip(batch, outs):
                results[job] = comp
        return [
            [results[(i, 0 if greedy else k)] for k in range(max(1, sampling.n))]
            for i in range(len(prompts))
        ]

    def _generate_batch(self, ids: list[list[int]], sampling: Sampling, greedy: bool,
                        batch_seed: int) -> list[Completion]:
        torch = self._torch
        tok = self.tokenizer
        width = max(len(x) for x in ids)
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=self.device)
        attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device)
        budget = sampling.max_new_tokens
        if self.max_positions:  # a tiny model trained on 64 positions has nothing useful past them
            budget = max(1, min(budget, self.max_positions - width))
        kwargs: dict[str, Any] = dict(
            max_new_tokens=budget,
            pad_token_id=pad,
            eos_token_id=self.eos_ids or None,
            use_cache=True,
            return_dict_in_generate=True,
            output_logits=sampling.logprobs,
        )
        if greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=tok)
        if not greedy:
            torch.manual_seed(batch_seed)  # generate() samples from the global generator
            if self.device.startswith("cuda"):
                torch.cuda.manual_seed_all(batch_seed)
        with torch.inference_mode(), cpu_threads(self.parameters if self.device == "cpu" else SMALL_MODEL_PARAMS):
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        new = out.sequences[:, width:].tolist()
        logps = None
        if sampling.logprobs and out.logits:
            steps = torch.stack([l.float() for l in out.logits], dim=1).log_softmax(-1)  # batch, steps, vocab
            chosen = out.sequences[:, width:].unsqueeze(-1)
            logps = steps.gather(-1, chosen).squeeze(-1).tolist()
        return [self._finish(row, budget, sampling, logps[r] if logps else None) for r, row in enumerate(new)]

    def _finish(self, row: list[int], budget: int, sampling: Sampling, logps: list[float] | None) -> Completion:
        """Cut a generated row at EOS or the first stop string; decide the finish reason."""
        n = len(row)
        for j, t in enumerate(row):
            if t in self.eos_ids:
                n, reason = j, "stop"
                break
        else:
            reason = "length"
        row = row[:n]
        text = self.tokenizer.decode(row, skip_special_tokens=True)
        if sampling.stop:
            cut = min((text.find(s) for s in sampling.stop if s and s in text), default=-1)
            if cut >= 0:
                text, reason = text[:cut], "stop"
        if reason == "length" and len(row) < budget:
            reason = "stop"  # finished early without EOS (padding after a stop string)
        lp = None
        if logps is not None:
            lp = [v for v in logps[: len(row)] if not math.isnan(v)]
        return Completion(text=text, finish_reason=reason, token_logprobs=lp)

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
