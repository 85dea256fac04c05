"""q* sampling: token-by-token sampling from q ∝ π_θ^α · π_t^(1−α).

    qstar.sample   problems + two models sharing a tokenizer ->
                   samples      {"messages": [user, assistant], "sample_idx"}   (OpenAI chat format)
                   diagnostics  {"sample_idx", "alpha_mean", "ess_ratio_mean", "kl_theta_mean", "kl_t_mean",
                                 "kish_ess_theta", "kish_ess_t", ...}
    qstar.analyze  (analyze.py) diagnostics of one or more α methods -> Report with figures and the acceptance criteria

At each position both models run one cached forward step (on CPU, two Llama-shaped models of
one shape run it as one stacked forward: stacked.py); their logits are cut to
`len(tokenizer)`, turned into float32 log-probs, α is chosen per row (steps/qstar/alpha.py),
and the next token is drawn from softmax(log_softmax(α·lp + (1−α)·lt) / temperature).
Per-sequence importance log-weights log π/q_sampled are summed over the tokens, and the Kish
ESS over the n samples of one prompt says how usable the samples are for estimating under
each model.
"""
from __future__ import annotations

import functools
import hashlib
import time
from typing import Any, Literal

from engine.recipe.artifact_types import Dataset, Model
from engine.recipe.errors import StepError
from engine.recipe.resources import Resources
from engine.recipe.step import In, Step, StepConfig, register
from steps.common.chat import prompt
from steps.common.columns import PROMPT_COLUMNS, pick_column
from steps.common.models import require_model_dir, resolve_model
from steps.qstar.stacked import stack_of


class QStarSampleConfig(StepConfig):
    model_theta: str | None = None  # π_θ (current policy); a bound `model_theta` input wins
    model_t: str | None = None  # π_t (target policy); a bound `model_t` input wins
    alpha_method: Literal["fixed", "entropy", "kl_symmetry", "ess_balance"] = "kl_symmetry"
    alpha: float = 0.5  # the value for `fixed`
    num_samples: int | None = None  # prompts to use (first N); None = all
    n: int = 1  # samples per prompt
    max_new_tokens: int = 256
    temperature: float = 1.0  # applied to q; 0 = greedy under q
    batch_size: int = 8  # sequences per forward pass
    prompt_column: str | None = None  # default: the first of prompt | problem | instruction | question
    system_prompt: str | None = None
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto = bfloat16 on GPU, float32 on CPU; the q* math is float32 regardless
    shard_size: int = 64  # prompts per checkpointed shard
    seed: int = 0


# ============================================================================ model loading

def _model_path(ctx, cfg, which: str) -> str:
    path = resolve_model(ctx, cfg, slot=which, field=which, who="qstar.sample")
    return require_model_dir("qstar.sample", path, which) if ctx.inputs.get(which) is not None else path


