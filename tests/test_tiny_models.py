"""train.pretrain / evaluate.accuracy / train.finetune / evaluate.compare on tiny sizes, and a
short end-to-end run of recipes/arithmetic_llm.yaml (tiny profile, shrunk further by --set)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.recipe.artifact_types import Dataset, write_records
from engine.recipe.errors import StepError
from engine.run.testing import run_step
from steps.common.mathcheck import extract_answer, is_correct

ROOT = Path(__file__).resolve().parent.parent
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_length": 48,
        "max_steps": 30, "logging_steps": 5, "warmup_steps": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    data = run_step("problems.arithmetic", {"count": 300, "min_value": -9, "max_value": 9, "seed": 0},
                    workdir=d / "data")["problems"]
    heldout = run_step("problems.arithmetic", {"count": 40, "min_value": -9, "max_value": 9, "seed": 1},
                       {"exclude": data}, workdir=d / "heldout")["problems"]
    tok = run_step("tokenizer.train", {"vocab_size": 30, "hard_vocab_limit": False}, {"data": data},
                   workdir=d / "tok")["tokenizer"]
    out = run_step("train.pretrain", TINY, {"data": data, "tokenizer": tok}, workdir=d / "pretrain")
    ev = run_step("evaluate.accuracy", {"max_new_tokens": 24}, {"data": heldout, "model": out["model"]},
                  workdir=d / "eval")
    return {"dir": d, "data": data, "heldout": heldout, "tokenizer": tok, **out, "eval": ev}


def test_pretrain_saves_a_loadable_model_with_its_tokenizer_and_a_loss_curve(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = trained["model"].path
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.hidden_size == 32 and model.config.max_position_embeddings == 48
    assert model.config.tie_word_embeddings
    assert "<answer>" in tok.get_vocab() and tok.chat_template
    m = trained["report"].metrics()
    assert m["steps"] == 30 and m["rows"] == 300 and m["too_long"] == 0
    assert [c["step"] for c in m["curve"]] == list(range(3, 31, 3))  # logging_steps 5, but ten points at least
    assert m["curve"][-1]["loss"] < m["curve"][0]["loss"]
    assert (trained["report"].path / "loss.png").stat().st_size > 1000


def test_evaluation_errors_are_exactly_the_rows_marked_wrong(trained):
    ev = trained["eval"]
    preds = ev["predictions"].read()
    assert [p["id"] for p in preds] == [r["id"] for r in trained["heldout"].read()]
    for p in preds:  # the flag is what the shared checker says about the output
        assert p["correct"] == is_correct(extract_answer(p["output"]), p["answer"])
    errors = ev["errors"].read()
    assert [e["id"] for e in errors] == [p["id"] for p in preds if not p["correct"]]
    m = ev["report"].metrics()
    assert m["n"] == 40 and m["correct"] == 40 - len(errors)
    assert m["per_domain"]["arithmetic"]["n"] == 40
    assert 0 <= m["format_rate"] <= 1 and len(m["examples"]) == 10
    assert (ev["report"].path / "accuracy.png").exists()


def test_chat_prompt_is_the_training_format(trained):
    # the model dir's chat template renders a problem exactly as train.pretrain framed it
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(trained["model"].path)
    text = tok.apply_chat_template([{"role": "user", "content": "3+4"}], tokenize=False, add_generation_prompt=True)
    assert text == "3+4\n"


def test_finetune_mixes_errors_with_replay(trained):
    errors = trained["eval"]["errors"]
    n_err = len(errors)
    assert n_err > 0, "a 30-step model should still get some held-out problems wrong"
    out = run_step("train.finetune", {"max_steps": 5, "replay_fraction": 0.5, "logging_steps": 1},
                   {"model": trained["model"], "data": errors, "replay": trained["data"]},
                   workdir=trained["dir"] / "ft")
    m = out["report"].metrics()
    assert m["errors"] == n_err and m["replay"] == n_err and m["examples"] == 2 * n_err
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out["model"].path)
    AutoTokenizer.from_pretrained(out["model"].path)


def test_finetune_with_no_errors_passes_the_model_through(trained, tmp_path):
    write_records(tmp_path / "empty" / "data.jsonl", [])
    out = run_step("train.finetune", {"max_steps": 5}, {"model": trained["model"], "data": tmp_path / "empty"},
                   workdir=tmp_path / "w")
    src = trained["model"].path / "model.safetensors"
    assert (out["model"].path / "model.safetensors").read_bytes() == src.read_bytes()
    assert out["report"].metrics()["skipped"] == "empty error set"


def test_evaluation_without_answers_is_a_clear_error(trained, tmp_path):
    write_records(tmp_path / "d" / "data.jsonl", [{"problem": "1+1"}, {"problem": "2+2"}])
    with pytest.raises(StepError, match=r"evaluate.accuracy: data: row 0 of .* has no 'answer' field to check "
                                        r"against \(columns: problem\)"):
        run_step("evaluate.accuracy", {}, {"data": tmp_path / "d", "model": trained["model"]}, workdir=tmp_path / "w")


def test_evaluation_without_a_model_is_a_clear_error(trained, tmp_path):
    with pytest.raises(StepError, match="evaluate.accuracy: model: no model given"):
        run_step("evaluate.accuracy", {}, {"data": trained["heldout"]}, workdir=tmp_path)


def test_pretrain_without_the_text_column_is_a_clear_error(trained, tmp_path):
    write_records(tmp_path / "d" / "data.jsonl", [{"problem": "1+1", "answer": "2"}])
    with pytest.raises(StepError, match=r"train.pretrain: data: .*: none of the completion columns "
                                        r"completion, solution, response, output \(columns: answer, problem\)"):
        run_step("train.pretrain", TINY, {"data": tmp_path / "d", "tokenizer": trained["tokenizer"]},
                 workdir=tmp_path / "w")


def test_pretrain_context_too_short_is_a_clear_error(trained, tmp_path):
    with pytest.raises(StepError, match=r"train.pretrain: max_length: all 300 rows are longer than 8 tokens"):
        run_step("train.pretrain", {**TINY, "max_length": 8},
                 {"data": trained["data"], "tokenizer": trained["tokenizer"]},
                 workdir=tmp_path)


def test_compare_table(trained, tmp_path):
    rep = trained["eval"]["report"]
    out = run_step("evaluate.compare", {"labels": ["before", "after"]}, {"reports": [rep, rep]}, workdir=tmp_path)
    table = (out["report"].path / "summary.md").read_text()
    assert "| domain" in table and "before" in table and "+0.0 pts" in table
    with pytest.raises(StepError, match="evaluate.compare: labels: 1 labels for 2 reports"):
        run_step("evaluate.compare", {"labels": ["x"]}, {"reports": [rep, rep]}, workdir=tmp_path / "b")


# ---------------------------------------------------------------- end to end

def _recipe(tmp_path, *args):
    cmd = [sys.executable, "-m", "engine.cli", *args, "--cache-dir", str(tmp_path / "cache"),
           "--artifacts-dir", str(tmp_path / "artifacts")]
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    runs = sorted((tmp_path / "cache" / "runs").glob("*.json"))
    return p, json.loads(runs[-1].read_text())


def test_arithmetic_llm_recipe_end_to_end_tiny(tmp_path):
    shrink = ["--profile", "tiny", "--set", "vars.count=300", "--set", "vars.heldout=40",
              "--set", "vars.pretrain_steps=20", "--set", "vars.finetune_steps=5", "--set", "vars.mine_limit=60"]
    p, run = _recipe(tmp_path, "run", "recipes/arithmetic_llm.yaml", *shrink)
    nodes = {n["label"]: n for n in run["nodes"]}
    assert {n["status"] for n in nodes.values()} == {"ran"}
    assert {"data", "tokenizer", "pretrain", "eval0", "mine1", "finetune1", "eval1", "mine2", "finetune2",
            "eval2", "compare"} <= set(nodes)

    def out(label, name):
        key = nodes[label]["key"]
        return tmp_path / "cache" / key[:2] / key / "outputs" / name

    from transformers import AutoModelForCausalLM, AutoTokenizer

    for label in ("pretrain", "finetune1", "finetune2"):
        AutoModelForCausalLM.from_pretrained(out(label, "model"))
        assert AutoTokenizer.from_pretrained(out(label, "model")).chat_template
    AutoTokenizer.from_pretrained(out("tokenizer", "tokenizer"))
    # the error set holds exactly the records the evaluation marked wrong
    preds = Dataset(out("mine1", "predictions")).read()
    assert len(preds) == 60
    errors = Dataset(out("mine1", "errors")).read()
    assert [e["id"] for e in errors] == [r["id"] for r in preds if not r["correct"]]
    assert "held-out accuracy per round" in p.stdout
    # a rerun is fully cached
    _, again = _recipe(tmp_path, "run", "recipes/arithmetic_llm.yaml", *shrink)
    assert {n["status"] for n in again["nodes"]} == {"cached"}


def test_quickstart_recipe_tiny_prints_the_before_after_table(tmp_path, tmp_path_factory):
    from _tiny import copy_cache, quickstart_tiny_run

    shared = quickstart_tiny_run(tmp_path_factory)
    run = shared.first_run
    assert {n["status"] for n in run["nodes"]} == {"ran"}
    table = next(n for n in run["nodes"] if n["label"] == "table")
    text = (shared.cache / table["key"][:2] / table["key"] / "outputs" / "report" / "summary.md").read_text()
    for domain in ("algebra", "calculus", "geometry", "statistics", "number_theory", "discrete", "arithmetic",
                   "overall"):
        assert f"| {domain}" in text
    assert "before" in shared.first_stdout and "after" in shared.first_stdout
    copy_cache(shared.cache, tmp_path / "cache")
    p2, again = _recipe(tmp_path, "run", "recipes/quickstart.yaml", "--profile", "tiny")
    assert {n["status"] for n in again["nodes"]} == {"cached"}
    assert "overall" in p2.stdout  # the summary is printed on a cached run too
