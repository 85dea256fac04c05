"""recipes/deepseek_all_domains.yaml (the six-domain generation workflow) and export.files: the
plan at full scale, and the tiny profile end to end with the workflow's four JSON shapes."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from engine.recipe.artifact_types import write_records  # noqa: E402
from engine.recipe.errors import StepError  # noqa: E402
from engine.recipe.plan import plan_file  # noqa: E402
from engine.run.testing import run_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "deepseek_all_domains.yaml"
DOMAINS = {"algebra": 10000, "calculus": 10000, "geometry": 6000, "statistics": 6000, "number_theory": 4000,
           "discrete": 8000}
EXPORT_SHAPES = {  # the workflow's four files, their fields in order
    "ins": ["instruction", "id"],
    "ins_res": ["instruction", "response", "id"],
    "ins_5res": ["instruction", "responses", "id"],
    "ins_5res_armorm": ["instruction", "chosen", "rejected", "score_chosen", "score_rejected", "id"],
}


# ---------------------------------------------------------------------------- export.files
def test_export_projects_renames_and_writes_json_and_jsonl(tmp_path):
    write_records(tmp_path / "a" / "data.jsonl", [{"id": "x_1", "problem": "P?", "answer": "1", "domain": "d"}])
    write_records(tmp_path / "b" / "data.jsonl", [{"instruction": "P?", "response": "R", "id": "x_1", "answer": "1"}])
    cfg = {"directory": str(tmp_path / "data"),
           "files": [{"name": "M_d_ins.json", "columns": ["instruction", "id"], "rename": {"problem": "instruction"}},
                     {"name": "sub/M_d_ins_res.jsonl", "columns": ["instruction", "response", "id"]}]}
    out = run_step("export.files", cfg, {"datasets": [tmp_path / "a", tmp_path / "b"]}, workdir=tmp_path / "run")
    ins = json.loads((tmp_path / "data" / "M_d_ins.json").read_text())
    assert ins == [{"instruction": "P?", "id": "x_1"}]
    res = (tmp_path / "data" / "sub" / "M_d_ins_res.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in res] == [{"instruction": "P?", "response": "R", "id": "x_1"}]
    assert (out["files"].path / "M_d_ins.json").read_bytes() == (tmp_path / "data" / "M_d_ins.json").read_bytes()


def test_export_errors_name_the_file_and_column(tmp_path):
    write_records(tmp_path / "a" / "data.jsonl", [{"id": "x_1", "problem": "P?"}])
    with pytest.raises(StepError, match=r"M_ins.json \(from .*\): row 0 has no column\(s\) instruction"):
        run_step("export.files", {"files": [{"name": "M_ins.json", "columns": ["instruction", "id"]}]},
                 {"datasets": [tmp_path / "a"]}, workdir=tmp_path / "r1")
    with pytest.raises(StepError, match=r"files: 2 file\(s\) configured for 1 dataset\(s\)"):
        run_step("export.files", {"files": [{"name": "a.json"}, {"name": "b.json"}]},
                 {"datasets": [tmp_path / "a"]}, workdir=tmp_path / "r2")
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must be a relative path"):
        run_step("export.files", {"files": [{"name": "../escape.json"}]}, {"datasets": [tmp_path / "a"]},
                 workdir=tmp_path / "r3")


def test_export_directory_must_be_absolute_and_out_gets_a_copy(tmp_path):
    """The files live in the step's output (artifacts/<recipe>/<step>/files); a relative directory
    would land wherever `recipe` was started, e.g. inside the repository."""
    from pydantic import ValidationError

    from steps.export.files import ExportFiles

    write_records(tmp_path / "a" / "data.jsonl", [{"x": 1}])
    with pytest.raises(ValidationError, match=r"directory 'data' is relative: the files are under "
                                              r"artifacts/<recipe>/<step>/files already; give an absolute path, "
                                              r"or `recipe run --out DIR`"):
        run_step("export.files", {"directory": "data", "files": [{"name": "x.jsonl"}]},
                 {"datasets": [tmp_path / "a"]}, workdir=tmp_path / "r0")
    cfg = ExportFiles.Config(files=[{"name": "sub/x.jsonl"}])
    out = run_step("export.files", cfg.model_dump(), {"datasets": [tmp_path / "a"]}, workdir=tmp_path / "r1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "r1"]  # nothing beside the step's own folder
    ExportFiles(cfg).place(out, str(tmp_path / "gathered"))  # what `recipe run --out gathered` does
    assert (tmp_path / "gathered" / "sub" / "x.jsonl").read_text() == '{"x": 1}\n'


def test_export_files_that_share_a_folder_must_share_columns(tmp_path):
    """One folder per dataset: load_dataset(folder) and `trl --dataset_name folder` read a folder as one."""
    write_records(tmp_path / "s" / "data.jsonl", [{"messages": [], "sample_idx": 0}])
    write_records(tmp_path / "d" / "data.jsonl", [{"alpha_mean": 0.5, "sample_idx": 0}])
    with pytest.raises(StepError, match=r"x\.diagnostics\.jsonl and x\.jsonl share the top folder but not their "
                                        r"columns \(alpha_mean, sample_idx vs messages, sample_idx\); .* give each its "
                                        r"own, e.g\. name: x\.diagnostics/x\.diagnostics\.jsonl"):
        run_step("export.files", {"files": [{"name": "x.jsonl"}, {"name": "x.diagnostics.jsonl"}]},
                 {"datasets": [tmp_path / "s", tmp_path / "d"]}, workdir=tmp_path / "r1")
    out = run_step("export.files", {"files": [{"name": "samples/x.jsonl"}, {"name": "diagnostics/x.jsonl"}]},
                   {"datasets": [tmp_path / "s", tmp_path / "d"]}, workdir=tmp_path / "r2")
    assert sorted(p.relative_to(out["files"].path).as_posix() for p in out["files"].path.rglob("*.jsonl")) == [
        "diagnostics/x.jsonl", "samples/x.jsonl"]


def test_export_of_zero_rows_fails_unless_allowed(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "data.jsonl").write_text("")
    with pytest.raises(StepError, match=r"x\.jsonl \(from .*\): 0 rows to write .* `allow_empty: true`"):
        run_step("export.files", {"files": [{"name": "x.jsonl"}]}, {"datasets": [tmp_path / "empty"]},
                 workdir=tmp_path / "r1")
    out = run_step("export.files", {"files": [{"name": "x.jsonl"}], "allow_empty": True},
                   {"datasets": [tmp_path / "empty"]}, workdir=tmp_path / "r2")
    assert (out["files"].path / "x.jsonl").read_text() == ""


# ---------------------------------------------------------------------------- the plan, full scale
def by_type(plan) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in plan.nodes:
        out.setdefault(n.uses, []).append(n)
    return out


def test_full_scale_plan_has_24_generation_instances_with_the_seed_counts():
    plan = plan_file(RECIPE)
    t = by_type(plan)
    gen = [n for u in ("generate.problems", "generate.responses", "generate.candidates", "rank.preferences")
           for n in t[u]]
    assert len(gen) == 24 and len(t["export.files"]) == 6 and len(plan.nodes) == 30
    counts = {n.config.domain: n.config.count for n in t["generate.problems"]}
    assert counts == DOMAINS and sum(counts.values()) == 44000
    for n in t["generate.problems"] + t["generate.responses"] + t["generate.candidates"]:
        assert n.config.model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
        assert n.config.backend.kind == "vllm"
    cand = t["generate.candidates"][0].config
    assert (cand.n, cand.temperature) == (5, 0.8)
    assert t["generate.responses"][0].config.temperature == 0.0
    assert t["rank.preferences"][0].config.scorers == ["verifiable", "reward_model"]
    names = [f.name for f in t["export.files"][0].config.files]
    assert names == [f"{s}/DeepSeek-R1-Distill-Qwen-32B_algebra_{s}.json" for s in EXPORT_SHAPES] + [
        f"trl_{s}/DeepSeek-R1-Distill-Qwen-32B_algebra_trl_{s}.jsonl" for s in ("sft", "dpo")]
    assert t["export.files"][0].config.directory is None  # under artifacts/, never the working directory
    assert [f.columns for f in t["export.files"][0].config.files][:4] == list(EXPORT_SHAPES.values())
    assert [f.trl for f in t["export.files"][0].config.files] == [None] * 4 + ["sft", "preference"]


def test_scale_mode_and_model_choice_like_the_shell_script_arguments():
    plan = plan_file(RECIPE, sets=["vars.scale=0.5", "vars.model_choice=4"])
    t = by_type(plan)
    assert {n.config.domain: n.config.count for n in t["generate.problems"]} == {k: v // 2 for k, v in DOMAINS.items()}
    assert all(n.config.backend.tensor_parallel_size == 4 for n in t["generate.candidates"])
    assert t["generate.responses"][0].config.model == "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"
    one = plan_file(RECIPE, sets=["vars.mode=number_theory"])
    assert [n.label for n in one.nodes] == ["problems[number_theory]", "responses[number_theory]",
                                            "candidates[number_theory]", "ranking[number_theory]",
                                            "export[number_theory]"]


def test_recipe_plan_cli_validates_without_a_gpu(tmp_path):
    """The vLLM steps ask for their GPUs by default (tensor_parallel_size): planning here only notes it."""
    p = subprocess.run([sys.executable, "-m", "engine.cli", "plan", str(RECIPE), "--cache-dir", str(tmp_path / "c")],
                       capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "COLUMNS": "200", "CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 0, p.stderr
    assert "note: step problems[algebra] asks for cpus: 1, gpus: 1, but the local executor has 0 GPU(s)" in p.stdout
    assert "deepseek_all_domains: 30 step instances" in p.stdout
    for d in DOMAINS:
        for sid in ("problems", "responses", "candidates", "ranking"):
            assert f"{sid}[{d}]" in p.stdout


# ---------------------------------------------------------------------------- the tiny profile, end to end
TINY_DEP = ROOT / "recipes" / "arithmetic_llm.yaml"
needs_tiny = pytest.mark.skipif(not TINY_DEP.exists(),
                                reason="recipes/arithmetic_llm.yaml (the tiny model) not there yet")


class Runner:
    def __init__(self, tmp: Path):
        self.tmp, self.cache, self.artifacts = tmp, tmp / "cache", tmp / "artifacts"
        self.env = {**os.environ, "COLUMNS": "200",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def args(self, *a: str, cache: Path | None = None) -> list[str]:
        return [sys.executable, "-m", "engine.cli", a[0], str(RECIPE), "--profile", "tiny", *a[1:],
                "--cache-dir", str(cache or self.cache), "--artifacts-dir", str(self.artifacts)]

    def __call__(self, *a: str, cache: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run(self.args(*a, cache=cache), capture_output=True, text=True, cwd=cwd or self.tmp,
                           env=self.env)
        assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
        return p

    def statuses(self, cache: Path | None = None) -> dict[str, str]:
        runs = sorted((cache or self.cache).joinpath("runs").glob("*.json"))
        return {n["label"]: n["status"] for n in json.loads(runs[-1].read_text())["nodes"]}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    if not TINY_DEP.exists():
        pytest.skip("recipes/arithmetic_llm.yaml (the tiny model) not there yet")
    r = Runner(tmp_path_factory.mktemp("tiny"))
    r.first = r("run", "--out", "gathered")
    return r


def load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def exported(run: Runner, domain: str, kind: str) -> Path:
    """An export's file under the run's artifacts: export.<domain>/files/<kind>/<model>_<domain>_<kind>.json[l]."""
    suffix = "jsonl" if kind.startswith("trl_") else "json"
    return (run.artifacts / "deepseek_all_domains" / f"export.{domain}" / "files" / kind
            / f"tiny-quickstart-llm_{domain}_{kind}.{suffix}")


@needs_tiny
def test_tiny_profile_makes_pairs_in_every_domain(tiny_run):
    """Pairs made with a reward model are its highest- against its lowest-scored candidate; the
    tiny profile's scorers (correctness, format, then length for the reward model's continuous
    score) keep that shape, so no domain is left without pairs (5 of 6 were, all tied)."""
    first = json.loads(sorted(tiny_run.cache.glob("runs/*.json"))[0].read_text())
    keys = {n["label"]: n["key"] for n in first["nodes"]}
    for domain in DOMAINS:
        report = load(tiny_run.artifacts / "deepseek_all_domains" / f"ranking.{domain}" / "report" / "metrics.json")
        assert report["pairs"] > 0, (domain, report)
        key = keys[f"ranking[{domain}]"]
        notes = load(tiny_run.cache / key[:2] / key / "entry.json")["notes"]  # the summary row's
        assert notes[0].startswith(f"{report['pairs']} pair") and f"from {report['problems']} prompt" in notes[0]
        assert re.search(rf"ranking\[{domain}\] .* ran \({report['pairs']} pairs? from ", tiny_run.first.stdout)
        pairs = load(exported(tiny_run, domain, "ins_5res_armorm"))
        assert len(pairs) == report["pairs"]
        for r in pairs:
            assert r["chosen"] != r["rejected"] and r["score_chosen"] >= r["score_rejected"]
        assert exported(tiny_run, domain, "trl_dpo").stat().st_size > 0


@needs_tiny
def test_tiny_profile_writes_the_24_seed_files_field_by_field(tiny_run):
    files = sorted((tiny_run.artifacts / "deepseek_all_domains").glob("export.*/files/*/*.json"))
    assert len(files) == 24
    counts = {d: max(1, round(v * 0.0004)) for d, v in DOMAINS.items()}
    pairs = 0
    for domain, count in counts.items():
        rows = {k: load(exported(tiny_run, domain, k)) for k in EXPORT_SHAPES}
        for kind, fields in EXPORT_SHAPES.items():
            assert isinstance(rows[kind], list)
            for r in rows[kind]:
                assert list(r) == fields, (domain, kind, r)
                assert isinstance(r["instruction"], str) and r["instruction"].strip()
                assert isinstance(r["id"], str) and r["id"].startswith(f"{domain}_")
        assert [r["id"] for r in rows["ins"]] == [f"{domain}_{i:06d}" for i in range(1, count + 1)]
        ins_ids = {r["id"] for r in rows["ins"]}
        for r in rows["ins_res"]:
            assert r["id"] in ins_ids and isinstance(r["response"], str) and r["response"].strip()
        for r in rows["ins_5res"]:
            assert r["id"] in ins_ids and len(r["responses"]) == 5
            assert all(isinstance(x, str) and x.strip() for x in r["responses"])
        cand = {r["id"]: r["responses"] for r in rows["ins_5res"]}
        for r in rows["ins_5res_armorm"]:
            assert r["chosen"] != r["rejected"]
            assert r["chosen"] in cand[r["id"]] and r["rejected"] in cand[r["id"]]
            assert isinstance(r["score_chosen"], float) and isinstance(r["score_rejected"], float)
            assert r["score_chosen"] > r["score_rejected"]
        pairs += len(rows["ins_5res_armorm"])
        trl_dpo = [json.loads(x) for x in exported(tiny_run, domain, "trl_dpo").read_text().splitlines()]
        assert [r["prompt"] for r in trl_dpo] == [[{"role": "user", "content": r["instruction"]}]
                                                  for r in rows["ins_5res_armorm"]]
        trl_sft = [json.loads(x) for x in exported(tiny_run, domain, "trl_sft").read_text().splitlines()]
        assert [r["completion"][0]["content"] for r in trl_sft] == [r["response"] for r in rows["ins_res"]]
    assert pairs >= 1  # the seeded tiny run does produce pairs, so the shape check above is not vacuous
    st = tiny_run.statuses()
    assert sum(1 for k in st if not "/" in k) == 30


@needs_tiny
def test_exports_land_under_artifacts_and_out_and_load_unchanged(tiny_run):
    """No file in the working directory; `--out DIR` gathers every domain's files, one folder per
    kind; each folder loads with `datasets.load_dataset(folder)` as it is."""
    from datasets import load_dataset

    assert sorted(p.name for p in tiny_run.tmp.iterdir()) == ["artifacts", "cache", "gathered"]
    gathered = tiny_run.tmp / "gathered"
    kinds = [*EXPORT_SHAPES, "trl_sft", "trl_dpo"]
    assert sorted(p.name for p in gathered.iterdir()) == sorted(kinds)
    for kind in kinds:
        assert sorted(p.name for p in (gathered / kind).iterdir()) == sorted(exported(tiny_run, d, kind).name
                                                                             for d in DOMAINS)
        for domain in ("algebra", "discrete"):
            assert (gathered / kind / exported(tiny_run, domain, kind).name).read_bytes() == \
                exported(tiny_run, domain, kind).read_bytes()
        every = load_dataset(str(gathered / kind))["train"]
        one = load_dataset(str(exported(tiny_run, "algebra", kind).parent))["train"]
        assert one.num_rows > 0 and every.num_rows > one.num_rows
        trl = {"trl_sft": ["prompt", "completion"], "trl_dpo": ["prompt", "chosen", "rejected"]}
        assert every.column_names == (EXPORT_SHAPES | trl)[kind]
    # data_files under the artifacts path works: no [brackets] in it for a glob to misread
    files = str(exported(tiny_run, "algebra", "trl_dpo").parent / "*.jsonl")
    assert load_dataset("json", data_files=files)["train"].num_rows == len(load(exported(tiny_run, "algebra",
                                                                                          "ins_5res_armorm")))


@needs_tiny
@pytest.mark.slow
def test_trl_sft_cli_trains_on_the_exported_folder(tiny_run, tmp_path):
    """What the README shows: `trl sft --dataset_name <export folder>`, offline, 2 steps on the tiny model."""
    folder = exported(tiny_run, "algebra", "trl_sft").parent
    model = tiny_run.artifacts / "quickstart.tiny" / "pretrain" / "model"
    trl = Path(sys.executable).with_name("trl")
    p = subprocess.run([str(trl), "sft", "--model_name_or_path", str(model), "--dataset_name", str(folder),
                        "--max_steps", "2", "--per_device_train_batch_size", "2", "--output_dir", str(tmp_path / "sft"),
                        "--report_to", "none", "--use_cpu"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Training completed" in p.stdout + p.stderr
    assert (tmp_path / "sft" / "model.safetensors").exists() and (tmp_path / "sft" / "checkpoint-2").is_dir()


@needs_tiny
def test_changing_candidate_temperature_reruns_candidates_and_ranking_only(tiny_run):
    tiny_run("run", "--set", "steps.candidates.with.temperature=0.9")
    st = {k: v for k, v in tiny_run.statuses().items() if "/" not in k}
    for d in DOMAINS:
        assert st[f"problems[{d}]"] == "cached" and st[f"responses[{d}]"] == "cached"
        assert st[f"candidates[{d}]"] == "ran"
        assert st[f"ranking[{d}]"] in ("ran", "cached")  # cached only if the new candidates are byte-identical
    assert any(st[f"ranking[{d}]"] == "ran" for d in DOMAINS)
    assert all(v == "cached" for k, v in tiny_run.statuses().items() if "/" in k)  # the tiny model is reused


@needs_tiny
def test_changing_scale_reruns_exactly_the_changed_counts(tiny_run):
    tiny_run("run", "--set", "vars.scale=0.0006")
    st = tiny_run.statuses()
    old = {d: max(1, round(v * 0.0004)) for d, v in DOMAINS.items()}
    new = {d: max(1, round(v * 0.0006)) for d, v in DOMAINS.items()}
    for d in DOMAINS:
        changed = old[d] != new[d]
        assert st[f"problems[{d}]"] == ("ran" if changed else "cached"), d
        if changed:
            assert st[f"responses[{d}]"] == st[f"candidates[{d}]"] == "ran"
        rows = load(exported(tiny_run, d, "ins"))
        assert len(rows) == new[d]


@needs_tiny
def test_killed_candidates_step_resumes_and_matches_an_uninterrupted_run(tiny_run, tmp_path):
    """SIGKILL `recipe run` once the candidates step has checkpointed its first shard while later
    shards remain; the rerun loads that shard and the final candidates equal those of a clean run.
    The test sets the row count itself: 20 programmatic problems in shards of 1, so 19 shards are
    still to go when the first lands, whatever the model writes."""
    problems, shards = 20, 20
    sets = ["--set", "vars.mode=algebra", "--set", f"vars.scale={problems / DOMAINS['algebra']}",
            "--set", "vars.problem_mode=programmatic", "--set", "defaults.generate.candidates.backend.shard_size=1",
            "--only", "candidates"]
    # both caches start from the tiny run's (the model is reused); neither has these candidates
    cache, clean = tmp_path / "cache", tmp_path / "clean"
    for c in (cache, clean):
        shutil.copytree(tiny_run.cache, c, ignore=shutil.ignore_patterns("locks", "tmp", "runs"))
    proc = subprocess.Popen(tiny_run.args("run", *sets, cache=cache), cwd=tmp_path, env=tiny_run.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.time() + 240
    while time.time() < end and not list(cache.glob("scratch/*/candidates/000000.jsonl")):
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(cache.glob("scratch/*/candidates/*.jsonl"))
    assert done and len(done) < shards  # killed part-way
    tiny_run("run", *sets, cache=cache, cwd=tmp_path)
    tiny_run("run", *sets, cache=clean, cwd=tmp_path)

    def entry(c: Path) -> Path:
        # this run's entry: the copied tiny-run cache holds other candidates[algebra] entries
        return next(p.parent for p in c.glob("*/*/entry.json")
                    if json.loads(p.read_text()).get("label") == "candidates[algebra]"
                    and not (tiny_run.cache / p.parent.parent.name / p.parent.name).exists())

    resumed, fresh = entry(cache), entry(clean)
    assert resumed.name == fresh.name  # the same key
    assert "resumed candidates: " in (resumed / "log.txt").read_text()
    assert "resumed" not in (fresh / "log.txt").read_text()
    assert ((resumed / "outputs/candidates/data.jsonl").read_bytes()
            == (fresh / "outputs/candidates/data.jsonl").read_bytes())
    kept, set_aside = (len((fresh / "outputs" / o / "data.jsonl").read_text().splitlines())
                       for o in ("candidates", "failed"))
    assert kept + set_aside == problems  # every problem is either a candidate set or a counted failure


def test_tiny_profile_model_reads_six_domain_text():
    """The tiny profile's generator is the quickstart's model, whose tokenizer was trained on
    six-domain text (the plan says so; the end-to-end test below tokenizes with it)."""
    plan = {n.label: n for n in plan_file(RECIPE, profile="tiny").nodes}
    for sid in ("responses", "candidates"):
        assert plan[f"{sid}[algebra]"].inputs["model"].label == "quickstart[tiny]/pretrain"


def test_cpu_full_profile_is_the_seed_at_full_size_on_vllm():
    """cpu-full: the seed's 44,000 problems over its six domains, answered by the quickstart's model
    on vLLM in a context the model has (64 positions), scored without a reward model."""
    plan = {n.label: n for n in plan_file(RECIPE, profile="cpu-full").nodes}
    problems = [n.config for label, n in plan.items() if label.startswith("problems[")]
    assert sum(c.count for c in problems) == 44_000 and len(problems) == 6
    assert {c.mode for c in problems} == {"programmatic"}
    for sid in ("responses", "candidates"):
        node = plan[f"{sid}[discrete]"]
        assert node.inputs["model"].label == "quickstart[tiny]/pretrain"
        assert (node.config.backend.kind, node.config.backend.max_model_len) == ("vllm", 64)
        assert node.config.max_new_tokens < 64 and node.config.keep_truncated
    assert plan["ranking[algebra]"].config.scorers == ["verifiable", "format", "length"]


@needs_tiny
def test_tiny_profile_tokenizer_has_no_unknown_tokens_on_six_domain_problems(tiny_run):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_run.artifacts / "quickstart.tiny" / "pretrain" / "model")
    problems = ["Solve for x: -2x - 22 = -36"]  # 9 of its 18 tokens were <unk> with the arithmetic tokenizer
    for domain in DOMAINS:
        problems += [r["instruction"] for r in load(exported(tiny_run, domain, "ins"))]
    for text in problems:
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids, (text, tok.convert_ids_to_tokens(ids))
