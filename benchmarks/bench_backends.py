"""Generation backend throughput (pytest-benchmark; not run by CI).

    python -m pytest benchmarks/bench_backends.py --benchmark-only -q -s

1. TransformersBackend: 64 prompts, greedy, 32 new tokens, on CPU with a tiny Llama —
   batched (batch_size 64) vs one prompt at a time (batch_size 1); tokens/s each, and the
   ratio (target >= 10x).
2. OpenAIBackend: 256 chat requests to the local FastAPI test server (20 ms per request, like
   an I/O-bound remote server) with concurrency 1 vs 16; requests/s each.

Figures go into the benchmark's extra_info and are printed with -s.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from steps.backends.base import BackendConfig, Sampling  # noqa: E402

RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from _tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("bench_model"), hidden=64, layers=2)


def _prompts(n: int) -> list:
    return [[{"role": "user", "content": f"What is {i % 9 + 1}+{i % 7 + 2}?"}] for i in range(n)]


def _tokens(backend, outs, budget: int) -> int:
    """Generated tokens: EOS is switched off, so every completion runs the full budget."""
    assert all(c.finish_reason == "length" for o in outs for c in o)
    return budget * sum(len(o) for o in outs)


@pytest.mark.parametrize("batch_size", [64, 1])
def test_transformers_tokens_per_second(benchmark, tiny_model, batch_size):
    import torch

    from steps.backends.hf import TransformersBackend

    torch.set_num_threads(1)  # a shared 2-core machine: keep both modes on equal footing
    backend = TransformersBackend(BackendConfig(device="cpu", batch_size=batch_size), tiny_model)
    # a random model stops at once; without EOS both modes generate exactly max_new_tokens
    backend.eos_ids = []
    backend.model.generation_config.eos_token_id = None
    prompts = _prompts(64)
    sampling = Sampling(temperature=0.0, max_new_tokens=32)
    backend.generate(prompts[:2], sampling)  # warm-up
    box = {}

    def run():
        t = time.perf_counter()
        box["outs"] = backend.generate(prompts, sampling)
        box["s"] = time.perf_counter() - t

    benchmark.pedantic(run, rounds=2, iterations=1)
    toks = _tokens(backend, box["outs"], sampling.max_new_tokens)
    rate = toks / box["s"]
    RESULTS[f"hf_bs{batch_size}"] = rate
    benchmark.extra_info.update(tokens=toks, tokens_per_s=round(rate, 1))
    print(f"\ntransformers batch_size={batch_size}: {toks} tokens in {box['s']:.2f}s = {rate:.0f} tokens/s")
    if "hf_bs64" in RESULTS and "hf_bs1" in RESULTS:
        ratio = RESULTS["hf_bs64"] / RESULTS["hf_bs1"]
        benchmark.extra_info["batched_over_single"] = round(ratio, 1)
        print(f"batched / one-at-a-time = {ratio:.1f}x")


@pytest.fixture(scope="module")
def server():
    from _openai_server import FakeOpenAIServer

    with FakeOpenAIServer(latency_s=0.02) as s:
        yield s


@pytest.mark.parametrize("concurrency", [16, 1])
def test_openai_requests_per_second(benchmark, server, concurrency):
    from steps.backends.openai_http import OpenAIBackend

    cfg = BackendConfig(kind="openai", base_url=server.base_url, concurrency=concurrency,
                        api_key_env="MATHRECIPE_BENCH_NO_KEY")
    backend = OpenAIBackend(cfg, "latency")
    prompts = _prompts(256 if concurrency > 1 else 64)
    box = {}

    def run():
        t = time.perf_counter()
        box["outs"] = backend.generate(prompts, Sampling())
        box["s"] = time.perf_counter() - t

    benchmark.pedantic(run, rounds=2, iterations=1)
    assert all(o[0].ok for o in box["outs"])
    rate = len(prompts) / box["s"]
    RESULTS[f"openai_c{concurrency}"] = rate
    benchmark.extra_info.update(requests=len(prompts), requests_per_s=round(rate, 1),
                                max_in_flight=server.max_in_flight)
    print(f"\nopenai concurrency={concurrency}: {len(prompts)} requests in {box['s']:.2f}s = {rate:.1f} req/s")
    if "openai_c16" in RESULTS and "openai_c1" in RESULTS:
        print(f"concurrency 16 / 1 = {RESULTS['openai_c16'] / RESULTS['openai_c1']:.1f}x")
