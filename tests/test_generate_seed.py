"""generate.from_seed with a scripted in-process backend: n solutions per seed problem, answers
checked against each problem's reference answer, wrong ones and failures set aside with a reason."""
from __future__ import annotations

import json

import pytest

from engine.recipe.errors import StepError
from engine.run.testing import run_step
from steps.backends.base import Completion
from tests._scripted_backend import SCRIPTED, ScriptedBackend, use_scripted_backend


def seed_file(tmp_path, rows):
    folder = tmp_path / "seed"
    folder.mkdir(parents=True)
    (folder / "seed_problems.json").write_text(json.dumps(rows))  # a JSON array file
    return folder


SEED = [
    {"problem": "Compute $3 \\times 4$.", "expected_answer": "12", "problem_source": "aops"},
    {"problem": "Compute $3 \\times 4$.", "expected_answer": "12", "problem_source": "aops"},  # duplicate problem
    {"problem": "Half of one?", "expected_answer": "\\frac{1}{2}", "problem_source": "MATH"},
    {"problem": "Prove it.", "expected_answer": "", "problem_source": "aops"},
    {"problem": "Broken one.", "expected_answer": "3", "problem_source": "aops"},
]


def backend():
    def answer(prompt, seed, k):
        if "3 \\times 4" in prompt:
            return "<think>3*4</think> \\boxed{12}" if k == 0 else "\\boxed{13}"
        if "Half" in prompt:
            return "It is \\boxed{0.5}"
        return "done \\boxed{QED}"

    def fail(prompt, attempt):
        return Completion(text="", finish_reason="error", error="timeout") if "Broken" in prompt else None

    return ScriptedBackend(answer=answer, fail=fail)


def test_from_seed_generates_n_per_problem_and_checks_answers(tmp_path, monkeypatch):
    fake = backend()
    loads = use_scripted_backend(monkeypatch, fake)
    out = run_step("generate.from_seed", {"n": 2, "retries": 1, "backend": SCRIPTED},
                   {"problems": seed_file(tmp_path, SEED)},
                   workdir=tmp_path / "w")
    rows = out["data"].read()
    assert [(r["problem"][:8], r["sample"], r["predicted_answer"], r["correct"]) for r in rows] == [
        ("Compute ", 0, "12", True), ("Half of ", 0, "0.5", True), ("Half of ", 1, "0.5", True),
        ("Prove it", 0, "QED", None), ("Prove it", 1, "QED", None)]
    first = rows[0]
    assert first["expected_answer"] == "12" and first["generation_model"] == "Qwen/Qwen3-32B"
    assert first["problem_source"] == "aops" and first["inference_mode"] == "cot"
    assert first["generated_solution"] == "<think>3*4</think> \\boxed{12}"
    failed = out["failed"].read()
    assert sorted(f["reason"].split(":")[0] for f in failed) == ["error", "wrong answer"]
    # the step's default sampling settings
    _, sampling = fake.calls[0]
    assert (sampling.temperature, sampling.max_new_tokens, sampling.n) == (0.3, 4096, 2)
    assert "inside \\boxed{}." in fake.calls[0][0][0]
    assert [m for _, m in loads] == ["Qwen/Qwen3-32B"]
    m = out["report"].metrics()
    assert (m["problems"], m["samples"], m["correct"], m["incorrect"], m["unchecked"], m["kept"]) == (4, 6, 3, 1, 2, 5)


def test_from_seed_keep_incorrect_and_limit(tmp_path, monkeypatch):
    use_scripted_backend(monkeypatch, backend())
    out = run_step("generate.from_seed", {"n": 2, "keep_incorrect": True, "limit": 1, "backend": SCRIPTED},
                   {"problems": seed_file(tmp_path, SEED)}, workdir=tmp_path / "w")
    assert [r["correct"] for r in out["data"].read()] == [True, False]


def test_from_seed_instruction_column_and_missing_problem_column(tmp_path, monkeypatch):
    use_scripted_backend(monkeypatch, backend())
    out = run_step("generate.from_seed", {"backend": SCRIPTED},
                   {"problems": seed_file(tmp_path, [{"instruction": "Half of one?",
                                                      "answer": "1/2"}])},
                   workdir=tmp_path / "w")
    row = out["data"].read()[0]
    assert (row["problem"], row["expected_answer"], row["correct"]) == ("Half of one?", "1/2", True)
    assert "instruction" not in row and "answer" not in row
    with pytest.raises(StepError, match="none of the problem columns prompt, problem, instruction, question"):
        run_step("generate.from_seed", {}, {"problems": seed_file(tmp_path / "x", [{"text": "y"}])},
                 workdir=tmp_path / "w2")
