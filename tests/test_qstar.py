"""qstar.sample / qstar.analyze on two tiny Llamas that share a tokenizer."""
import json

import pytest
import torch
from _tiny import make_tiny_model, make_tokenizer, problem_rows

from engine.recipe.artifact_types import Dataset, Model, write_records
from engine.recipe.errors import StepError
from engine.run.testing import run_step
from steps.qstar import alpha as qm
from steps.qstar.sample import load_pair, render_prompt, sample_batch


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("qstar")
    theta = make_tiny_model(root / "theta", seed=0, logit_scale=14.0)
    t = make_tiny_model(root / "t", seed=1, logit_scale=14.0)
    write_records(root / "problems" / "data.jsonl", problem_rows(3))
    return {"theta": Model(theta), "t": Model(t), "problems": Dataset(root / "problems")}


def sample(pair, tmp_path, **cfg):
    inputs = {"problems": pair["problems"], "model_theta": pair["theta"], "model_t": pair["t"]}
    return run_step("qstar.sample", {"max_new_tokens": 6, **cfg}, inputs, workdir=tmp_path)


def test_outputs_follow_the_seed_format(pair, tmp_path):
    out = sample(pair, tmp_path, n=4, batch_size=5, alpha_method="kl_symmetry")
    samples, diags = out["samples"].read(), out["diagnostics"].read()
    assert len(samples) == len(diags) == 3 * 4
    assert all(set(s) == {"messages", "sample_idx"} for s in samples)
    assert [s["sample_idx"] for s in samples] == list(range(12))
    assert samples[0]["messages"][0] == {"role": "user", "content": "What is 1+1?"}
    assert samples[0]["messages"][1]["role"] == "assistant"
    for d in diags:
        assert {"sample_idx", "alpha_mean", "ess_ratio_mean", "kl_theta_mean", "kl_t_mean"} <= set(d)
        assert d["alpha_method"] == "kl_symmetry" and d["n"] == 4
        assert 1.0 - 1e-9 <= d["kish_ess_theta"] <= 4 + 1e-9 and 1.0 - 1e-9 <= d["kish_ess_t"] <= 4 + 1e-9
        assert d["kl_gap_mean"] < 1e-4  # the Chernoff point equalises the two KLs at every token
        assert 0 < d["alpha_mean"] < 1


def test_same_seed_same_samples(pair, tmp_path):
    a = sample(pair, tmp_path / "a", n=2, alpha_method="entropy").get("samples").read()
    b = sample(pair, tmp_path / "b", n=2, alpha_method="entropy").get("samples").read()
    assert a == b


def test_fixed_alpha_one_is_theta_itself(pair, tmp_path):
    diags = sample(pair, tmp_path, n=2, alpha_method="fixed", alpha=1.0)["diagnostics"].read()
    for d in diags:
        assert d["log_w_theta"] == pytest.approx(0.0, abs=1e-4)
        assert d["kl_theta_mean"] == pytest.approx(0.0, abs=1e-5) and d["ess_ratio_mean"] > 0


