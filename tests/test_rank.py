"""rank.preferences: scorers, combined ordering, and the pairing rules Magpie's scripts get wrong."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _scripted_backend import SCRIPTED, ScriptedBackend, use_scripted_backend  # noqa: E402

from engine.recipe.artifact_types import write_records  # noqa: E402
from engine.recipe.errors import StepError  # noqa: E402
from engine.run.testing import run_step  # noqa: E402
from steps.rank.preferences import choose_pair, combined, parse_rating, verifiable_scores  # noqa: E402


def sol(ans: str, think: str = "work") -> str:
    return f"<think>{think}</think><answer>{ans}</answer>"


def candidates_ds(tmp_path: Path, rows: list[dict], name: str = "cands") -> Path:
    write_records(tmp_path / name / "data.jsonl", rows)
    return tmp_path / name


# ---------------------------------------------------------------------------- pairing rules
def test_all_tied_yields_no_pair():
    assert choose_pair(["a", "b", "c"], [1.0, 1.0, 1.0], 0.0) == "all_tied"


def test_chosen_never_equals_rejected_text():
    assert choose_pair(["same", " same ", "same"], [1.0, 0.0, 0.0], 0.0) == "identical_texts"
    assert choose_pair(["same", "same", "other"], [1.0, 0.0, 0.0], 0.0) == (0, 2)


def test_min_margin_and_deterministic_ties():
    assert choose_pair(["a", "b"], [0.6, 0.5], 0.2) == "below_margin"
    # ties: the first of the best is chosen, the first of the worst is rejected
    assert choose_pair(["a", "b", "c", "d"], [0.0, 1.0, 1.0, 0.0], 0.0) == (1, 0)
    assert choose_pair(["only"], [1.0], 0.0) == "too_few_candidates"


def test_combined_orders_correctness_before_reward():
    order = ["verifiable", "reward_model"]
    right_low = combined([1.0, -50.0], order)
    wrong_high = combined([0.0, 50.0], order)
    assert right_low > wrong_high
    assert combined([1.0, 2.0], order) > combined([1.0, 1.0], order)
    assert combined([0.0, 9.0], ["verifiable", "llm_judge"]) < combined([1.0, 1.0], ["verifiable", "llm_judge"])


def test_parse_rating():
    assert parse_rating("Rating: 7") == 7.0
    assert parse_rating("I'd say rating = [[9]] overall") == 9.0
    assert parse_rating(" 3 ") == 3.0
    assert parse_rating("Rating: 11") is None
    assert parse_rating("great answer") is None


# ---------------------------------------------------------------------------- verifiable
def test_verifiable_against_reference_and_majority():
    resp = [sol("1/2"), sol("0.5"), sol("3"), "no answer here"]
    scores, ref, source = verifiable_scores(resp, "1/2", True, 2)
    assert scores == [1.0, 1.0, 0.0, 0.0] and source == "reference"
    scores, ref, source = verifiable_scores([sol("4"), sol("4.0"), sol("5"), sol("6")], None, True, 2)
    assert scores == [1.0, 1.0, 0.0, 0.0] and ref == "4" and source == "majority"
    # a tie for the most common answer is no reference at all
    scores, ref, source = verifiable_scores([sol("4"), sol("4"), sol("5"), sol("5")], None, True, 2)
    assert scores == [0.0] * 4 and ref is None and source == "none"


def test_rank_step_verifiable_end_to_end(tmp_path):
    rows = [
        {"id": "p1", "instruction": "What is 1+1?", "answer": "2",
         "responses": [sol("3"), sol("2"), sol("2", "other"), sol("5"), sol("2")]},
        {"id": "p2", "instruction": "What is 2+2?", "answer": "4", "responses": [sol("4")] * 5},  # all right: tied
        {"id": "p3", "instruction": "What is 3+3?", "responses": [sol("6"), sol("6"), sol("7"), sol("6"), sol("8")]},
        {"id": "p4", "instruction": "What is 4+4?", "answer": "8",
         "responses": [sol("1"), sol("2"), sol("3"), sol("4"), sol("5")]},
    ]
    out = run_step("rank.preferences", {}, {"candidates": candidates_ds(tmp_path, rows)}, workdir=tmp_path / "r")
    prefs = out["preferences"].read()
    assert [p["id"] for p in prefs] == ["p1", "p3"]
    p1 = prefs[0]
    assert list(p1) == ["instruction", "chosen", "rejected", "score_chosen", "score_rejected", "id"]
    assert p1["chosen"] == sol("2") and p1["rejected"] == sol("3")  # first right, first wrong
    assert (p1["score_chosen"], p1["score_rejected"]) == (1.0, 0.0)
    assert prefs[1]["chosen"] == sol("6") and prefs[1]["rejected"] == sol("7")  # majority answer 6
    assert all(p["chosen"] != p["rejected"] for p in prefs)
    skipped = {s["id"]: s["reason"] for s in out["skipped"].read()}
    assert skipped == {"p2": "all_tied", "p4": "all_tied"}
    m = out["report"].metrics()
    assert m["pairs"] == 2 and m["no_pair"] == {"all_tied": 2} and m["problems"] == 4
    assert m["reference_sources"] == {"reference": 3, "majority": 1}
    scored = out["scored"].read()
    assert scored[0]["score_verifiable"] == [0.0, 1.0, 1.0, 0.0, 1.0]


def test_references_input_overrides_missing_answers(tmp_path):
    rows = [{"id": "q", "instruction": "?", "responses": [sol("1"), sol("2")]}]
    write_records(tmp_path / "refs" / "data.jsonl", [{"id": "q", "answer": "2"}])
    out = run_step("rank.preferences", {},
                   {"candidates": candidates_ds(tmp_path, rows), "references": tmp_path / "refs"},
                   workdir=tmp_path / "r")
    assert out["preferences"].read()[0]["chosen"] == sol("2")


def test_bad_candidates_rows(tmp_path):
    rows = [{"id": "a", "instruction": "?", "responses": [sol("1"), ""]},
            {"id": "b", "instruction": "What is 1+1?", "answer": "2", "responses": [sol("2"), sol("3")]}]
    out = run_step("rank.preferences", {}, {"candidates": candidates_ds(tmp_path, rows)}, workdir=tmp_path / "r")
    assert out["skipped"].read() == [{"id": "a", "reason": "empty_candidate",
                                      "detail": "1 empty or non-text responses"}]
    assert [p["id"] for p in out["preferences"].read()] == ["b"]
    with pytest.raises(StepError, match=r"input candidates: row 0 has no column 'responses'"):
        run_step("rank.preferences", {}, {"candidates": candidates_ds(tmp_path, [{"instruction": "?"}], "bad")},
                 workdir=tmp_path / "r2")


# ---------------------------------------------------------------------------- reward model
@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory):
    import torch
    from _tiny import make_tokenizer
    from transformers import LlamaConfig, LlamaForSequenceClassification

    path = tmp_path_factory.mktemp("rm")
    tok = make_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, num_labels=1)
    LlamaForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_reward_model_batched_scores_equal_one_at_a_time(tiny_reward_model):
    from steps.rank.preferences import reward_model_scores

    pairs = [("What is 1+1?", sol("2")), ("What is 1+1?", sol("3", "a much longer line of thought here")),
             ("What is 9+9?", sol("18")), ("What is 2+3?", "5")]
    batched = reward_model_scores(str(tiny_reward_model), pairs, batch_size=4, max_length=128, device="cpu")
    single = reward_model_scores(str(tiny_reward_model), pairs, batch_size=1, max_length=128, device="cpu")
    assert batched == pytest.approx(single, abs=1e-4)
    assert len(set(round(s, 6) for s in batched)) > 1


def test_rank_step_verifiable_then_reward_model(tmp_path, tiny_reward_model):
    rows = [{"id": "p", "instruction": "What is 1+1?", "answer": "2",
             "responses": [sol("2", "a"), sol("2", "bb"), sol("3", "c"), sol("4", "dd")]}]
    out = run_step("rank.preferences", {"scorers": ["verifiable", "reward_model"], "reward_device": "cpu"},
                   {"candidates": candidates_ds(tmp_path, rows), "reward_model": tiny_reward_model},
                   workdir=tmp_path / "r")
    p = out["preferences"].read()[0]
    scored = out["scored"].read()[0]
    rewards = scored["score_reward_model"]
    right = [0, 1]
    wrong = [2, 3]
    assert p["chosen"] == rows[0]["responses"][max(right, key=lambda i: rewards[i])]
    assert p["rejected"] == rows[0]["responses"][min(wrong, key=lambda i: rewards[i])]
    assert 1.0 <= p["score_chosen"] < 1.5 and 0.0 <= p["score_rejected"] < 0.5


def test_reward_model_missing_is_a_clear_error(tmp_path):
    rows = [{"id": "p", "instruction": "?", "responses": ["a", "b"]}]
    with pytest.raises(StepError, match=r"reward_model: no model given"):
        run_step("rank.preferences", {"scorers": ["reward_model"]}, {"candidates": candidates_ds(tmp_path, rows)},
                 workdir=tmp_path / "r")


# ---------------------------------------------------------------------------- llm judge
def test_llm_judge_scores_and_judge_failures(tmp_path, monkeypatch):
    def answer(prompt, seed, k):
        if "GOOD" in prompt:
            return "Rating: 9"
        if "MEH" in prompt:
            return "Rating: 5"
        if "NONSENSE" in prompt:
            return "I refuse to rate"
        return "Rating: 2"

    backend = ScriptedBackend(answer=answer)
    loads = use_scripted_backend(monkeypatch, backend)
    rows = [{"id": "a", "instruction": "Q1", "responses": ["MEH one", "GOOD one", "bad one"]},
            {"id": "b", "instruction": "Q2", "responses": ["GOOD", "NONSENSE"]}]
    out = run_step("rank.preferences",
                   {"scorers": ["llm_judge"], "judge_model": "judge", "judge_retries": 1, "judge_backend": SCRIPTED},
                   {"candidates": candidates_ds(tmp_path, rows)}, workdir=tmp_path / "r")
    prefs = out["preferences"].read()
    assert len(prefs) == 1
    assert prefs[0]["chosen"] == "GOOD one" and prefs[0]["rejected"] == "bad one"
    assert (prefs[0]["score_chosen"], prefs[0]["score_rejected"]) == (9.0, 2.0)
    skipped = out["skipped"].read()
    assert skipped[0]["id"] == "b" and skipped[0]["reason"] == "judge_failed"
    assert "no rating 1-10" in skipped[0]["detail"]
    assert loads[0][1] == "judge"
    assert "[Problem]\nQ1\n\n[Response]\nMEH one" in backend.calls[0][0][0]
    assert len(loads) == 1 and backend.closed == 1  # loaded once by map_shards' setup, closed when the step ended


def test_the_judge_runs_on_replicas_unless_a_reward_model_shares_the_task():
    from engine.recipe import step as registry

    cls = registry.get("rank.preferences")
    judge = {"judge_backend": {"kind": "vllm", "tensor_parallel_size": 2}}
    alone = cls(cls.Config(scorers=["verifiable", "llm_judge"], **judge))
    both = cls(cls.Config(scorers=["reward_model", "llm_judge"], **judge))
    assert alone.uses_replicas and not both.uses_replicas
    assert (alone.resources().gpus, both.resources().gpus) == (2, 2)
    assert not cls(cls.Config()).uses_replicas and cls(cls.Config()).resources().gpus == 0


def test_format_scorer_breaks_ties_after_correctness(tmp_path):
    rows = [{"id": "p", "instruction": "What is 1+1?", "answer": "2",
             "responses": ["3", sol("4"), "<think>x</think> 5", sol("7")]}]  # all wrong; two well-formed
    out = run_step("rank.preferences", {"scorers": ["verifiable", "format"]},
                   {"candidates": candidates_ds(tmp_path, rows)}, workdir=tmp_path / "r")
    p = out["preferences"].read()[0]
    assert (p["chosen"], p["rejected"]) == (sol("4"), "3")
    assert (p["score_chosen"], p["score_rejected"]) == (0.25, 0.0)


def test_summary_row_counts_pairs_and_the_reasons_for_prompts_without_one(tmp_path):
    rows = [{"id": "p1", "instruction": "What is 1+1?", "answer": "2", "responses": [sol("3"), sol("2")]},
            {"id": "p2", "instruction": "What is 2+2?", "answer": "4", "responses": [sol("4")] * 3},
            {"id": "p3", "instruction": "What is 3+3?", "answer": "6", "responses": [sol("6")]}]
    run_step("rank.preferences", {}, {"candidates": candidates_ds(tmp_path, rows)}, workdir=tmp_path / "r")
    assert json.loads((tmp_path / "r" / "notes.json").read_text()) == [
        "1 pair from 3 prompts; no pair: all_tied=1, too_few_candidates=1"]


def test_no_pair_at_all_fails_with_the_reasons_counted(tmp_path):
    rows = [{"id": f"p{i}", "instruction": "What is 1+1?", "answer": "2", "responses": [sol("3"), sol("5")]}
            for i in range(3)]
    with pytest.raises(StepError, match=r"output preferences has 0 rows \(0 pairs from 3 prompts; no pair: "
                                        r"all_tied=3\); nothing was cached"):
        run_step("rank.preferences", {}, {"candidates": candidates_ds(tmp_path, rows)}, workdir=tmp_path / "r")
    out = run_step("rank.preferences", {"allow_empty": True}, {"candidates": candidates_ds(tmp_path, rows)},
                   workdir=tmp_path / "r2")
    assert out["preferences"].read() == []


def test_length_breaks_the_ties_left_highest_against_lowest(tmp_path):
    """A reward model's continuous score ranks its best against its worst candidate.
    Without one, `length` as the last scorer keeps that shape where correctness and format tie."""
    wrong = ["<think>a</think> 9", "x 7", "<think>long wrong work</think> 5", "12"]
    rows = [{"id": "p", "instruction": "What is 1+1?", "answer": "2", "responses": wrong},
            {"id": "q", "instruction": "What is 2+2?", "answer": "4", "responses": ["4 is it", sol("4"), "5"]}]
    scorers = ["verifiable", "format", "length"]
    out = run_step("rank.preferences", {"scorers": scorers}, {"candidates": candidates_ds(tmp_path, rows)},
                   workdir=tmp_path / "r")
    p, q = out["preferences"].read()
    assert (p["chosen"], p["rejected"]) == ("<think>long wrong work</think> 5", "12")  # all wrong, none formatted
    assert (q["chosen"], q["rejected"]) == (sol("4"), "5")  # correctness and format first, length last
    for pair in (p, q):
        assert pair["score_chosen"] > pair["score_rejected"]
    assert combined([0.0, 0.0, 1e6], scorers) < combined([0.0, 1.0, 1.0], scorers) < combined([1.0, 0.0, 1.0], scorers)


# ---------------------------------------------------------------------------- failed candidates, end to end
RANK_RECIPE = """recipe: rank
steps:
  - id: cands
    uses: data.from_file
    with: {path: cands.jsonl}
  - id: rank
    uses: rank.preferences
    inputs: {candidates: "${steps.cands.data}"}
