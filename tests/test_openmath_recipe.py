"""recipes/openmath_sft.yaml (OpenMathReasoning curated for SFT): the plan at full scale, the
optional judge, and the tiny profile end to end (fixture -> filters -> tiny model -> local
publish folder that `datasets` loads)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from engine.recipe.plan import plan_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "openmath_sft.yaml"


def nodes(plan):
    return {n.label: n for n in plan.nodes}


def test_full_scale_plan_follows_the_seed():
    plan = nodes(plan_file(RECIPE))
    assert list(plan) == ["openmath", "hard", "judged[fraction]", "unsolved", "solutions", "publish"]
    load = plan["openmath"].config
    assert (load.hub, load.revision, load.split, load.path) == ("nvidia/OpenMathReasoning", "main", "cot", [])
    hard = plan["hard"].config
    assert (hard.max_pass_rate, hard.save_every, hard.batch_size, hard.pass_rate_column, hard.unparseable) == (
        0.1, 10000, 5000, "pass_rate_72b_tir", "drop")
    judge = plan["judged[fraction]"].config
    assert (judge.inference_model, judge.judgement_model, judge.keep) == ("Qwen/Qwen3-32B", "Qwen/Qwen3-32B",
                                                                          "incorrect")
    assert judge.inference_backend.kind == "vllm" and judge.judgement_backend.kind == "vllm"
    gen = plan["solutions"].config
    assert (gen.model, gen.max_tokens, gen.temperature, gen.backend.kind) == ("Qwen/Qwen3-32B", 4096, 0.3, "vllm")
    assert plan["solutions"].inputs["problems"].label == "judged[fraction]"
    pub = plan["publish"].config
    assert (pub.target, pub.private, pub.split_names) == ("hub", True, ["train", "generated"])
    assert [r.label for r in plan["publish"].inputs["splits"]] == ["hard", "solutions"]


def test_judge_is_optional_and_tensor_parallel_is_a_var():
    plan = nodes(plan_file(RECIPE, sets=["vars.judge=false", "vars.tp=2"]))
    assert "judged[fraction]" not in plan
    assert plan["solutions"].inputs["problems"].label == "unsolved"
    assert plan["solutions"].config.backend.tensor_parallel_size == 2
    judged = nodes(plan_file(RECIPE, sets=["vars.tp=2", "vars.judge_start=0.5",
                                           "vars.judge_end=1.0"]))["judged[fraction]"]
    assert judged.config.inference_backend.tensor_parallel_size == 2
    assert (judged.config.start, judged.config.end) == (0.5, 1.0)


def test_tiny_profile_plan_uses_the_fixture_and_the_tiny_model():
    plan = nodes(plan_file(RECIPE, profile="tiny"))
    assert (plan["openmath"].config.path == ["tests/data/openmath_fixture.parquet"]
            and plan["openmath"].config.hub is None)
    assert plan["publish"].config.target == "local"
    assert plan["solutions"].inputs["model"].label == "arithmetic_llm[tiny]/pretrain"


# ---------------------------------------------------------------------------- the tiny profile, end to end

class Runner:
    def __init__(self, tmp: Path):
        self.tmp, self.cache, self.artifacts = tmp, tmp / "cache", tmp / "artifacts"
        self.env = {**os.environ, "COLUMNS": "200",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "engine.cli", "run", str(RECIPE), "--profile", "tiny", *args,
               "--cache-dir", str(self.cache), "--artifacts-dir", str(self.artifacts)]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=self.env)  # paths are repo-relative
        assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
        return p

    def last_run(self) -> dict:
        return json.loads(sorted(self.cache.joinpath("runs").glob("*.json"))[-1].read_text())

    def statuses(self) -> dict[str, str]:
        return {n["label"]: n["status"] for n in self.last_run()["nodes"]}

    def out(self, step: str) -> Path:
        return self.artifacts / "openmath_sft" / step


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    r = Runner(tmp_path_factory.mktemp("openmath_tiny"))
    r()
    return r


@pytest.mark.slow
def test_tiny_profile_publishes_a_folder_datasets_loads(tiny, tmp_path):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    hard = json.loads((tiny.out("hard") / "report" / "metrics.json").read_text())
    assert (hard["rows_in"], hard["kept"], hard["unparseable"], hard["unparseable_values"]) == (300, 91, 106,
                                                                                                {"n/a": 106})
    assert hard["parts"] == 4  # save_every 25 in the tiny profile
    folder = tiny.out("publish") / "folder"
    train = load_dataset(str(folder))["train"]  # the filtered problems: config `default`, split train
    assert train.num_rows == 91 and train.column_names[:5] == [
        "expected_answer", "problem_type", "problem_source", "generation_model", "pass_rate_72b_tir"]
    assert all(float(r) <= 0.1 for r in train["pass_rate_72b_tir"])
    # how many problems the tiny model misses depends on the CPU it was trained on: check invariants
    # (n = 2 samples per problem the judge kept, at most seed_problems = 6), never a count it produced
    from engine.recipe.artifact_types import Dataset

    judged = {r["problem"] for r in Dataset(tiny.out("judged.fraction") / "data").read()}
    sol = json.loads((tiny.out("solutions") / "report" / "metrics.json").read_text())
    assert sol["problems"] == min(6, len(judged)) and sol["samples"] == 2 * sol["problems"]
    generated = load_dataset(str(folder), "generated")["train"]
    assert generated.num_rows == sol["kept"] <= sol["samples"]
    assert set(generated["sample"]) <= {0, 1} and set(generated["problem"]) <= judged
    # the model that wrote them by its digest, never the local cache path it was loaded from
    assert {g[:7] for g in generated["generation_model"]} == {"blake3:"} and sol["model"] == generated[0][
        "generation_model"]
    card = DatasetCard.load(folder / "README.md")
    assert [c["config_name"] for c in card.data.configs] == ["default", "generated"]
    record = json.loads(card.text.split("```json\n", 1)[1].split("\n```", 1)[0])
    assert (record["recipe"], record["profile"], record["step"]) == ("openmath_sft", "tiny", "publish")
    assert {"openmath", "hard", "judged[fraction]", "solutions",
            "arithmetic_llm[tiny]/pretrain"} <= set(record["steps"])
    keys = {n["label"]: n["key"] for n in tiny.last_run()["nodes"]}
    assert record["steps"]["hard"]["key"] == keys["hard"] and record["key"] == keys["publish"]
    # bound input wins
    assert record["steps"]["solutions"]["models"] == {"model": "arithmetic_llm[tiny]/pretrain.model"}
    assert record["steps"]["judged[fraction]"]["models"]["inference_model"] == "arithmetic_llm[tiny]/pretrain.model"
    assert sorted(p.name for p in (folder / "train").iterdir()) == [f"part-{i:05d}.json" for i in range(4)]


@pytest.mark.slow
def test_the_published_folder_loads_offline_config_by_config_with_no_local_path(tiny, tmp_path):
    from _published import load_published, text_leaks

    folder = tiny.out("publish") / "folder"
    forbidden = [str(tiny.tmp), str(ROOT), str(Path.home()) + "/"]
    got = load_published(folder, forbidden, tmp_path)
    assert list(got["default"]) == ["train"] and list(got["configs"]) == ["default", "generated"]
    assert all(list(c) == ["train"] and c["train"]["rows"] > 0 for c in got["configs"].values())
    assert got["leaks"] == [] and text_leaks(folder, forbidden) == []


@pytest.mark.slow
def test_tiny_rerun_is_cached_and_a_new_threshold_reruns_only_what_depends_on_it(tiny):
    tiny()
    assert set(tiny.statuses().values()) == {"cached"}
    tiny("--set", "vars.pass_rate=0.05")
    st = tiny.statuses()
    assert st["openmath"] == "cached" and st["arithmetic_llm[tiny]/pretrain"] == "cached"
    assert all(st[s] == "ran" for s in ("hard", "judged[fraction]", "unsolved", "publish"))
