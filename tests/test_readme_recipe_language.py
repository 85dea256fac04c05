"""Every example in the README's "The recipe language" section runs as written: its YAML blocks
(each names its file in its first line) are written into one folder, its bash blocks run there in
order with `recipe` as the CLI, and what the prose says of them is checked."""
import json
import os
import re
import subprocess
import sys

from conftest import ROOT

from engine.recipe.plan import plan_file

SECTION = "## The recipe language"


def section_blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    return re.findall(r"```(\w+)\n(.*?)```", text[start:end], flags=re.S)


def write_examples(folder) -> list[str]:
    """The YAML files written, and the bash lines to run, in order."""
    lines = []
    for lang, body in section_blocks():
        if lang == "yaml":
            name = body.splitlines()[0].removeprefix("# ").strip()
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(body)
        else:
            assert lang == "bash", f"a {lang} block in {SECTION}: the test runs only yaml and bash"
            lines += [line for line in body.splitlines() if line.strip()]
    return lines


def run_bash(folder, lines: list[str]) -> subprocess.CompletedProcess:
    script = "\n".join(["set -euo pipefail", f'recipe() {{ "{sys.executable}" -m engine.cli "$@"; }}', *lines])
    env = {**os.environ, "RECIPE_CACHE_DIR": str(folder / "cache"), "RECIPE_ARTIFACTS_DIR": str(folder / "artifacts"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "COLUMNS": "200"}
    return subprocess.run(["bash", "-c", script], cwd=folder, env=env, capture_output=True, text=True)


def test_every_example_of_the_recipe_language_runs_as_the_readme_says(tmp_path):
    lines = write_examples(tmp_path)
    assert sum(1 for lang, _ in section_blocks() if lang == "yaml") >= 5 and len(lines) >= 5
    p = run_bash(tmp_path, lines)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "warning" not in p.stderr, p.stderr

    # the child's plan: base's tiny count reused (make cached), the child's n named as the change
    child_plan = p.stdout[p.stdout.index("child: 3 step instances"):]
    rows = {cells[1].strip(): [c.strip() for c in cells] for line in child_plan.splitlines()
            if len(cells := line.split("│")) > 6}
    assert rows["make"][4] == "cached" and rows["pick"][4:6] == ["will run", "with.n: 2 -> 3"], p.stdout
    runs = sorted((tmp_path / "cache" / "runs").glob("*.json"), key=lambda f: json.loads(f.read_text())["started"])
    report = json.loads(runs[-2].read_text())  # the last run is rows.yaml
    assert {n["label"]: n["status"] for n in report["nodes"]} == {
        "base[tiny]/make": "cached", "base[tiny]/pick": "cached", "few": "ran"}


def test_the_recipe_language_examples_mean_what_the_readme_says(tmp_path, monkeypatch):
    write_examples(tmp_path)
    monkeypatch.chdir(tmp_path)
    r = tmp_path / "recipes"
    problems = plan_file(r / "problems.yaml", "tiny")
    assert problems.vars["per_op"] == 4 and [n.label for n in problems.nodes if n.step_id == "make"] == [
        "make[add]", "make[mul]"]
    assert problems.by_label["pick[mul]"].config.seed == 7 and problems.by_label["make[mul]"].config.operators == ["*"]
    assert plan_file(r / "problems.yaml", sets=["vars.ops.div=/"]).by_label["make[div]"].config.operators == ["/"]
    set_ = plan_file(r / "problems.yaml", sets=["vars.count=20", "steps.pick.with.n=3"])
    assert set_.vars["per_op"] == 10 and set_.by_label["pick[add]"].config.n == 3

    child = plan_file(r / "child.yaml", "tiny")
    assert (child.by_label["make"].config.count, child.by_label["pick"].config.n,
            child.by_label["first"].config.n) == (8, 3, 1)
    assert plan_file(r / "child.yaml", "tiny", ["vars.n=2"]).by_label["pick"].config.n == 2  # --set last


def test_a_misspelt_set_path_stops_with_the_closest_name(cli):
    write_examples(cli.tmp)
    p = cli("plan", "recipes/problems.yaml", "--set", "vars.cuont=3", check=2)
    assert "the recipe has no var 'cuont'; did you mean vars.count?" in p.stderr
