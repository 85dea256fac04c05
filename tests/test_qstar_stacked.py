"""π_θ and π_t run as one stacked forward (steps/qstar/stacked.py): the same logits as each
model's own transformers forward, step after step, for the architectures it takes; the models'
own forwards for those it does not."""
import pytest
import torch
from _tiny import make_tiny_model, make_tokenizer

from steps.qstar.sample import _own_forwards, _stacked_forward, load_pair, render_prompt, sample_batch
from steps.qstar.stacked import stack_of


def _qwen2(path, seed: int, tok):
    """A tiny Qwen2: biased q/k/v, an untied output layer, as many key/value heads as heads, and
    more output rows than tokens (as Qwen's own; its tokenizer class adds one token on loading)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok) + 14, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      tie_word_embeddings=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.model.layers:  # fresh biases are zero: make them count
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
        model.model.norm.weight.mul_(10.0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def models(request, tmp_path_factory):
    root, tok = tmp_path_factory.mktemp(request.param), make_tokenizer()
    if request.param == "llama":  # tied embeddings, 4 heads sharing 2 key/value heads
        paths = [make_tiny_model(root / f"m{s}", seed=s, logit_scale=14.0, tokenizer=tok) for s in (0, 1)]
    else:
        paths = [_qwen2(root / f"m{s}", s, tok) for s in (0, 1)]
    return load_pair(*map(str, paths))


def _logits_step_by_step(forward, tok, prompts, steps: int):
    """Both models' last-position logits for the prompts, then for `steps` tokens drawn greedily
    from π_θ (the same tokens fed to whichever forward is checked)."""
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    positions, out = (mask.cumsum(-1) - 1).clamp(min=0), []
    with torch.inference_mode():
        for _ in range(steps):
            logits = forward(ids, mask, positions)
            out.append(logits)
            ids = logits[0].argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(ids)], -1)
            positions = positions[:, -1:] + 1
    return out


@pytest.mark.parametrize("padded", [True, False])
def test_stacked_models_give_each_models_own_logits_at_every_step(models, padded):
    tok, theta, t, _ = models
    prompts = ([render_prompt(tok, "x" * k + "What is 1+1?", None) for k in (0, 3, 11)] if padded
               else [render_prompt(tok, f"What is {k}+1?", None) for k in (1, 2, 3)])
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    assert bool(enc["attention_mask"].all()) is not padded
    stack = stack_of((theta, t))
    assert stack is not None
    own = _logits_step_by_step(_own_forwards([theta, t], enc["attention_mask"]), tok, prompts, 6)
    stacked = _logits_step_by_step(_stacked_forward(stack, enc["input_ids"], enc["attention_mask"], 6), tok,
                                   prompts, 6)
    for a, b in zip(own, stacked):
        assert a.shape == b.shape == (2, 3, a.shape[-1])
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4)
    assert not torch.equal(own[0][0], own[0][1])  # two different models, each matched


def test_stacked_models_hold_their_weights_once(models):
    tok, theta, t, _ = models
    prompt = [render_prompt(tok, "What is 2+2?", None)]
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        before = theta(**enc).logits
    stack = stack_of((theta, t))
    layer = stack.layers[0]["qkv"]
    storage = layer.untyped_storage().data_ptr()
    for m in (theta, t):  # each model's q, k and v weights are views into the one stacked tensor
        attn = m.model.layers[0].self_attn
        assert {p.untyped_storage().data_ptr() for p in (attn.q_proj.weight, attn.v_proj.weight)} == {storage}
    with torch.inference_mode():
        torch.testing.assert_close(theta(**enc).logits, before, rtol=0, atol=0)  # and the model still works


def test_models_of_other_shapes_run_their_own_forwards(tmp_path):
    tok = make_tokenizer()
    paths = [make_tiny_model(tmp_path / "a", seed=0, hidden=32, tokenizer=tok),
             make_tiny_model(tmp_path / "b", seed=1, hidden=64, tokenizer=tok)]
    tok, theta, t, vocab = load_pair(*map(str, paths))
    assert stack_of((theta, t)) is None
    theta.register_forward_hook(lambda *a: calls.append(1))
    calls = []
    rows = sample_batch(tok, theta, t, vocab, [render_prompt(tok, "What is 1+1?", None)] * 2, method="kl_symmetry",
                        alpha_value=0.5, max_new_tokens=4, temperature=1.0, generator=torch.Generator().manual_seed(0),
                        eos=[])
    assert [r["num_tokens"] for r in rows] == [4, 4] and len(calls) == 4


def test_a_model_given_a_forward_hook_runs_its_own_forward(models):
    tok, theta, t, vocab = models
    assert stack_of((theta, t)) is not None  # built, and kept for these two models
    calls = []
    handle = theta.model.layers[1].mlp.register_forward_hook(lambda *a: calls.append(1))
    try:
        sample_batch(tok, theta, t, vocab, [render_prompt(tok, "What is 1+1?", None)], method="entropy",
                     alpha_value=0.5, max_new_tokens=3, temperature=0.0, generator=None, eos=[])
    finally:
        handle.remove()
    assert len(calls) == 3
