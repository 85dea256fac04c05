"""π_θ and π_t run as one batched forward: their weights stacked, every op done once for both.

A small model's forward step on CPU is mostly per-op overhead (the benchmark's 2-layer,
hidden-128 Llamas: 1.5 ms a step of 16 rows through transformers, for some 12 MFLOP of work), so
two models' separate forwards cost twice one and q* could not pass half a model's tokens/s.
Stacked (`[M, out, in]`, M = 1 or 2 models) each projection is one `bmm` for both models (q, k
and v fused into one, gate and up into one), the rotary tables are computed once per batch, the
KV cache is one preallocated tensor and the padding mask is built once per step for all layers.

It applies to Llama-shaped decoders (`llama`, `qwen2`) of identical shapes on CPU, with a static
rotary embedding, no sliding window and no forward hooks; anything else (`stack_of` returns
None) runs each model's own transformers forward. The maths is transformers' (RMSNorm in float32,
rotate-half RoPE, SDPA, SiLU gate): logits agree with the models' own to float rounding
(`tests/test_qstar_stacked.py`). The models' parameters are re-pointed into the stacked tensors,
so the weights are held once.
"""
from __future__ import annotations

import weakref

ARCHITECTURES = ("llama", "qwen2")
STATIC_ROPE = ("default", "linear", "llama3")  # cos/sin depend on the position alone


def stack_of(models: tuple):
    """The models as one `Stacked`, or None where they cannot run as one. Built once per set of
    models, whose parameters become views into it (so in-place changes to a model reach the last
    stack built of it); hooks are looked for on every call, as they can be added at any time."""
    return None if any(_hooked(x) for m in models for x in m.modules()) else _stacked(models)


# first model -> [(weak references to the others, their Stacked or None)], its last two sets
# (π_θ with π_t, π_θ alone). Weak: a step that drops its models frees them and their stack (an
# lru_cache held both until the process ended: in a local run, through every later step).
_STACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _stacked(models: tuple):
    first, rest = models[0], models[1:]
    known = [(refs, s) for refs, s in _STACKS.get(first, []) if all(r() is not None for r in refs)]
    for refs, s in known:
        if len(refs) == len(rest) and all(r() is m for r, m in zip(refs, rest)):
            return s
    s = Stacked(models) if _stackable(models) else None
    _STACKS[first] = [*known[-1:], ([weakref.ref(m) for m in rest], s)]
    return s


def _stackable(models) -> bool:
    def signature(m):  # None for a model this module cannot run
        c, inner = m.config, getattr(m, "model", None)
        rotary = getattr(inner, "rotary_emb", None)
        if (c.model_type not in ARCHITECTURES or rotary is None or getattr(rotary, "rope_type", None) not in STATIC_ROPE
                or c.hidden_act not in ("silu", "swish") or getattr(c, "pretraining_tp", 1) != 1
                or getattr(c, "sliding_window", None) is not None and getattr(c, "use_sliding_window", True)
                or any(k != "full_attention" for k in getattr(c, "layer_types", None) or ())
                or getattr(m, "hf_quantizer", None) is not None):
            return None
        params = [(n, p.shape, p.dtype, p.device.type) for n, p in m.named_parameters()]
        return c.model_type, tuple(params), tuple(rotary.inv_freq.tolist()), rotary.attention_scaling

    first, *rest = map(signature, models)
    return first is not None and all(s == first for s in rest) and all(d == "cpu" for *_, d in first[1])


def _hooked(module) -> bool:
    """A module with forward hooks (accelerate's offloading, a user's probe) expects its forward run."""
    return bool(hasattr(module, "_hf_hook") or module._forward_hooks or module._forward_pre_hooks)


def _stack(per_model: list[list]):
    """`[M, Σ rows, ...]` from each model's tensors laid end to end; each model's parameters then
    become views into it, so the weights are not held twice."""
    import torch

    if per_model[0][0] is None:  # no bias
        return None
    out = torch.stack([torch.cat([p.detach() for p in ps]) for ps in per_model])
    for i, ps in enumerate(per_model):
        row = 0
        for p in ps:
            p.data = out[i, row: row + len(p)]
            row += len(p)
    return out


