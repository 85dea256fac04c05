"""recipes/qstar.yaml (q* data generation): the full-scale plan, and the tiny profile end to end with
π_θ = the tiny pretrained arithmetic model and π_t = its first error-fine-tuned successor: q*
samples for all four α methods in OpenAI `messages` format, diagnostics per sample, the
analysis table, and a rerun that is fully cached."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from _tiny import run_tiny_profile
from conftest import ROOT, RecipeCLI

from engine.recipe.plan import plan_file

RECIPE = ROOT / "recipes" / "qstar.yaml"
METHODS = ["fixed", "entropy", "kl_symmetry", "ess_balance"]


def nodes(plan):
    return {n.label: n for n in plan.nodes}


def test_full_scale_plan_samples_every_method_from_the_seed_model_pair():
    plan = nodes(plan_file(RECIPE))
    assert [f"sample[{m}]" for m in METHODS] == [k for k in plan if k.startswith("sample[")]
    for m in METHODS:
        cfg = plan[f"sample[{m}]"].config
        assert (cfg.model_theta, cfg.model_t, cfg.alpha_method) == ("meta-llama/Llama-2-7b-hf",
                                                                    "meta-llama/Llama-2-7b-chat-hf", m)
    assert [r.label for r in plan["analyze"].inputs["diagnostics"]] == [f"sample[{m}]" for m in METHODS]
    for m in METHODS:  # the exported file names, <name>.jsonl and <name>.diagnostics.jsonl, one folder each
        export = plan[f"export[{m}]"]
        assert [f.name for f in export.config.files] == [f"samples/generated_{m}.jsonl",
                                                         f"diagnostics/generated_{m}.diagnostics.jsonl"]
        assert export.config.directory is None  # under artifacts/, never the working directory
        assert [str(r) for r in export.inputs["datasets"]] == [f"sample[{m}].samples", f"sample[{m}].diagnostics"]


def test_tiny_plan_pairs_the_pretrained_model_with_its_fine_tuned_successor():
    plan = nodes(plan_file(RECIPE, profile="tiny"))
    for m in METHODS:
        inputs = plan[f"sample[{m}]"].inputs
        assert inputs["model_theta"].label == "arithmetic_llm[tiny]/pretrain"
        assert inputs["model_t"].label == "arithmetic_llm[tiny]/finetune1"


# ---------------------------------------------------------------------------- the tiny profile, end to end

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return run_tiny_profile(tmp_path_factory, RECIPE, "qstar")


def rows(cli: RecipeCLI, step: str, name: str) -> list[dict]:
    path = cli.artifacts / "qstar" / step / name / "data.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def report(cli: RecipeCLI) -> Path:
    return cli.artifacts / "qstar" / "analyze" / "report"


def test_tiny_run_reuses_both_tiny_models(tiny):
    st = tiny.first_statuses
    assert st["arithmetic_llm[tiny]/pretrain"] == st["arithmetic_llm[tiny]/finetune1"] == "cached"
    assert all(st[f"sample[{m}]"] == "ran" for m in METHODS) and st["analyze"] == "ran"


@pytest.mark.parametrize("method", METHODS)
def test_samples_are_the_seed_messages_jsonl_with_diagnostics_per_sample(tiny, method):
    samples = rows(tiny, f"sample[{method}]", "samples")
    problems = [r["problem"] for r in rows(tiny, "problems", "problems")]
    assert len(problems) == 8 and len(samples) == 8 * 4  # 4 samples per prompt
    assert all(set(s) == {"messages", "sample_idx"} for s in samples)
    assert [s["sample_idx"] for s in samples] == list(range(32))
    assert [s["messages"][0] for s in samples] == [{"role": "user", "content": p} for p in problems for _ in range(4)]
    assert all(s["messages"][1]["role"] == "assistant" and s["messages"][1]["content"] for s in samples)
    diags = rows(tiny, f"sample[{method}]", "diagnostics")
    assert [d["sample_idx"] for d in diags] == list(range(32))
    for d in diags:
        assert d["alpha_method"] == method and d["n"] == 4
        assert {"alpha_mean", "ess_ratio_mean", "kl_theta_mean", "kl_t_mean", "kish_ess_theta", "kish_ess_t"} <= set(d)
        assert 1 - 1e-9 <= d["kish_ess_theta"] <= 4 + 1e-9 and 1 - 1e-9 <= d["kish_ess_t"] <= 4 + 1e-9
        assert 0 <= d["alpha_mean"] <= 1
    exported = tiny.artifacts / "qstar" / f"export.{method}" / "files"  # samples and diagnostics apart
    assert [json.loads(x) for x in (exported / "samples" / f"generated_{method}.jsonl").read_text().splitlines()] \
        == samples
    assert [json.loads(x) for x in (exported / "diagnostics" / f"generated_{method}.diagnostics.jsonl")
            .read_text().splitlines()] == diags


def test_exports_are_one_dataset_per_folder_that_load_dataset_reads(tiny):
    from datasets import load_dataset

    assert not (tiny.tmp / "data").exists()  # nothing in the working directory
    for method in METHODS:
        files = tiny.artifacts / "qstar" / f"export.{method}" / "files"
        samples = load_dataset(str(files / "samples"))["train"]
        assert samples.column_names == ["messages", "sample_idx"] and samples.num_rows == 32
        assert samples[0]["messages"][0]["role"] == "user"
        diags = load_dataset(str(files / "diagnostics"))["train"]
        assert diags.num_rows == 32 and {"alpha_mean", "kl_theta_mean", "sample_idx"} <= set(diags.column_names)


def test_theta_and_t_differ_and_the_methods_can_be_told_apart(tiny):
    diags = {m: rows(tiny, f"sample[{m}]", "diagnostics") for m in METHODS}
    # two different models: q* is away from both of them on some tokens
    assert max(d["kl_theta_mean"] + d["kl_t_mean"] for d in diags["kl_symmetry"]) > 1e-3
    assert all(d["alpha_mean"] == pytest.approx(0.5) for d in diags["fixed"])
    assert all(d["kl_gap_mean"] < 1e-4 for d in diags["kl_symmetry"])  # the Chernoff point equalises the KLs
    mean_alpha = {m: sum(d["alpha_mean"] for d in ds) / len(ds) for m, ds in diags.items()}
    assert len({round(a, 3) for a in mean_alpha.values()}) == 4  # four different α choices
    mean_gap = {m: sum(d["kl_gap_mean"] for d in ds) / len(ds) for m, ds in diags.items()}
    assert min(mean_gap, key=mean_gap.get) == "kl_symmetry"


def test_analyze_report_has_the_criteria_table_for_all_four_methods(tiny):
    table = (report(tiny) / "criteria.md").read_text()
    assert "| method | ESS ratio in [0.9, 1.1] | mean \\|ΔKL\\| < 0.05 | α in [0.2, 0.8] |" in table
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    for m in METHODS:
        cells = [c.strip() for c in lines[m].strip("|").split("|")][1:]
        assert len(cells) == 3 and all(c.startswith(("meets (", "fails (")) for c in cells)
    metrics = json.loads((report(tiny) / "metrics.json").read_text())
    assert set(metrics["methods"]) == set(METHODS)
    assert all(metrics["methods"][m]["samples"] == 32 for m in METHODS)
    assert metrics["methods"]["fixed"]["alpha_mean"] == pytest.approx(0.5)
    assert set(metrics["meets"]) == {"ess_ratio", "kl_symmetry", "alpha_range"}
    assert "kl_symmetry" in metrics["meets"]["kl_symmetry"]
    for fig in ("alpha_hist.png", "ess_ratio_hist.png", "kl_scatter.png", "methods.png"):
        assert (report(tiny) / fig).stat().st_size > 0


def test_rerun_is_fully_cached(tiny):
    tiny("run", str(RECIPE), "--profile", "tiny", "-q")
    assert set(tiny.statuses().values()) == {"cached"}