"""


def _rank_recipe(cli, rows: list[dict]) -> str:
    write_records(cli.tmp / "cands.jsonl", rows)
    (cli.tmp / "rank.yaml").write_text(RANK_RECIPE)
    return "rank.yaml"


def test_mostly_failed_candidates_fail_the_step_and_cache_nothing(cli):
    """Rows whose candidates are empty (or absent) were skipped whatever their share: a run where
    most problems produced nothing cached the pairs of the few that did."""
    good = {"id": "ok", "instruction": "What is 1+1?", "answer": "2", "responses": [sol("2"), sol("3")]}
    rows = [good, {"id": "e1", "instruction": "?", "responses": [sol("1"), ""]},
            {"id": "e2", "instruction": "?", "responses": [" ", sol("1")]},
            {"id": "none", "instruction": "?", "responses": []}]
    p = cli("run", _rank_recipe(cli, rows), check=1)
    out = " ".join((p.stdout + p.stderr).split())
    assert ("rank: candidates: 3/4 failed: 2x empty_candidate; 1x no candidates (max_failed_fraction 0.5)"
            in out), out
    assert "Traceback" not in out
    assert cli.statuses()["rank"] == "failed"
    assert [json.loads(e.read_text())["label"] for e in cli.cache.rglob("entry.json")] == ["cands"]


def test_a_few_failed_candidates_are_a_note_not_a_failure(cli):
    good = [{"id": f"ok{i}", "instruction": "What is 1+1?", "answer": "2", "responses": [sol("2"), sol("3")]}
            for i in range(3)]
    p = cli("run", _rank_recipe(cli, [*good, {"id": "e", "instruction": "?", "responses": [""]}]))
    row = next(line for line in p.stdout.splitlines() if line.startswith("│ rank"))
    assert "candidates: 1/4 failed" in row, p.stdout
    assert cli.statuses()["rank"] == "ran"
