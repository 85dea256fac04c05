"""q* sampling throughput vs single-model sampling, and the cost of each α method.

    python -m pytest benchmarks/bench_qstar.py --benchmark-only -q
    QSTAR_BENCH_MODEL_THETA=... QSTAR_BENCH_MODEL_T=... (two local Model dirs; default: tiny Llamas)

Every case samples the same prompts, batch and token budget through `sample_batch`; the
single-model case uses the same loop with one model (one forward per token), so the ratio
q*/single isolates the second forward plus the α math. tokens/s (best of 5 rounds: the CPU is shared) is printed per case.
"""  # noqa: E501
import os
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from steps.qstar.sample import load_pair, render_prompt, sample_batch  # noqa: E402

BATCH, NEW_TOKENS = 16, 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    theta, t = os.environ.get("QSTAR_BENCH_MODEL_THETA"), os.environ.get("QSTAR_BENCH_MODEL_T")
    if not (theta and t):
        from _tiny import make_tiny_model

        root = tmp_path_factory.mktemp("bench")
        theta = str(make_tiny_model(root / "theta", seed=0, hidden=128, layers=2, logit_scale=14.0))
        t = str(make_tiny_model(root / "t", seed=1, hidden=128, layers=2, logit_scale=14.0))
    tok, m_theta, m_t, vocab = load_pair(theta, t)
    prompts = [render_prompt(tok, f"What is {i}+{i + 3}?", None) for i in range(BATCH)]
    return tok, m_theta, m_t, vocab, prompts


def _run(setup, method, single=False):
    tok, m_theta, m_t, vocab, prompts = setup
    gen = torch.Generator().manual_seed(0)
    rows = sample_batch(tok, m_theta, None if single else m_t, vocab, prompts, method=method, alpha_value=0.5,
                        max_new_tokens=NEW_TOKENS, temperature=1.0, generator=gen, eos=[])
    return sum(r["num_tokens"] for r in rows)


@pytest.mark.parametrize("case", ["single", "fixed", "entropy", "kl_symmetry", "ess_balance"])
def test_tokens_per_second(benchmark, setup, case):
    t0 = time.perf_counter()
    tokens = benchmark.pedantic(_run, args=(setup, case, case == "single"), rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["tokens"] = tokens
    benchmark.extra_info["tokens_per_s"] = tokens / benchmark.stats.stats.min
    print(f"\n{case}: {tokens / benchmark.stats.stats.min:.0f} tokens/s ({time.perf_counter() - t0:.1f}s total)")