def test_first_token_frequencies_match_q_computed_from_the_models(pair):
    tok, theta, t, vocab = load_pair(str(pair["theta"].path), str(pair["t"].path))
    prompt = render_prompt(tok, "What is 2+3?", None)
    gen = torch.Generator().manual_seed(7)
    counts = torch.zeros(vocab)
    for _ in range(3):
        rows = sample_batch(tok, theta, t, vocab, [prompt] * 500, method="kl_symmetry", alpha_value=0.5,
                            max_new_tokens=1, temperature=1.0, generator=gen, eos=[])
        for r in rows:
            counts[r["token_ids"][0]] += 1
    enc = tok([prompt], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        lp = theta(**enc).logits[:, -1, :vocab].float().log_softmax(-1)
        lt = t(**enc).logits[:, -1, :vocab].float().log_softmax(-1)
    q = qm.log_q(lp, lt, qm.alpha_kl_symmetry(lp, lt)).exp()[0].double()
    keep = q * counts.sum() >= 5  # pool rare tokens so the χ² approximation holds
    obs = torch.cat([counts[keep], counts[~keep].sum()[None]])
    exp = torch.cat([q[keep], q[~keep].sum()[None]])
    stat, dof = qm.chi_square_stat(obs, exp)
    assert dof >= 2
    assert qm.chi_square_sf(stat, dof) > 0.001


def test_batching_with_left_padding_and_kv_cache_matches_one_by_one(pair):
    tok, theta, t, vocab = load_pair(str(pair["theta"].path), str(pair["t"].path))
    prompts = [render_prompt(tok, p, None) for p in ("What is 1+1?", "Compute 12+34 and then 5+6 please")]
    kw = dict(method="ess_balance", alpha_value=0.5, max_new_tokens=8, temperature=0.0, eos=[])
    together = sample_batch(tok, theta, t, vocab, prompts, generator=None, **kw)
    alone = [sample_batch(tok, theta, t, vocab, [p], generator=None, **kw)[0] for p in prompts]
    assert [r["text"] for r in together] == [r["text"] for r in alone]
    for a, b in zip(together, alone):
        assert a["alpha_mean"] == pytest.approx(b["alpha_mean"], abs=1e-4)


def test_two_models_build_a_padded_batchs_attention_mask_once_a_token(pair, monkeypatch):
    # transformers builds a left-padded batch's mask in 126 µs a call on small models, 4% of a q*
    # step: where the models run their own forwards (not stacked), it is built once and passed to
    # both, and must give what each model's own mask gives
    from transformers import masking_utils

    from steps.qstar import sample as qs

    tok, theta, t, vocab = load_pair(str(pair["theta"].path), str(pair["t"].path))
    prompts = [render_prompt(tok, p, None) for p in ("What is 1+1?", "Compute 12+34 and then 5+6 please")]
    kind = theta.config._attn_implementation
    real, built = masking_utils.ALL_MASK_ATTENTION_FUNCTIONS[kind], []
    monkeypatch.setitem(masking_utils.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping, kind,
                        lambda *a, **kw: built.append(1) or real(*a, **kw))

    def run():
        built.clear()
        rows = sample_batch(tok, theta, t, vocab, prompts, method="kl_symmetry", alpha_value=0.5, max_new_tokens=5,
                            temperature=1.0, generator=torch.Generator().manual_seed(0), eos=[], stacked=False)
        return rows, len(built)

    shared, builds = run()
    assert builds == 5
    monkeypatch.setattr(qs, "_shared_mask", lambda models, mask: None)
    own, builds = run()
    assert builds == 10
    assert shared == own


def _replayed_means(tok, theta, t, prompt: str, token_ids: list[int], method: str) -> dict[str, float]:
    """A row's diagnostics recomputed from the models: its prompt and drawn tokens in one forward
    pass each, then `token_step` at every position, averaged over the row's own tokens."""
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"] + token_ids])
    n, k = ids.shape[1], len(token_ids)
    with torch.no_grad():
        lp, lt = (m(input_ids=ids).logits[0, n - k - 1: n - 1, : len(tok)].float().log_softmax(-1) for m in (theta, t))
    alpha, diag = qm.token_step(method, lp, lt, 0.3)
    drawn = torch.tensor(token_ids)[:, None]
    log_q = diag["log_q"].gather(-1, drawn)[:, 0]
    return {"alpha_mean": alpha.mean().item(), "kl_theta_mean": diag["kl_theta"].mean().item(),
            "kl_t_mean": diag["kl_t"].mean().item(), "ess_ratio_mean": diag["ess_ratio"].mean().item(),
            "log_w_theta": (lp.gather(-1, drawn)[:, 0] - log_q).sum().item(),
            "log_w_t": (lt.gather(-1, drawn)[:, 0] - log_q).sum().item()}


@pytest.mark.parametrize("method", ["fixed", "kl_symmetry"])
def test_rows_that_end_early_sum_only_their_own_tokens(pair, method):
    # the per-token diagnostics are summed after the last token: a row that drew its end token
    # early must count only the tokens up to it, not the padding drawn for it afterwards
    tok, theta, t, vocab = load_pair(str(pair["theta"].path), str(pair["t"].path))
    prompts = [render_prompt(tok, f"What is {i}+{i + 2}?", None) for i in range(4)]
    kw = dict(method=method, alpha_value=0.3, max_new_tokens=10, temperature=1.0)
    free = sample_batch(tok, theta, t, vocab, prompts, generator=torch.Generator().manual_seed(3), eos=[], **kw)
    end = free[0]["token_ids"][2]  # the same draws again end row 0 at its third token
    rows = sample_batch(tok, theta, t, vocab, prompts, generator=torch.Generator().manual_seed(3), eos=[end], **kw)
    assert rows[0]["finish_reason"] == "stop" and rows[0]["num_tokens"] <= 3
    assert max(r["num_tokens"] for r in rows) > rows[0]["num_tokens"]  # the batch ran on past it
    for prompt, row in zip(prompts, rows):
        assert row["token_ids"][-1] == end or row["num_tokens"] == 10
        assert row["num_tokens"] == len(row["token_ids"])
        want = _replayed_means(tok, theta, t, prompt, row["token_ids"], method)
        for name, value in want.items():
            assert row[name] == pytest.approx(value, rel=1e-3, abs=1e-4), (name, row["num_tokens"])


@pytest.mark.parametrize("stacked", [True, False])
def test_sampling_runs_a_small_model_on_one_torch_thread(pair, monkeypatch, stacked):
    # two threads on a shared 2-core machine made rounds of the same 512 tokens take 0.06-21 s
    from steps.qstar.stacked import Stacked

    monkeypatch.delenv("RECIPE_CPU_THREADS", raising=False)
    tok, theta, t, vocab = load_pair(str(pair["theta"].path), str(pair["t"].path))
    seen = []
    if stacked:  # (a forward hook would make the models run their own forwards)
        forward = Stacked.forward
        monkeypatch.setattr(Stacked, "forward", lambda *a: seen.append(torch.get_num_threads()) or forward(*a))
    else:
        for m in (theta, t):
            m.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sample_batch(tok, theta, t, vocab, [render_prompt(tok, "What is 1+1?", None)], method="kl_symmetry",
                     alpha_value=0.5, max_new_tokens=3, temperature=1.0, generator=None, eos=[])
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2  # restored afterwards
    finally:
        torch.set_num_threads(before)


def test_sampling_passes_the_kv_cache_by_its_current_name(pair):
    # transformers 5.20+ warns on every forward given `past_key_values=`: a q* run logged it per token
    import warnings

    tok, theta, t, vocab = load_pair(str(pair["theta"].path), str(pair["t"].path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = sample_batch(tok, theta, t, vocab, [render_prompt(tok, "What is 1+1?", None)] * 2,
                            method="kl_symmetry", alpha_value=0.5, max_new_tokens=4, temperature=1.0,
                            generator=torch.Generator().manual_seed(0), eos=[])
    assert [r["num_tokens"] for r in rows] == [4, 4]
    assert [str(w.message) for w in caught if "past_key_values" in str(w.message)] == []


def test_different_vocabularies_are_refused(pair, tmp_path):
    other_tok = make_tokenizer()
    other_tok.add_tokens(["<extra>"])
    other = make_tiny_model(tmp_path / "other", seed=2, tokenizer=other_tok)
    inputs = {"problems": pair["problems"], "model_theta": pair["theta"], "model_t": Model(other)}
    with pytest.raises(StepError, match=r"do not share a tokenizer \(286 vs 287 tokens; 0 only in θ, 1 only in t"):
        run_step("qstar.sample", {"max_new_tokens": 2}, inputs, workdir=tmp_path / "w")


def test_missing_prompt_column(pair, tmp_path):
    write_records(tmp_path / "bad" / "data.jsonl", [{"text": "x"}])
    inputs = {"problems": Dataset(tmp_path / "bad"), "model_theta": pair["theta"], "model_t": pair["t"]}
    with pytest.raises(StepError, match="none of the prompt columns"):
        run_step("qstar.sample", {}, inputs, workdir=tmp_path / "w")


def diag_rows(method, alpha, ess, gap, n=10):
    return [{"sample_idx": i, "alpha_method": method, "alpha_mean": alpha, "ess_ratio_mean": ess,
             "kl_theta_mean": 0.2 + gap, "kl_t_mean": 0.2, "kl_gap_mean": gap, "kish_ess_theta": 2.0,
             "kish_ess_t": 3.0, "n": 4} for i in range(n)]


def test_analyze_says_which_method_meets_which_criterion(tmp_path):
    write_records(tmp_path / "a" / "data.jsonl", diag_rows("kl_symmetry", 0.45, 1.3, 0.0))
    write_records(tmp_path / "b" / "data.jsonl", diag_rows("ess_balance", 0.9, 1.0, 0.08))
    out = run_step("qstar.analyze", {}, {"diagnostics": [Dataset(tmp_path / "a"), Dataset(tmp_path / "b")]},
                   workdir=tmp_path / "w")
    report = out["report"]
    m = report.metrics()
    assert m["meets"] == {"ess_ratio": ["ess_balance"], "kl_symmetry": ["kl_symmetry"], "alpha_range": ["kl_symmetry"]}
    table = (report.path / "criteria.md").read_text()
    assert "| kl_symmetry | fails (0%; median 1.300) | meets (100%; mean 0.0000) | meets (100%; mean 0.450) |" in table
    assert "| ess_balance | meets (100%; median 1.000) | fails (0%; mean 0.0800) | fails (0%; mean 0.900) |" in table
    for fig in ("alpha_hist.png", "ess_ratio_hist.png", "kl_scatter.png", "methods.png"):
        assert (report.path / fig).stat().st_size > 0
    json.dumps(m)


def test_analyze_rejects_rows_that_are_not_diagnostics(tmp_path):
    write_records(tmp_path / "a" / "data.jsonl", [{"messages": []}])
    with pytest.raises(StepError, match=r"row 0: missing \['alpha_mean'"):
        run_step("qstar.analyze", {}, {"diagnostics": [Dataset(tmp_path / "a")]}, workdir=tmp_path / "w")


def test_the_shard_function_shipped_to_replicas_holds_no_secret(pair, tmp_path, monkeypatch):
    """On Ray the shard function is pickled into the object store and sent to every replica:
    it must not carry the step's context, whose redactor holds the secrets its process knows."""
    cloudpickle = pytest.importorskip("ray.cloudpickle")
    from engine.run import context
    from engine.run.shards import InProcessShards

    shipped = []

    class Shipping(InProcessShards):  # runs the shards here, after pickling the function as Ray would
        def run(self, todo, fn, done, setup=None, replica=None):
            shipped.append(cloudpickle.dumps(fn))
            return super().run(todo, cloudpickle.loads(shipped[-1]), done, setup, replica)

    monkeypatch.setattr(context, "InProcessShards", Shipping)
    monkeypatch.setenv("HF_TOKEN", "hf_qstarSecretValue123")
    rows = sample(pair, tmp_path, n=2, shard_size=2)["samples"].read()
    assert len(rows) == 3 * 2 and len(shipped) == 1
    assert b"qstarSecretValue" not in shipped[0]


def test_a_step_that_ended_has_freed_its_models_and_their_stack(pair, tmp_path, monkeypatch):
    """With `-j 1` a step runs in the driver's process: once it ends, the model pair it loaded
    (whose parameters are views into their stacked forward's tensors) is freed, not held
    through every later step of the run."""
    import gc
    import weakref

    from engine.run import context
    from engine.run.shards import InProcessShards
    from steps.qstar import stacked

    loaded, built = [], []

    class Watching(InProcessShards):
        def _state(self, setup):
            state = super()._state(setup)
            loaded.extend(weakref.ref(m) for m in state[1:3])
            return state

    monkeypatch.setattr(context, "InProcessShards", Watching)
    real = stacked.Stacked

    class Stacked(real):  # the real one, counted
        def __init__(self, models):
            built.append(weakref.ref(self))
            real.__init__(self, models)

    monkeypatch.setattr(stacked, "Stacked", Stacked)
    sample(pair, tmp_path, n=2)
    gc.collect()
    assert len(loaded) == 2 and len(built) == 1  # the pair ran as one stack
    assert [r() for r in loaded + built] == [None] * 3
