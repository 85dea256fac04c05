"""evaluate.accuracy with a scripted in-process backend, a stand-in at the backend boundary (a
real model does not answer with server errors on cue; the openai backend's tests use a real
server): a backend error is a failed row (retried, then counted and set aside,
`max_failed_fraction` applies), never a wrong answer that error mining would fine-tune on; a
cut-off or empty answer is the model's answer, scored as it is."""
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

SERVER_ERROR = Completion(text="", finish_reason="error", error="server error 503")


def problems(tmp_path: Path, n: int = 8) -> Path:
    write_records(tmp_path / "problems" / "data.jsonl",
                  [{"id": f"p{i}", "problem": f"{i}+{i}", "answer": str(2 * i)} for i in range(1, n + 1)])
    return tmp_path / "problems"


def number(prompt: str) -> int:
    return int(prompt.split("+")[0])


def answer(prompt: str, seed: int, k: int) -> str:
    """Right for even numbers, one off for odd ones."""
    i = number(prompt)
    return f"<think>{prompt}</think><answer>{2 * i + i % 2}</answer>"


def evaluate(tmp_path, monkeypatch, fail, **config):
    backend = ScriptedBackend(answer=answer, fail=fail)
    use_scripted_backend(monkeypatch, backend)
    out = run_step("evaluate.accuracy", {"model": "m", "backend": SCRIPTED, **config}, {"data": problems(tmp_path)},
                   workdir=tmp_path / "run")
    return out, backend


def test_backend_errors_are_failed_rows_not_wrong_answers_scripted_backend(tmp_path, monkeypatch):
    def fail(prompt, attempt):
        i = number(prompt)
        if i in (5, 8):
            return SERVER_ERROR  # on every attempt
        if i == 6 and attempt == 0:
            return SERVER_ERROR  # recovers on the retry
        if i == 2:
            return Completion(text="<think>2+2 is", finish_reason="length")  # the model ran out of tokens
        if i == 4:
            return Completion(text="")  # the model stopped at once
        return None

    out, backend = evaluate(tmp_path, monkeypatch, fail)
    predictions = {r["id"]: r for r in out["predictions"].read()}
    assert list(predictions) == ["p1", "p2", "p3", "p4", "p6", "p7"]
    # wrong answers, cut-off and empty ones included, are the model's: scored, never retried
    assert [r["id"] for r in out["errors"].read()] == ["p1", "p2", "p3", "p4", "p7"]
    assert (predictions["p2"]["finish_reason"], predictions["p2"]["output"]) == ("length", "<think>2+2 is")
    assert (predictions["p4"]["output"], predictions["p4"]["correct"]) == ("", False)
    assert predictions["p6"]["correct"] is True and backend.attempts["6+6"] == 2
    assert backend.attempts["2+2"] == backend.attempts["4+4"] == 1
    failed = out["failed"].read()
    assert [(f["id"], f["reason"], f["attempts"]) for f in failed] == [
        ("p5", "error: server error 503", 3), ("p8", "error: server error 503", 3)]
    metrics = out["report"].metrics()
    assert (metrics["n"], metrics["correct"], metrics["failed"], metrics["cut_off"]) == (6, 1, 2, 1)
    assert "answers: 2/8 failed: error: server error 503" in (tmp_path / "run" / "step.log").read_text()


def test_more_failed_rows_than_max_failed_fraction_fail_the_step_scripted_backend(tmp_path, monkeypatch):
    def fail(prompt, attempt):
        return SERVER_ERROR if number(prompt) <= 3 else None

    with pytest.raises(StepError, match=r"answers: 3/8 failed: error: server error 503 \(max_failed_fraction 0.25\)"):
        evaluate(tmp_path, monkeypatch, fail, max_failed_fraction=0.25)
    out, _ = evaluate(tmp_path / "lenient", monkeypatch, fail, max_failed_fraction=0.5)
    assert [f["id"] for f in out["failed"].read()] == ["p1", "p2", "p3"]
