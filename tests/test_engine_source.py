"""Stale code noticed: an entry records its step's source digest; same version, other source
is marked by `plan`, warned about once by `run`, and recomputed only with --rerun-changed-code."""
import json
import os

from conftest import write

from engine.cache.source import CODE_CHANGED

STEP = '''
from engine.recipe.artifact_types import Dataset
from engine.recipe.step import Step, StepConfig, register


@register("team.numbers")
class Numbers(Step):
    """Numbers 0..n-1, times a factor."""

    version = "1"

    class Config(StepConfig):
        n: int = 3

    outputs = {"data": Dataset}

    def run(self, ctx):
        ctx.write_dataset("data", [{"v": i * FACTOR} for i in range(self.config.n)])
'''

RECIPE = ("recipe: r\nsteps:\n  - id: numbers\n    uses: team.numbers\n"
          "  - id: a\n    uses: team.numbers\n    with: {n: 2}\n")


def _team_steps(cli, factor: int) -> None:
    write(cli.tmp / "team_steps.py", STEP + f"\n\nFACTOR = {factor}\n")
    cli.env["PYTHONPATH"] = os.pathsep.join([str(cli.tmp), cli.env["PYTHONPATH"]])
    cli.env["RECIPE_STEP_MODULES"] = "team_steps"


def _values(cli) -> list[int]:
    path = cli.artifacts / "r" / "numbers" / "data"
    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    return [json.loads(line)["v"] for f in files for line in f.read_text().splitlines()]


def test_code_edited_without_version_bump_is_noticed(cli):
    _team_steps(cli, 1)
    write(cli.tmp / "r.yaml", RECIPE)
    cli("run", "r.yaml")
    assert _values(cli) == [0, 1, 2]
    assert CODE_CHANGED not in cli("plan", "r.yaml").stdout

    _team_steps(cli, 10)  # the edit a developer forgot to version
    plan = cli("plan", "r.yaml").stdout
    assert plan.count(CODE_CHANGED) == 2 and "2 cached, 0 to run" in plan, plan

    run = cli("run", "r.yaml").stdout
    assert run.count(CODE_CHANGED) == 1 and "warning: numbers, a:" in " ".join(run.split()), run
    assert cli.statuses() == {"numbers": "cached", "a": "cached"}
    assert _values(cli) == [0, 1, 2]  # the version is the contract: the cache still serves

    cli("run", "r.yaml", "--rerun-changed-code")
    assert cli.statuses() == {"numbers": "ran", "a": "ran"}
    assert _values(cli) == [0, 10, 20]
    plan = cli("plan", "r.yaml").stdout
    assert CODE_CHANGED not in plan and "2 cached, 0 to run" in plan


def test_entry_records_the_source_digest(cli):
    _team_steps(cli, 1)
    write(cli.tmp / "r.yaml", RECIPE)
    cli("run", "r.yaml")
    entries = [json.loads(p.read_text()) for p in cli.cache.rglob("entry.json")]
    assert len(entries) == 2 and len({e["source"] for e in entries}) == 1
    assert entries[0]["source"].startswith("ast3:") and len(entries[0]["source"]) == 5 + 64


def test_parses_are_remembered_by_bytes_and_a_damaged_memo_is_reparsed(cli):
    _team_steps(cli, 1)
    write(cli.tmp / "r.yaml", RECIPE)
    cli("run", "r.yaml")
    memo = sorted((cli.cache / "index" / "source").iterdir())
    assert memo, "the next process reads each step module's parse from here"
    for f in memo:
        f.write_text("not json")
    cli("run", "r.yaml", "--force", "a")
    entries = [json.loads(p.read_text()) for p in cli.cache.rglob("entry.json")]
    assert len(entries) == 2 and len({e["source"] for e in entries}) == 1  # reparsed: the same digest
    assert all(json.loads(f.read_text()) for f in memo)  # and rewritten


def test_reformatting_and_comments_are_not_code_changes(cli):
    _team_steps(cli, 1)
    write(cli.tmp / "r.yaml", RECIPE)
    cli("run", "r.yaml")
    src = (cli.tmp / "team_steps.py").read_text()
    write(cli.tmp / "team_steps.py", "# owned by the data team\n" + src.replace(
        '[{"v": i * FACTOR} for i in range(self.config.n)]',
        '[{"v": i * FACTOR}  # one row per number\n                                  for i in range(self.config.n)]'))
    assert CODE_CHANGED not in cli("plan", "r.yaml").stdout


def test_where_the_engine_keeps_a_name_is_not_a_code_change(cli):
    """engine/ was regrouped into packages: a step's `from engine...` lines moved, its code did not."""
    _team_steps(cli, 1)
    write(cli.tmp / "r.yaml", RECIPE)
    cli("run", "r.yaml")
    src = (cli.tmp / "team_steps.py").read_text()
    write(cli.tmp / "team_steps.py", src.replace(
        "from engine.recipe.step import Step, StepConfig, register",
        "from engine.recipe import step as _step\nfrom engine.recipe.step import Step, StepConfig, register"))
    assert CODE_CHANGED not in cli("plan", "r.yaml").stdout
    write(cli.tmp / "team_steps.py", src.replace("import Dataset", "import Dataset\nimport json"))
    assert CODE_CHANGED in cli("plan", "r.yaml").stdout  # any other import is code


def test_entries_with_byte_digests_from_before_are_not_called_stale(cli):
    _team_steps(cli, 1)
    write(cli.tmp / "r.yaml", RECIPE)
    cli("run", "r.yaml")
    for p in cli.cache.rglob("entry.json"):  # as an older mathrecipe wrote them
        p.write_text(json.dumps(dict(json.loads(p.read_text()), source="ab" * 32)))
    _team_steps(cli, 10)
    assert CODE_CHANGED not in cli("plan", "r.yaml").stdout


def test_versions_lock_matches_every_builtin_step():
    """Edited a step? Bump its `version` if its outputs change, then `recipe steps --lock`."""
    from engine.cache.source import lock_path, lock_problems

    assert lock_problems(lock_path()) == []


def test_versions_lock_catches_an_edit_without_a_bump(tmp_path):
    from engine.cache.source import builtin_steps, lock_path, lock_problems

    text = lock_path().read_text()
    name, cls = sorted(builtin_steps().items())[0]
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    write(tmp_path / "versions.lock", text.replace(line, line[:-8] + "00000000"))
    assert lock_problems(tmp_path / "versions.lock") == [
        f"{name}: source changed but version is still {cls.version}; bump `version` if outputs change"]