def load_pair(theta_path: str, t_path: str, device: str = "auto", dtype: str = "auto"):
    """(tokenizer, π_θ, π_t, vocab size V) with the vocabularies checked identical."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def tok(path, which):
        try:
            return AutoTokenizer.from_pretrained(path)
        except Exception as e:  # noqa: BLE001
            raise StepError(f"qstar.sample: {which} {path}: cannot load its tokenizer "
                            f"({type(e).__name__}: {e})") from None

    tok_theta, tok_t = tok(theta_path, "model_theta"), tok(t_path, "model_t")
    if tok_theta.get_vocab() != tok_t.get_vocab():
        only_theta = len(set(tok_theta.get_vocab()) - set(tok_t.get_vocab()))
        only_t = len(set(tok_t.get_vocab()) - set(tok_theta.get_vocab()))
        raise StepError(
            f"qstar.sample: model_theta {theta_path} and model_t {t_path} do not share a tokenizer "
            f"({len(tok_theta)} vs {len(tok_t)} tokens; {only_theta} only in θ, {only_t} only in t, or ids differ); "
            "q* mixes next-token distributions and needs identical vocabularies")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    dt = {"auto": torch.bfloat16 if dev.startswith("cuda") else torch.float32, "float32": torch.float32,
          "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if dt is None:
        raise StepError(f"qstar.sample: dtype: {dtype!r}; expected auto, float32, bfloat16 or float16")

    def model(path, which):
        try:
            m = AutoModelForCausalLM.from_pretrained(path, dtype=dt)
        except Exception as e:  # noqa: BLE001
            raise StepError(f"qstar.sample: {which} {path}: cannot load it ({type(e).__name__}: {e})") from None
        return m.to(dev).eval()

    theta, t = model(theta_path, "model_theta"), model(t_path, "model_t")
    vocab = len(tok_theta)
    for m, which in ((theta, "model_theta"), (t, "model_t")):
        if m.get_output_embeddings().weight.shape[0] < vocab:
            raise StepError(f"qstar.sample: {which}: its output layer has {m.get_output_embeddings().weight.shape[0]} "
                            f"rows, fewer than the tokenizer's {vocab} tokens")
    if tok_theta.pad_token is None:
        tok_theta.pad_token = tok_theta.eos_token
    return tok_theta, theta, t, vocab


def eos_ids(tok, *models) -> list[int]:
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    for m in models:
        e = getattr(getattr(m, "generation_config", None), "eos_token_id", None)
        ids.update(e if isinstance(e, (list, tuple)) else ([e] if e is not None else []))
    return sorted(i for i in ids if i is not None)


def render_prompt(tok, text: str, system: str | None) -> str:
    chat = bool(getattr(tok, "chat_template", None))
    p = prompt(text, system, chat, plain_system=True)
    return tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if chat else p


# ============================================================================ the sampler

DIAGNOSTICS = ("alpha", "ess_ratio", "kl_theta", "kl_t", "kl_gap")
SUMS = ("log_w_theta", "log_w_t") + DIAGNOSTICS  # per-row sums over the tokens, in this order
# what each token leaves in the sampler's record (rows of one [len(RECORD), B] slice per token),
# from which the SUMS are formed after the last token instead of in a dozen small ops per token
RECORD = ("alpha", "psi", "psi_neg", "psi_two", "mean_ell", "lp_theta", "lp_t", "l_sample")


def sample_batch(tok, theta, t, vocab: int, prompts: list[str], *, method: str, alpha_value: float,
                 max_new_tokens: int, temperature: float, generator, eos: list[int],
                 stacked: bool = True) -> list[dict[str, Any]]:
    """q* samples for a batch of rendered prompts (one row per prompt string).

    With `t=None` this samples from π_θ alone through the same loop (the single-model baseline
    the benchmark compares against). Returns per row: text, token count, finish reason, and the
    per-token diagnostic means and log-weights. Torch runs on the threads `model_threads` gives
    the model (one for a small model on CPU: more only fight over shared cores). The models run
    as one batched forward where they can (`steps/qstar/stacked.py`; `stacked=False`: each its own).
    """
    import torch

    from steps.common.threads import model_threads
    from steps.qstar import alpha as qm

    device = next(theta.parameters()).device
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    B = ids.shape[0]
    models = [theta] if t is None else [theta, t]
    stack = stack_of(tuple(models)) if stacked else None
    forward = (_stacked_forward(stack, ids, mask, max_new_tokens) if stack else _own_forwards(models, mask))
    eos_t = torch.tensor(eos or [-1], device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    out_tokens = torch.full((B, max_new_tokens), tok.pad_token_id, dtype=torch.long, device=device)
    record = torch.zeros((max_new_tokens, len(RECORD), B), dtype=torch.float32, device=device)
    step_ids, step_pos = ids, pos
    start = qm.Alphas(torch.full((B,), qm.FALLBACK_ALPHA, device=device))  # each row's α, token to token
    with torch.inference_mode(), model_threads(theta, device.type == "cuda"):
        for i in range(max_new_tokens):
            logps = forward(step_ids, mask, step_pos)[..., :vocab].float().log_softmax(-1)  # [M, B, V]
            nxt = _draw_token(logps, method, alpha_value, temperature, generator, record[i], start)
            out_tokens[:, i] = nxt.masked_fill_(done, tok.pad_token_id)
            done |= torch.isin(nxt, eos_t)
            if bool(done.all()):
                break
            step_ids = nxt[:, None]
            mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=-1)
            step_pos = step_pos[:, -1:] + 1
        n_tok = _lengths(out_tokens[:, : i + 1], eos_t)
        totals = dict(zip(SUMS, _sums(record[: i + 1], n_tok, two=t is not None).tolist()))
    return [_sample_row(tok, out_tokens[b, : int(n_tok[b])].tolist(), bool(done[b]), eos,
                        {k: v[b] for k, v in totals.items()}) for b in range(B)]


def _stacked_forward(stack, ids, mask, max_new_tokens: int):
    """`(new ids, 2D mask, positions) -> logits [M, B, V]` of the models run as one."""
    state, padded = stack.start(ids.shape[0], ids.shape[1] + max_new_tokens), not bool(mask.all())
    return lambda step_ids, mask, positions: stack.forward(state, step_ids, positions, mask, padded)


def _own_forwards(models, mask):
    """`(new ids, 2D mask, positions) -> logits [M, B, V]`, each model through its own forward
    and KV cache (sharing a padded batch's attention mask where they can)."""
    import torch

    caches, names = [None] * len(models), [_cache_name(m) for m in models]
    shared_mask = _shared_mask(models, mask)

    def forward(step_ids, mask, positions):
        logits = []
        step_mask = shared_mask(step_ids, mask, caches[0], positions) if shared_mask else mask
        for j, m in enumerate(models):
            o = m(input_ids=step_ids, attention_mask=step_mask, position_ids=positions,
                  use_cache=True, logits_to_keep=1, **{names[j]: caches[j]})
            caches[j] = getattr(o, names[j])
            logits.append(o.logits[:, -1])
        return torch.stack(logits)

    return forward


def _cache_name(model) -> str:
    """The keyword of a model's KV cache: `cache` from transformers 5.20 on (where
    `past_key_values` still works but warns on every forward), `past_key_values` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _shared_mask(models, mask):
    """With two models that would each build the same attention mask at every step, a function
    that builds it once, `(ids, 2D mask, π_θ's cache, positions) -> mask`, to pass to both (a
    model takes a prepared 4D mask as it is); None otherwise. For a left-padded batch (prompts of
    different lengths, as real batches are) transformers' `create_causal_mask` costs 126 µs a
    call on the benchmark's tiny models, and building it once made kl_symmetry 2% faster; without
    padding (`mask` all ones) it is cheap and the causal kernel needs none. The same mask means the same
    attention implementation and dtype, both causal, no sliding-window layer, and a
    `create_causal_mask` taking (config, inputs_embeds, attention_mask, cache) as 5.x's does."""
    import inspect

    from transformers import masking_utils

    build = getattr(masking_utils, "create_causal_mask", None)
    if len(models) < 2 or bool(mask.all()) or build is None or list(inspect.signature(build).parameters)[:4] not in (
            ["config", "inputs_embeds", "attention_mask", "cache"],
            ["config", "inputs_embeds", "attention_mask", "past_key_values"]):
        return None

    def plain(model):
        c = model.config
        return (getattr(c, "is_causal", True) and getattr(c, "sliding_window", None) is None
                and all(kind == "full_attention" for kind in getattr(c, "layer_types", None) or ()))

    if not all(map(plain, models)) or len({(m.config._attn_implementation, m.dtype) for m in models}) > 1:
        return None
    config, dtype = models[0].config, models[0].dtype

    def shared(ids, mask, cache, positions):  # inputs_embeds gives only batch, length, dtype and device
        return build(config, ids.new_empty((*ids.shape, 0), dtype=dtype), mask, cache, position_ids=positions)

    return shared


def _draw_token(logps, method: str, alpha_value: float, temperature: float, generator, record, start):
    """The next token of every row from q (π_θ alone when there is one model), [B]; the α used is
    left in `start` (qm.Alphas: the next token's warm start) and, with what `_sums` needs, in this
    token's `record` (rows in RECORD order)."""
    import torch

    from steps.qstar import alpha as qm

    two = len(logps) > 1
    if two:
        alpha, lq, q, _, _ = qm.position(method, logps, alpha_value, start, psi_out=record[1:4], mean_out=record[4])
        record[0].copy_(alpha)
    else:
        lq = logps[0]
    if temperature > 0:
        l_sample = (lq / temperature).log_softmax(-1) if temperature != 1.0 else lq
        probs = q if two and temperature == 1.0 else l_sample.exp()
        nxt = torch.multinomial(probs, 1, generator=generator)
    else:
        l_sample = lq
        nxt = lq.argmax(-1, keepdim=True)
    torch.gather(logps, -1, nxt.expand(len(logps), -1, -1), out=record[5: 5 + len(logps)].unsqueeze(-1))
    torch.gather(l_sample, -1, nxt, out=record[7].unsqueeze(-1))
    return nxt.squeeze(-1)


def _lengths(tokens, eos_t):
    """Tokens per row up to and including its first end-of-sequence token (all where none)."""
    import torch

    ended = torch.isin(tokens, eos_t)
    return torch.where(ended.any(-1), ended.int().argmax(-1) + 1, tokens.shape[1])


def _sums(record, n_tok, two: bool):
    """The SUMS of each row over its tokens ([len(SUMS), B]) from the per-token `record`: log π/q
    of the drawn token under each model, then α and the diagnostics of `qm.diagnostics`; formed
    for all tokens at once, then added token by token in float32 as they were drawn."""
    import torch

    from steps.qstar import alpha as qm

    log_w = record[:, 5:7] - record[:, 7:8]  # rows in RECORD order
    if two:
        alpha = record[:, 0]
        diag = qm.diagnostics(alpha, record[:, 1:4], record[:, 4])
        terms = torch.stack([log_w[:, 0], log_w[:, 1], alpha, *(diag[k] for k in DIAGNOSTICS[1:])], 1)
    else:
        terms = log_w[:, :1]
    live = (torch.arange(len(record), device=record.device)[:, None] < n_tok).float()
    sums = torch.zeros((len(SUMS), record.shape[-1]), dtype=torch.float32, device=record.device)
    for term, row_live in zip(terms, live):
        sums[: len(term)].addcmul_(term, row_live)
    return sums


def _sample_row(tok, token_ids: list[int], finished: bool, eos: list[int], sums: dict[str, float]) -> dict[str, Any]:
    k = len(token_ids)
    toks = token_ids[:-1] if finished and token_ids and token_ids[-1] in eos else token_ids
    return {
        "text": tok.decode(toks, skip_special_tokens=True),
        "token_ids": token_ids,
        "num_tokens": k,
        "finish_reason": "stop" if finished else "length",
        **{f"{name}_mean": sums[name] / max(k, 1) for name in DIAGNOSTICS},
        "log_w_theta": sums["log_w_theta"],
        "log_w_t": sums["log_w_t"],
    }


def _generator(seed: int, first_index: int, device):
    import torch

    g = torch.Generator(device=device)
    digest = hashlib.sha256(f"qstar:{seed}:{first_index}".encode()).digest()
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


@register("qstar.sample")
class QStarSample(Step):
    """Sample responses token by token from q* ∝ π_θ^α·π_t^(1−α), with per-sample diagnostics."""

    # 2: torch pinned to one thread for small models, α warm-started from the previous token and
    # q formed as lt + α·ℓ: the same distribution, other float rounding, so other tokens than 1's.
    # 3: kl_symmetry's α solved to ~1e-7 (was up to 4e-2 off where D(α) is flat): other α means
    # other tokens
    # 4: ψ(α), ψ(−α), ψ(2−α) and log q from one log_softmax (was logsumexp, then log q = x − ψ): the
    # same values to float32 rounding, so diagnostics differ in their last bits (tokens only where
    # a draw falls within that rounding of a boundary)
    # 5: on CPU, Llama-shaped π_θ and π_t run as one stacked forward (stacked.py): the same logits
    # to float rounding, so the same tokens but where a draw falls within that rounding of a boundary
    # 6: kl_symmetry's warm steps of α taken on the host in float64 (were float32 tensor ops): α
    # differs in its last float32 bits, so do the tokens where a draw falls that near a boundary
    # 7: on CPU, kl_symmetry's α per row in compiled code (chernoff.py), each row to its own
    # tolerance, kept in [0, 1], and not stopped by a small step where ψ bends sharply (was: 1e-3
    # off where one model all but rules out a token the other likes)
    version = "7"
    Config = QStarSampleConfig
    inputs = {"problems": Dataset, "model_theta": In(Model, required=False), "model_t": In(Model, required=False)}
    outputs = {"samples": Dataset, "diagnostics": Dataset}
    deterministic = True  # seeded per shard; same hardware and library versions give the same tokens
    uses_replicas = True  # each replica holds both models

    def resources(self) -> Resources:
        return Resources(cpus=1, gpus=1 if self.config.device == "cuda" else 0)

    def run(self, ctx) -> None:
        cfg: QStarSampleConfig = self.config
        if cfg.n < 1 or cfg.batch_size < 1 or cfg.max_new_tokens < 1:
            raise StepError("qstar.sample: n, batch_size and max_new_tokens must be at least 1")
        problems = ctx.inputs["problems"]
        rows = problems.read()
        if not rows:
            raise StepError(f"qstar.sample: problems {problems.path}: the dataset is empty")
        col = pick_column(rows[0], cfg.prompt_column, PROMPT_COLUMNS, "prompt",
                          f"qstar.sample: problems {problems.path}", "prompt_column")
        if cfg.num_samples is not None:
            rows = rows[: cfg.num_samples]
        # the pair is loaded by map_shards: once here, or once per replica actor on Ray
        setup = functools.partial(load_pair, _model_path(ctx, cfg, "model_theta"), _model_path(ctx, cfg, "model_t"),
                                  cfg.device, cfg.dtype)
        items = [{"prompt_idx": i, "id": r.get("id", i), "problem": str(r[col])} for i, r in enumerate(rows)]
        t0 = time.perf_counter()
        # `shard` travels to Ray replicas (pickled into the object store): it must not hold ctx,
        # whose redactor holds the secrets this process knows
        seed = cfg.seed if cfg.seed is not None else ctx.seed

        def shard(chunk: list[dict[str, Any]], pair) -> list[dict[str, Any]]:
            tok, theta, t, vocab = pair
            eos, device = eos_ids(tok, theta, t), next(theta.parameters()).device
            seqs = [(it, k) for it in chunk for k in range(cfg.n)]
            gen = _generator(seed, chunk[0]["prompt_idx"], device)
            out: list[dict[str, Any]] = []
            for s in range(0, len(seqs), cfg.batch_size):
                part = seqs[s: s + cfg.batch_size]
                prompts = [render_prompt(tok, it["problem"], cfg.system_prompt) for it, _ in part]
                res = sample_batch(tok, theta, t, vocab, prompts, method=cfg.alpha_method, alpha_value=cfg.alpha,
                                   max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                   generator=gen, eos=eos)
                out += [{"prompt_idx": it["prompt_idx"], "id": it["id"], "problem": it["problem"], "k": k, **r}
                        for (it, k), r in zip(part, res)]
            return out

        results = ctx.map_shards(items, shard, shard_size=cfg.shard_size, name="qstar", desc="q* sampling",
                                 setup=setup,
                                 replica=Resources(cpus=0, gpus=1) if cfg.device == "cuda" else Resources())
        seconds = time.perf_counter() - t0
        samples, diags = _samples_and_diagnostics(results, cfg.alpha_method)
        tokens = sum(r["num_tokens"] for r in results)
        ctx.log.info("q* (%s): %d samples, %d tokens in %.1fs (%.1f tokens/s)", cfg.alpha_method, len(results),
                     tokens, seconds, tokens / seconds if seconds else 0.0)
        ctx.write_dataset("samples", samples)
        ctx.write_dataset("diagnostics", diags)


def _samples_and_diagnostics(results: list[dict[str, Any]], method: str) -> tuple[list[dict], list[dict]]:
    """The trl-ready samples and one diagnostics row per sample (with its prompt's Kish ESS)."""
    from steps.qstar import alpha as qm

    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        by_prompt.setdefault(r["prompt_idx"], []).append(r)
    samples, diags = [], []
    for idx, r in enumerate(results):
        group = by_prompt[r["prompt_idx"]]
        samples.append({"messages": [{"role": "user", "content": r["problem"]},
                                     {"role": "assistant", "content": r["text"]}], "sample_idx": idx})
        diags.append({
            "sample_idx": idx, "id": r["id"], "prompt_idx": r["prompt_idx"], "alpha_method": method,
            "alpha_mean": r["alpha_mean"], "ess_ratio_mean": r["ess_ratio_mean"],
            "kl_theta_mean": r["kl_theta_mean"], "kl_t_mean": r["kl_t_mean"], "kl_gap_mean": r["kl_gap_mean"],
            "num_tokens": r["num_tokens"], "finish_reason": r["finish_reason"],
            "log_w_theta": r["log_w_theta"], "log_w_t": r["log_w_t"],
            "kish_ess_theta": qm.kish_ess([g["log_w_theta"] for g in group]),
            "kish_ess_t": qm.kish_ess([g["log_w_t"] for g in group]), "n": len(group),
        })
    return samples, diags
