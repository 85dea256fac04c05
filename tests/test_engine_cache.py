"""Make's promise with hashes: what reruns, what does not, and why `plan` says so."""
import json
import shutil

from conftest import ROOT, write

DEMO = ROOT / "recipes" / "demo.yaml"


def demo(cli):
    shutil.copy(DEMO, cli.tmp / "demo.yaml")
    write(cli.tmp / "tests/data/demo_problems.jsonl", (ROOT / "tests/data/demo_problems.jsonl").read_text())
    return "demo.yaml"


def test_first_run_computes_everything_and_noop_rerun_computes_nothing(cli):
    f = demo(cli)
    out = cli("run", f)
    assert set(cli.statuses().values()) == {"ran"}
    assert len(cli.statuses()) == 6
    run_id = cli.last_run()["run_id"]
    assert out.stdout.count(run_id) >= 2  # printed at the start and at the end
    cli("run", f)
    assert set(cli.statuses().values()) == {"cached"}
    rows = [json.loads(x) for x in (cli.artifacts / "demo/both/data/data.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(r["text"] == r["problem"] + r["answer"] for r in rows)


def test_changing_one_value_reruns_that_step_and_its_dependents_only(cli):
    f = demo(cli)
    cli("run", f)
    cli("run", f, "--set", "vars.sample=3")
    assert cli.statuses() == {"load": "cached", "text": "cached", "split": "cached",
                              "sample[train]": "ran", "sample[test]": "ran", "both": "ran"}
    cli("run", f, "--set", "steps.split.with.seed=7")
    st = cli.statuses()
    assert st["load"] == st["text"] == "cached" and st["split"] == st["both"] == "ran"


def test_plan_names_the_changed_field_for_set_and_profile(cli):
    f = demo(cli)
    cli("run", f)
    out = cli("plan", f, "--set", "steps.split.with.seed=7").stdout
    assert "with.seed" in out and "will run" in out
    out = cli("plan", f, "--profile", "small").stdout
    assert "with.n" in out
    assert "sample[train]" in out
    assert "3 cached, 3 to run" in cli("plan", f, "--profile", "small").stdout.replace("\n", " ")


def test_identical_output_after_a_config_change_leaves_dependents_cached(cli):
    f = demo(cli)
    cli("run", f)
    # a filter that keeps every row: `text` reruns, produces the same bytes, so nothing downstream reruns
    cli("run", f, "--set", "steps.text.with.where=len(problem) > 0")
    st = cli.statuses()
    assert st["text"] == "ran"
    assert st["split"] == st["sample[train]"] == st["both"] == "cached"


def test_editing_the_input_file_reruns_the_loader(cli):
    f = demo(cli)
    cli("run", f)
    data = cli.tmp / "tests/data/demo_problems.jsonl"
    data.write_text(data.read_text() + '{"id": "x", "problem": "1+1=", "answer": "2"}\n')
    cli("run", f)
    assert cli.statuses()["load"] == "ran"


def test_force_and_only(cli):
    f = demo(cli)
    cli("run", f, "--only", "split")
    st = cli.statuses()
    assert st == {"load": "ran", "text": "ran", "split": "ran", "sample[train]": "skipped",
                  "sample[test]": "skipped", "both": "skipped"}
    cli("run", f, "--force", "text")
    st = cli.statuses()
    assert st["text"] == "ran" and st["load"] == "cached" and st["split"] == "cached"
    bad = cli("run", f, "--only", "nope", check=2)
    assert "no step 'nope'" in bad.stderr


def test_parallel_jobs_give_the_same_keys(cli, tmp_path):
    f = demo(cli)
    cli("run", f, "-j", "2")
    keys_parallel = {n["label"]: n["key"] for n in cli.last_run()["nodes"]}
    cli("run", f, cache=tmp_path / "other")
    assert {n["label"]: n["key"] for n in cli.last_run(tmp_path / "other")["nodes"]} == keys_parallel


def test_artifacts_link_into_the_cache_and_show_describes_an_entry(cli):
    f = demo(cli)
    cli("run", f)
    link = cli.artifacts / "demo" / "split" / "train"
    assert link.is_symlink() and str(cli.cache) in str(link.resolve())
    key = next(n["key"] for n in cli.last_run()["nodes"] if n["label"] == "split")
    out = cli("show", key[:10]).stdout
    assert "data.split" in out and "test_fraction" in out and "log (tail)" in out
    run_id = cli.last_run()["run_id"]
    assert "sample[train]" in cli("show", run_id[:15]).stdout


def test_files_placed_outside_the_cache_come_back_on_a_cached_run(cli):
    f = demo(cli)
    text = (cli.tmp / f).read_text() + """
  - id: export
    uses: export.files
    with: {files: [{name: demo_ins.json, columns: [id, problem]}]}
    inputs: {datasets: ["${steps.both.data}"]}
"""
    (cli.tmp / f).write_text(text)
    cli("run", f, "--out", "data")
    placed = cli.tmp / "data" / "demo_ins.json"
    rows = json.loads(placed.read_text())
    assert len(rows) == 10 and set(rows[0]) == {"id", "problem"}
    placed.unlink()
    cli("run", f, "--out", "data")
    assert cli.statuses()["export"] == "cached"
    assert json.loads(placed.read_text()) == rows