class Stacked:
    """M models' decoder stacks as one; `forward` is one cached step for all of them."""

    def __init__(self, models):
        first = models[0]
        c = first.config
        self.n_heads, self.n_kv = c.num_attention_heads, c.num_key_value_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.rotary = first.model.rotary_emb
        self.layers = []
        for ls in zip(*(m.model.layers for m in models)):
            attn, mlp = [x.self_attn for x in ls], [x.mlp for x in ls]
            self.layers.append({
                "ln1": _stack([[x.input_layernorm.weight] for x in ls]),
                "eps1": ls[0].input_layernorm.variance_epsilon,
                "qkv": _stack([[a.q_proj.weight, a.k_proj.weight, a.v_proj.weight] for a in attn]),
                "qkv_b": _stack([[a.q_proj.bias, a.k_proj.bias, a.v_proj.bias] for a in attn]),
                "o": _stack([[a.o_proj.weight] for a in attn]), "o_b": _stack([[a.o_proj.bias] for a in attn]),
                "scaling": getattr(attn[0], "scaling", self.head_dim ** -0.5),
                "ln2": _stack([[x.post_attention_layernorm.weight] for x in ls]),
                "eps2": ls[0].post_attention_layernorm.variance_epsilon,
                "gate_up": _stack([[f.gate_proj.weight, f.up_proj.weight] for f in mlp]),
                "gate_up_b": _stack([[f.gate_proj.bias, f.up_proj.bias] for f in mlp]),
                "down": _stack([[f.down_proj.weight] for f in mlp]),
                "down_b": _stack([[f.down_proj.bias] for f in mlp]),
            })
        tied = all(m.get_output_embeddings().weight is m.model.embed_tokens.weight for m in models)
        self.embed = _stack([[m.model.embed_tokens.weight] for m in models])
        self.head = self.embed if tied else _stack([[m.get_output_embeddings().weight] for m in models])
        self.head_b = None if tied else _stack([[m.get_output_embeddings().bias] for m in models])
        self.norm, self.norm_eps = _stack([[m.model.norm.weight] for m in models]), first.model.norm.variance_epsilon
        self.n = len(models)

    def start(self, batch: int, length: int) -> dict:
        """A fresh decoding state for `batch` rows of up to `length` tokens: the KV cache and the
        rotary tables (static: a position's cos/sin do not depend on the sequence)."""
        import torch

        pos = torch.arange(length)[None]
        cos, sin = self.rotary(self.embed.new_empty(0), pos)
        kv = self.embed.new_empty((len(self.layers), 2, self.n * batch, self.n_kv, length, self.head_dim))
        return {"kv": kv, "cos": cos[0], "sin": sin[0]}

    def forward(self, state: dict, ids, positions, mask, padded: bool):
        """Logits of each model at each row's last position, `[M, B, V]`, for new tokens `ids`
        `[B, T]` at `positions`, with the 2D attention `mask` over all tokens so far (left-padded
        rows when `padded`); writes their keys and values into `state`."""
        import torch

        M, (B, T) = self.n, ids.shape
        past = mask.shape[1] - T
        x = self.embed[:, ids.reshape(-1)]  # [M, B·T, H]
        cos, sin = state["cos"][positions][None, :, None], state["sin"][positions][None, :, None]  # [1, B, 1, T, d]
        keep = _attention_mask(mask, T, past, M) if padded else None
        half = self.head_dim // 2
        for i, layer in enumerate(self.layers):
            h = _rms(x, layer["ln1"], layer["eps1"])
            qkv = _linear(h, layer["qkv"], layer["qkv_b"]).view(M, B, T, -1, self.head_dim).transpose(2, 3)
            qk = qkv[:, :, : self.n_heads + self.n_kv]
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), -1) * sin  # rotate-half RoPE
            cache = state["kv"][i]
            cache[0, :, :, past: past + T] = qk[:, :, self.n_heads:].reshape(M * B, self.n_kv, T, -1)
            cache[1, :, :, past: past + T] = qkv[:, :, self.n_heads + self.n_kv:].reshape(M * B, self.n_kv, T, -1)
            a = torch.nn.functional.scaled_dot_product_attention(
                qk[:, :, : self.n_heads].reshape(M * B, self.n_heads, T, -1), cache[0, :, :, : past + T],
                cache[1, :, :, : past + T], attn_mask=keep, is_causal=keep is None and T > 1,  # T > 1: the prompt
                scale=layer["scaling"], enable_gqa=self.n_heads != self.n_kv)
            x = x + _linear(a.transpose(1, 2).reshape(M, B * T, -1), layer["o"], layer["o_b"])
            gate, up = _linear(_rms(x, layer["ln2"], layer["eps2"]), layer["gate_up"], layer["gate_up_b"]).chunk(2, -1)
            x = x + _linear(torch.nn.functional.silu(gate) * up, layer["down"], layer["down_b"])
        last = _rms(x.view(M, B, T, -1)[:, :, -1], self.norm, self.norm_eps)
        return _linear(last, self.head, self.head_b)


def _attention_mask(mask, T: int, past: int, M: int):
    """`[M·B, 1, T, past+T]` bool: a query sees the real keys up to its own position (a padding
    query sees none: SDPA gives it zeros, and no real query reads it)."""
    import torch

    keep = mask.bool()[:, None, None, :]
    if T > 1:
        keep = keep & (torch.arange(past + T)[None] <= torch.arange(T)[:, None] + past)
    return keep.repeat(M, 1, 1, 1) if M > 1 else keep


def _rms(x, weight, eps: float):
    """transformers' RMSNorm (in float32, then back to the weights' dtype) for all models."""
    import torch

    xf = x.float()
    return weight[:, None] * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(weight.dtype)


def _linear(x, weight, bias):
    """`x @ weightᵀ (+ bias)` per model: x `[M, N, in]`, weight `[M, out, in]`."""
    import torch

    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias[:, None], x, weight.transpose(1, 2))
