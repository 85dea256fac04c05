"""generate.problems / responses / candidates and the shared rows layer (steps/backends/rows.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _scripted_backend import SCRIPTED, ScriptedBackend, use_scripted_backend  # noqa: E402

from engine.recipe.artifact_types import write_records  # noqa: E402
from engine.recipe.errors import StepError  # noqa: E402
from engine.run.testing import run_step  # noqa: E402
from steps.backends.base import Completion  # noqa: E402
from steps.generate.magpie import (  # noqa: E402
    PRE_QUERY_TEMPLATES,
    clean_magpie_query,
    domain_system_prompt,
    normalise,
    template_for_model,
    template_from_chat_template,
)


def problems_ds(tmp_path: Path, n: int = 6, name: str = "problems") -> Path:
    rows = [{"id": f"algebra_{i:06d}", "instruction": f"Solve for x: x + {i} = {2 * i}", "answer": str(i),
             "domain": "algebra"} for i in range(1, n + 1)]
    write_records(tmp_path / name / "data.jsonl", rows)
    return tmp_path / name


# ---------------------------------------------------------------------------- generate.problems
def test_programmatic_problems_have_seed_ids_answers_and_no_duplicates(tmp_path):
    out = run_step("generate.problems", {"domain": "number_theory", "count": 12, "mode": "programmatic", "seed": 3},
                   workdir=tmp_path)
    rows = out["problems"].read()
    assert [r["id"] for r in rows] == [f"number_theory_{i:06d}" for i in range(1, 13)]
    assert all(r["instruction"].strip() and r["answer"] and r["domain"] == "number_theory" for r in rows)
    assert all(r["solution"].startswith("<think>") and r["solution"].endswith("</answer>") for r in rows)
    assert len({normalise(r["instruction"]) for r in rows}) == 12
    again = run_step("generate.problems", {"domain": "number_theory", "count": 12, "mode": "programmatic", "seed": 3},
                     workdir=tmp_path / "again")
    assert again["problems"].read() == rows


def test_programmatic_length_filter_sets_rows_aside_with_reason(tmp_path):
    cfg = {"domain": "algebra", "count": 3, "mode": "programmatic", "max_chars": 5, "max_rounds": 1}
    with pytest.raises(StepError, match=r"output problems has 0 rows \(failed: \d+ rows\); nothing was cached"):
        run_step("generate.problems", cfg, workdir=tmp_path / "strict")
    out = run_step("generate.problems", {**cfg, "allow_empty": True}, workdir=tmp_path)
    assert out["problems"].read() == []
    failed = out["failed"].read()
    assert failed and all(f["reason"].startswith("too_long: ") for f in failed)


def test_magpie_problems_dedup_exact_and_normalised_and_length_filter(tmp_path, monkeypatch):
    texts = iter(["What is 2+2?", "what is 2 + 2", "Hi", "Find x if 3x = 12.", "Find x if 3x = 12.",
                  "Compute 7 * 8.", "What is 2+2?  assistant",
                  "Prove that 17 is prime."] + [f"Problem number {i}?" for i in range(50)])
    backend = ScriptedBackend(answer=lambda p, seed, k: next(texts))
    loads = use_scripted_backend(monkeypatch, backend)
    out = run_step("generate.problems", {"domain": "algebra", "count": 5, "mode": "magpie", "min_chars": 5,
                                         "model": "Qwen/Qwen2.5-7B-Instruct", "backend": {**SCRIPTED, "shard_size": 4}},
                   workdir=tmp_path)
    rows = out["problems"].read()
    assert [r["instruction"] for r in rows] == ["What is 2+2?", "Find x if 3x = 12.", "Compute 7 * 8.",
                                                "Prove that 17 is prime.", "Problem number 0?"]
    assert [r["id"] for r in rows] == [f"algebra_{i:06d}" for i in range(1, 6)]
    reasons = sorted(f["reason"].split(":")[0] for f in out["failed"].read())
    assert reasons == ["duplicate", "duplicate", "duplicate", "too_short"]
    # the prompt is Qwen's pre-query template around the domain system prompt; stops end the user turn
    prompt, sampling = backend.calls[0][0][0], backend.calls[0][1]
    assert prompt == PRE_QUERY_TEMPLATES["qwen2.5"]["template"].replace("{system}", domain_system_prompt("algebra"))
    assert "<|im_end|>" in sampling.stop and sampling.temperature == 1.0
    assert loads[0][1] == "Qwen/Qwen2.5-7B-Instruct" and backend.closed == 1


def test_magpie_failed_draws_are_counted_not_passed_on(tmp_path, monkeypatch):
    def fail(p, attempt):
        return Completion(text="", finish_reason="error", error="boom") if attempt % 3 == 0 else None

    backend = ScriptedBackend(fail=fail)
    use_scripted_backend(monkeypatch, backend)
    out = run_step("generate.problems", {"domain": "geometry", "count": 4, "mode": "magpie", "backend": SCRIPTED,
                                         "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"}, workdir=tmp_path)
    rows = out["problems"].read()
    assert len(rows) == 4 and all(r["instruction"] for r in rows)
    assert any(f["reason"] == "error: boom" for f in out["failed"].read())
    assert backend.calls[0][0][0].endswith("<｜User｜>")


def test_template_names_and_custom_template():
    assert template_for_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B") == "deepseek-r1-distill"
    assert template_for_model("deepseek-ai/DeepSeek-R1-Distill-Llama-70B") == "deepseek-r1-distill"
    assert template_for_model("meta-llama/Meta-Llama-3.1-8B-Instruct") == "llama3"
    assert template_for_model("Qwen/Qwen2.5-Math-7B-Instruct") == "qwen2.5"
    assert template_for_model("Qwen/Qwen2-7B-Instruct") == "qwen2"
    assert template_for_model("/models/mine") is None
    assert clean_magpie_query("  What is 3+4?\nassistant ") == "What is 3+4?"


def test_custom_pre_query_template(tmp_path, monkeypatch):
    backend = ScriptedBackend()
    use_scripted_backend(monkeypatch, backend)
    run_step("generate.problems",
             {"domain": "calculus", "count": 2, "model": "x", "backend": SCRIPTED, "template": "custom",
              "pre_query_template": "SYS {system}\nUSER:", "stop": ["\nASSISTANT"]},
             workdir=tmp_path)
    prompt, sampling = backend.calls[0][0][0], backend.calls[0][1]
    assert prompt.startswith("SYS You are an AI assistant") and prompt.endswith("\nUSER:")
    assert sampling.stop == ["\nASSISTANT"]


def test_template_from_chat_template_cuts_at_the_user_text():
    from _tiny import make_tokenizer

    tok = make_tokenizer()
    tmpl, stop = template_from_chat_template(tok, "SYSTEM PROMPT")
    assert tmpl == "<|system|>SYSTEM PROMPT\n<|user|>"
    assert stop == ["<|end|>"]  # the template ends the user turn with a bare newline; EOS still stops


def test_unknown_template_is_a_step_error(tmp_path, monkeypatch):
    use_scripted_backend(monkeypatch, ScriptedBackend())
    with pytest.raises(StepError, match=r"template: unknown template 'mistral'"):
        run_step("generate.problems",
                 {"domain": "algebra", "count": 1, "model": "m", "backend": SCRIPTED, "template": "mistral"},
                 workdir=tmp_path)


# ---------------------------------------------------------------------------- responses / candidates
def test_responses_retry_then_set_aside_with_reason(tmp_path, monkeypatch):
    def fail(p, attempt):
        if "x + 2 =" in p and attempt == 0:
            return Completion(text="", finish_reason="error", error="server error 503")  # recovers on retry
        if "x + 3 =" in p:
            return Completion(text="partial", finish_reason="length")  # always cut off
        if "x + 4 =" in p:
            return Completion(text="   ")  # always empty
        return None

    backend = ScriptedBackend(fail=fail)
    use_scripted_backend(monkeypatch, backend)
    out = run_step("generate.responses", {"model": "m", "backend": SCRIPTED, "retries": 2},
                   {"problems": problems_ds(tmp_path)},
                   workdir=tmp_path / "run")
    rows = out["responses"].read()
    assert [r["id"] for r in rows] == ["algebra_000001", "algebra_000002", "algebra_000005", "algebra_000006"]
    assert all(set(r) == {"instruction", "response", "id", "answer", "domain"} for r in rows)
    assert all(isinstance(r["response"], str) and r["response"].strip() for r in rows)
    failed = {f["id"]: f for f in out["failed"].read()}
    assert failed["algebra_000003"]["reason"] == "length: cut off at max_new_tokens"
    assert failed["algebra_000004"]["reason"] == "empty: the model returned no text"
    assert failed["algebra_000003"]["attempts"] == 3  # first try + 2 retries
    assert backend.calls[0][1].temperature == 0.0 and backend.calls[0][1].n == 1  # greedy: one response per problem
    log = (tmp_path / "run" / "step.log").read_text()
    assert "6 rows, 4 ok, 2 set aside as failed (empty=1, length=1), 3 needed a retry" in log


def test_keep_truncated_passes_length_cut_rows(tmp_path, monkeypatch):
    backend = ScriptedBackend(fail=lambda p, a: Completion(text="cut", finish_reason="length"))
    use_scripted_backend(monkeypatch, backend)
    out = run_step("generate.responses", {"model": "m", "backend": SCRIPTED, "keep_truncated": True},
                   {"problems": problems_ds(tmp_path, 2)},
                   workdir=tmp_path / "run")
    assert [r["response"] for r in out["responses"].read()] == ["cut", "cut"]


def test_candidates_are_n_independent_samples_and_only_missing_ones_are_redrawn(tmp_path, monkeypatch):
    def fail(p, attempt):  # the first call for problem 1 returns errors for every sample
        return Completion(text="", finish_reason="error", error="timeout") if "x + 1 =" in p and attempt == 0 else None

    backend = ScriptedBackend(fail=fail)
    use_scripted_backend(monkeypatch, backend)
    out = run_step("generate.candidates", {"model": "m", "backend": SCRIPTED}, {"problems": problems_ds(tmp_path, 3)},
                   workdir=tmp_path / "run")
    rows = out["candidates"].read()
    assert len(rows) == 3
    for r in rows:
        assert set(r) >= {"instruction", "responses", "id"}
        assert len(r["responses"]) == 5 and len(set(r["responses"])) == 5  # independent draws, not 5 copies
    first = backend.calls[0][1]
    assert first.n == 5 and first.temperature == 0.8
    retry = backend.calls[1]
    assert retry[0] == ["Solve for x: x + 1 = 2"] and retry[1].seed != first.seed
    assert out["failed"].read() == []


def test_problem_column_is_accepted_and_empty_instructions_set_aside(tmp_path, monkeypatch):
    write_records(tmp_path / "p" / "data.jsonl", [{"id": "a", "problem": "What is 1+1?", "answer": "2"},
                                                  {"id": "b", "problem": "  "}])
    use_scripted_backend(monkeypatch, ScriptedBackend())
    out = run_step("generate.responses", {"model": "m", "backend": SCRIPTED}, {"problems": tmp_path / "p"},
                   workdir=tmp_path / "run")
    assert [r["instruction"] for r in out["responses"].read()] == ["What is 1+1?"]
    assert out["failed"].read()[0]["reason"] == "input: empty or missing problem"


def test_missing_instruction_column_is_a_clear_error(tmp_path, monkeypatch):
    write_records(tmp_path / "p" / "data.jsonl", [{"id": "a", "text": "What is 1+1?"}])
    use_scripted_backend(monkeypatch, ScriptedBackend())
    with pytest.raises(StepError, match=r"input problems: none of the prompt columns prompt, problem, instruction, "
                                        r"question \(columns: id, text\); set instruction_column"):
        run_step("generate.responses", {"model": "m", "backend": SCRIPTED}, {"problems": tmp_path / "p"},
                 workdir=tmp_path / "run")


def test_no_model_is_a_clear_error(tmp_path):
    with pytest.raises(StepError, match=r"model: no model given; bind input `model`"):
        run_step("generate.responses", {}, {"problems": problems_ds(tmp_path, 1)}, workdir=tmp_path / "run")


def test_killed_candidates_step_resumes_at_last_shard_and_matches_uninterrupted_run(tmp_path, monkeypatch):
    probs = problems_ds(tmp_path, 10)
    cfg = {"model": "m", "backend": {**SCRIPTED, "shard_size": 3}}
    whole = ScriptedBackend()
    use_scripted_backend(monkeypatch, whole)
    ref = run_step("generate.candidates", cfg, {"problems": probs}, workdir=tmp_path / "whole")
    assert len(whole.calls) == 4  # shards of 3, 3, 3, 1

    killed = ScriptedBackend(interrupt_on_call=3)
    use_scripted_backend(monkeypatch, killed)
    with pytest.raises(KeyboardInterrupt):
        run_step("generate.candidates", cfg, {"problems": probs}, workdir=tmp_path / "k", scratch=tmp_path / "scratch")
    resumed = ScriptedBackend()
    use_scripted_backend(monkeypatch, resumed)
    out = run_step("generate.candidates", cfg, {"problems": probs}, workdir=tmp_path / "k2",
                   scratch=tmp_path / "scratch")
    assert len(resumed.calls) == 2  # shards 3 and 4 only
    assert resumed.calls[0][0][0] == "Solve for x: x + 7 = 14"
    a = (ref["candidates"].path / "data.jsonl").read_bytes()
    b = (out["candidates"].path / "data.jsonl").read_bytes()
    assert a == b


def test_tiny_transformers_model_end_to_end(tmp_path):
    """The real TransformersBackend on a tiny random model: rows come out non-empty or set aside."""
    pytest.importorskip("transformers")
    from _tiny import make_tiny_model

    model = make_tiny_model(tmp_path / "model")
    probs = problems_ds(tmp_path, 3)
    out = run_step("generate.candidates", {"n": 3, "max_new_tokens": 8, "keep_truncated": True, "seed": 1,
                                           "backend": {"device": "cpu", "batch_size": 8}},
                   {"problems": probs, "model": model}, workdir=tmp_path / "c")
    rows, failed = out["candidates"].read(), out["failed"].read()
    assert len(rows) + len(failed) == 3
    for r in rows:
        assert len(r["responses"]) == 3 and all(t.strip() for t in r["responses"])
    again = run_step("generate.candidates", {"n": 3, "max_new_tokens": 8, "keep_truncated": True, "seed": 1,
                                             "backend": {"device": "cpu", "batch_size": 8}},
                     {"problems": probs, "model": model}, workdir=tmp_path / "c2")
    assert again["candidates"].read() == rows  # seeded sampling: a rerun gives the same text


def test_magpie_on_a_tiny_transformers_model_derives_the_template_from_its_chat_template(tmp_path):
    """No built-in template for a local model: the pre-query text is cut from its chat template,
    sampled through the real TransformersBackend; whatever comes out is filtered, never empty."""
    from _tiny import make_tiny_model

    model = make_tiny_model(tmp_path / "model")
    out = run_step("generate.problems", {"domain": "algebra", "count": 3, "min_chars": 1, "max_new_tokens": 12,
                                         "max_rounds": 2, "backend": {"device": "cpu"},
                                         "allow_empty": True},  # a random model's text may all be set aside
                   {"model": model}, workdir=tmp_path / "run")
    rows, failed = out["problems"].read(), out["failed"].read()
    assert all(r["instruction"].strip() and r["id"].startswith("algebra_") for r in rows)
    assert len(rows) + len(failed) >= 3
    log = (tmp_path / "run" / "step.log").read_text()
    assert "magpie pre-query template for" in log and "<|system|>You are an AI assistant" in log


def test_candidates_all_identical_are_reported_and_warned(tmp_path, monkeypatch):
    """Issue 9 finding 4: a server that ignores temperature (greedy generation_config) gives n copies."""
    import json

    use_scripted_backend(monkeypatch, ScriptedBackend(answer=lambda p, seed, k: f"the same text for {p}"))
    run_step("generate.candidates", {"model": "m", "backend": SCRIPTED}, {"problems": problems_ds(tmp_path, 3)},
             workdir=tmp_path / "run")
    log = (tmp_path / "run" / "step.log").read_text()
    assert "candidates: 3/3 prompts (100%) got 5 identical samples" in log
    assert "WARNING candidates: 3/3 prompts got 5 identical samples at temperature > 0; is the server sampling?" in log
    assert json.loads((tmp_path / "run" / "notes.json").read_text()) == ["3/3 prompts: 5 identical candidates"]

    use_scripted_backend(monkeypatch, ScriptedBackend())  # distinct samples: reported, no warning
    run_step("generate.candidates", {"model": "m", "backend": SCRIPTED}, {"problems": problems_ds(tmp_path, 3)},
             workdir=tmp_path / "ok")
    log = (tmp_path / "ok" / "step.log").read_text()
    assert "candidates: 0/3 prompts (0%) got 5 identical samples" in log and "WARNING" not in log
    assert not (tmp_path / "ok" / "notes.json").exists()


def test_saved_models_sample_by_default(tmp_path):
    """Servers that follow generation_config.json (transformers serve) sample only with do_sample: true."""
    import json

    data = run_step("problems.arithmetic", {"count": 20, "min_value": 0, "max_value": 9},
                    workdir=tmp_path / "d")["problems"]
    tok = run_step("tokenizer.train", {"kind": "bpe", "vocab_size": 40, "hard_vocab_limit": False},
                   {"data": data}, workdir=tmp_path / "tok")["tokenizer"]
    model = run_step("train.pretrain", {"max_steps": 1, "hidden_size": 16, "intermediate_size": 32, "num_layers": 1,
                                        "num_heads": 2, "max_length": 32},
                     {"data": data, "tokenizer": tok}, workdir=tmp_path / "pre")["model"]
    assert json.loads((model.path / "generation_config.json").read_text())["do_sample"] is True


@pytest.mark.parametrize("bad, message", [
    ("max_new_tokens: 0", "config field 'max_new_tokens': Input should be greater than or equal to 1 (got 0)"),
    ("temperature: -0.5", "config field 'temperature': Input should be greater than or equal to 0 (got -0.5)"),
    ("top_p: 0", "config field 'top_p': Input should be greater than 0 (got 0)"),
])
def test_sampling_settings_that_make_no_sense_are_plan_time_errors(cli, bad, message):
    """max_new_tokens 0 once generated one token per row anyway (the transformers backend's floor),
    so the rows were 'cut off at max_new_tokens', or cached as one-token answers with keep_truncated."""
    import json

    from conftest import write

    write(cli.tmp / "problems.jsonl", json.dumps({"id": "a", "instruction": "1+2"}) + "\n")
    write(cli.tmp / "gen.yaml", f"""recipe: gen
steps:
  - id: problems
    uses: data.from_file
    with: {{path: problems.jsonl}}
  - id: responses
    uses: generate.responses
    with: {{model: ./m, keep_truncated: true, {bad}}}
    inputs: {{problems: "${{steps.problems.data}}"}}
""")
    p = cli("run", "gen.yaml", check=2)
    assert "error: gen.yaml:8:" in p.stderr and f"step responses: {message}" in p.stderr, p.stderr
    assert not list(cli.cache.rglob("entry.json"))
