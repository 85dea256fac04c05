"""Batched greedy generation vs one prompt at a time, same model and prompts (target: >= 10x).

    nice -n 10 python -m pytest benchmarks/bench_generation.py --benchmark-only -q

The model is the quickstart-sized Llama (hidden 128, 2 layers, 4 heads, FFN 512, context 64)
with random weights and the project's own tokenizer; `min_new_tokens`-free greedy decoding,
so both modes generate the same tokens. Tokens/s is reported in `extra_info`.
"""
import pytest

from engine.run.testing import run_step
from steps.backends import BackendConfig, Sampling, load_backend

N_PROMPTS = 64
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("bench")
    data = run_step("problems.arithmetic", {"count": 500, "seed": 0}, workdir=d / "data")["problems"]
    tok_dir = run_step("tokenizer.train", {"vocab_size": 35, "hard_vocab_limit": False}, {"data": data},
                       workdir=d / "tok")["tokenizer"].path
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg)
    # never stop early: both modes must produce exactly NEW_TOKENS tokens per prompt
    model.generation_config = GenerationConfig(eos_token_id=None, pad_token_id=tok.pad_token_id)
    out = d / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    prompts = [[{"role": "user", "content": r["problem"]}] for r in data.read()[:N_PROMPTS]]
    return out, prompts


def _bench(benchmark, model_dir, batch_size):
    path, prompts = model_dir
    backend = load_backend(BackendConfig(batch_size=batch_size, device="cpu"), str(path))
    backend.eos_ids = []  # generate the full budget in both modes
    sampling = Sampling(max_new_tokens=NEW_TOKENS)
    outs = benchmark.pedantic(backend.generate, args=(prompts, sampling), rounds=3, iterations=1, warmup_rounds=1)
    tokens = len(prompts) * NEW_TOKENS
    benchmark.extra_info["tokens_per_second"] = round(tokens / benchmark.stats.stats.mean, 1)
    benchmark.extra_info["batch_size"] = batch_size
    assert all(c[0].finish_reason == "length" for c in outs)
    return outs


def test_generate_batched(benchmark, model_dir):
    _bench(benchmark, model_dir, batch_size=N_PROMPTS)


def test_generate_one_at_a_time(benchmark, model_dir):
    _bench(benchmark, model_dir, batch_size=1)
