"""VLLMBackend's request/response mapping, tested at the `vllm` import boundary.

There is no GPU and no vllm in CI: a fake `vllm` module (LLM, SamplingParams and vLLM-shaped
RequestOutput/CompletionOutput/Logprob objects) is put into sys.modules, so these tests check
what the backend sends to vllm and how it reads vllm's answers, not vllm itself.
"""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from engine.recipe.artifact_types import write_records  # noqa: E402
from engine.recipe.errors import StepError  # noqa: E402
from engine.run.testing import run_step  # noqa: E402
from steps.backends import load_backend  # noqa: E402
from steps.backends.base import BackendConfig, Sampling  # noqa: E402


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str
    outputs: list[CompletionOutput] = field(default_factory=list)


class FakeTokenizer:
    chat_template = "{fake}"
    all_special_tokens = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    added_tokens_encoder = {"<|im_start|>": 151644, "<|im_end|>": 151645, "<|endoftext|>": 151643}
    unk_token_id = None

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert tokenize is False and add_generation_prompt is True
        body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return body + "<|im_start|>assistant\n"

    def convert_tokens_to_ids(self, t):
        return self.added_tokens_encoder.get(t)


def make_fake_vllm(script=None):
    """A `vllm` module whose LLM records its arguments; `script(prompt, params)` gives outputs."""
    mod = types.ModuleType("vllm")
    mod.created = []

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            self.kw = kw
            self.calls = []
            mod.created.append(self)

        def get_tokenizer(self):
            return FakeTokenizer()

        def generate(self, prompts, params, use_tqdm=True):
            self.calls.append((list(prompts), params, use_tqdm))
            out = []
            for i, p in enumerate(prompts):
                if script:
                    comps = script(p, params.kw)
                else:
                    n = params.kw["n"]
                    # vLLM may hand samples back in any order: index says which is which
                    comps = [CompletionOutput(k, f"sample {k} of {p[-12:]}", [7, 8], None, None, "stop")
                             for k in reversed(range(n))]
                out.append(RequestOutput(str(i), p, comps))
            return out

    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    return mod


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = make_fake_vllm()
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return mod


def test_engine_arguments_fake_vllm_boundary(fake_vllm):
    cfg = BackendConfig(kind="vllm", tensor_parallel_size=4, gpu_memory_utilization=0.85, max_model_len=8192,
                        dtype="bfloat16")
    b = load_backend(cfg, "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B")
    assert fake_vllm.created[0].kw == {
        "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.85, "max_model_len": 8192, "dtype": "bfloat16", "trust_remote_code": False,
    }
    b2 = load_backend(BackendConfig(kind="vllm"), "m")
    assert "max_model_len" not in fake_vllm.created[1].kw and "dtype" not in fake_vllm.created[1].kw
    assert b is not b2


def test_sampling_params_mapping_fake_vllm_boundary(fake_vllm):
    b = load_backend(BackendConfig(kind="vllm"), "m")
    b.generate(["x"], Sampling(temperature=0.8, top_p=0.95, max_new_tokens=300, stop=["<|im_end|>", "\n\n"],
                               n=5, seed=42, logprobs=True))
    prompts, params, use_tqdm = fake_vllm.created[0].calls[0]
    assert params.kw == {"n": 5, "temperature": 0.8, "top_p": 0.95, "max_tokens": 300, "seed": 42,
                         "skip_special_tokens": True, "stop": ["<|im_end|>", "\n\n"],
                         "stop_token_ids": [151645], "logprobs": 0}
    assert use_tqdm is False
    b.generate(["x"], Sampling(temperature=0.0, top_p=0.5))
    greedy = fake_vllm.created[0].calls[1][1].kw
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0 and "stop" not in greedy and "logprobs" not in greedy


def test_prompts_in_one_call_and_chat_rendered_fake_vllm_boundary(fake_vllm):
    b = load_backend(BackendConfig(kind="vllm"), "m")
    out = b.generate(["<|im_start|>user\n", [{"role": "user", "content": "What is 2+2?"}]],
                     Sampling(n=3, temperature=1))
    calls = fake_vllm.created[0].calls
    assert len(calls) == 1  # every prompt in one generate call
    assert calls[0][0] == ["<|im_start|>user\n",
                           "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"]
    # samples come back ordered by their index, whatever order vllm lists them in
    assert [[c.text for c in o] for o in out] == [[f"sample {k} of {p[-12:]}" for k in range(3)] for p in calls[0][0]]


def test_output_mapping_fake_vllm_boundary(monkeypatch):
    def script(prompt, kw):
        return [
            CompletionOutput(0, "done", [5, 6], -1.0, [{5: Logprob(-0.1), 9: Logprob(-3.0)}, {6: Logprob(-0.2)}],
                             "stop"),
            CompletionOutput(1, "cut", [5], -0.5, None, "length"),
            CompletionOutput(2, "", [], None, None, "abort"),
        ]

    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(script))
    b = load_backend(BackendConfig(kind="vllm"), "m")
    out = b.generate(["p"], Sampling(n=4, temperature=1.0))[0]
    assert (out[0].text, out[0].finish_reason, out[0].token_logprobs) == ("done", "stop", [-0.1, -0.2])
    assert (out[1].text, out[1].finish_reason, out[1].token_logprobs) == ("cut", "length", None)
    assert out[2].finish_reason == "error" and out[2].error == "vllm finished with 'abort'"
    assert out[3].finish_reason == "error" and out[3].error == "vllm returned fewer samples than n"


def test_candidates_step_runs_on_vllm_fake_vllm_boundary(fake_vllm, tmp_path):
    write_records(tmp_path / "p" / "data.jsonl", [{"id": "a", "instruction": "What is 1+1?"},
                                                  {"id": "b", "instruction": "What is 2+2?"}])
    out = run_step("generate.candidates", {"model": "Qwen/Qwen2.5-7B-Instruct", "backend": {"kind": "vllm"}},
                   {"problems": tmp_path / "p"}, workdir=tmp_path / "run")
    rows = out["candidates"].read()
    assert [len(r["responses"]) for r in rows] == [5, 5]
    assert all(len(set(r["responses"])) == 5 for r in rows)
    params = fake_vllm.created[0].calls[0][1].kw
    assert params["n"] == 5 and params["temperature"] == 0.8


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(StepError, match=r"pip install 'mathrecipe\[vllm\]'"):
        load_backend(BackendConfig(kind="vllm"), "m")


def test_step_modules_do_not_import_vllm_or_httpx():
    import subprocess

    code = ("import sys; from engine.recipe.step import load_all; load_all(); "
            "print(sorted(m for m in ('vllm', 'httpx', 'torch', 'transformers') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert res.returncode == 0, res.stderr
    assert "vllm" not in res.stdout and "httpx" not in res.stdout
