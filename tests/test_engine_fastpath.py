"""The no-op fast path: a rerun with nothing changed reuses the saved plan, and every kind of
change (recipe byte, `extends` parent, --set, profile, data file, step version, deleted entry)
defeats it. Output levels: default folds big foreach steps, -q prints three lines, --all
prints every row."""
import os
import shutil

from conftest import write

STEP_MODULE = '''
import os
from engine.recipe.artifact_types import Dataset
from engine.recipe.step import Step, StepConfig, register


@register("fp.copy")
class Copy(Step):
    """Copies its input; notes each computation in $MR_TEST_TRACE."""

    version = "{version}"

    class Config(StepConfig):
        tag: str = ""

    inputs = {{"data": Dataset}}
    outputs = {{"data": Dataset}}

    def run(self, ctx):
        with open(os.environ["MR_TEST_TRACE"], "a") as f:
            f.write(f"copy {{self.config.tag}}\\n")
        ctx.write_dataset("data", ctx.inputs["data"].rows())
'''

BASE = "recipe: fp\nsteps:\n  - id: load\n    uses: data.from_file\n    with: {path: data/rows.jsonl}\n"
RECIPE = """extends: base.yaml
vars: {tag: a}
profiles:
  other: {vars: {tag: b}}
steps:
  - id: copy
    uses: fp.copy
    with: {tag: '${vars.tag}'}
    inputs: {data: '${steps.load.data}'}
"""


def project(cli):
    plugins = cli.tmp / "plugins"
    write(plugins / "fp_steps.py", STEP_MODULE.format(version="1"))
    cli.env["RECIPE_STEP_MODULES"] += ",fp_steps"
    cli.env["PYTHONPATH"] = f"{plugins}{os.pathsep}{cli.env['PYTHONPATH']}"
    write(cli.tmp / "data/rows.jsonl", '{"x": 1}\n{"x": 2}\n')
    write(cli.tmp / "base.yaml", BASE)
    write(cli.tmp / "fp.yaml", RECIPE)
    return "fp.yaml"


def fast(cli) -> bool:
    return cli.last_run().get("fast_path", False)


def append(path, text):
    path.write_text(path.read_text() + text)


def test_noop_rerun_reuses_the_plan_and_every_kind_of_change_defeats_it(cli):
    f = project(cli)
    cli("run", f)
    assert cli.statuses() == {"load": "ran", "copy": "ran"} and not fast(cli)
    cli("run", f)
    assert cli.statuses() == {"load": "cached", "copy": "cached"} and fast(cli)
    key = cli.last_run()["nodes"][1]["key"]

    def expect(args, statuses, what):
        cli("run", f, *args)
        assert not fast(cli), f"{what}: the fast path was taken"
        assert cli.statuses() == statuses, what
        cli("run", f, *args)
        assert fast(cli), f"{what}: the rerun after it did not take the fast path"
        assert set(cli.statuses().values()) == {"cached"}

    cached = {"load": "cached", "copy": "cached"}
    append(cli.tmp / f, "# a comment changes a byte, not a key\n")
    expect([], cached, "a recipe byte")
    append(cli.tmp / "base.yaml", "# the parent changed\n")
    expect([], cached, "an extends parent")
    expect(["--set", "vars.tag=c"], {"load": "cached", "copy": "ran"}, "a --set")
    expect(["--profile", "other"], {"load": "cached", "copy": "ran"}, "a profile")
    write(cli.tmp / "data/rows.jsonl", '{"x": 3}\n')
    expect([], {"load": "ran", "copy": "ran"}, "a data file")
    write(cli.tmp / "plugins/fp_steps.py", STEP_MODULE.format(version="2"))
    expect([], {"load": "cached", "copy": "ran"}, "a step version")
    key = cli.last_run()["nodes"][1]["key"]
    shutil.rmtree(cli.cache / key[:2] / key)
    expect([], {"load": "cached", "copy": "ran"}, "a deleted entry")
    cli("run", f, "--force", "copy")  # a forced entry may get new digests under its old key
    cli("run", f)
    assert not fast(cli), "the run after --force took the fast path"


def test_fast_noop_writes_the_same_record_and_links_as_a_full_run(cli):
    f = project(cli)
    cli("run", f)
    cli("run", f, "--only", "copy")  # a full run, all cached (--only never takes the fast path)
    full = cli.last_run()
    shutil.rmtree(cli.artifacts)
    cli("run", f)
    noop = cli.last_run()
    assert fast(cli) and not full.get("fast_path")
    same = ("recipe", "file", "profile", "sets", "vars", "status")
    assert {k: noop[k] for k in same} == {k: full[k] for k in same}
    assert [{**n, "seconds": 0} for n in noop["nodes"]] == [{**n, "seconds": 0} for n in full["nodes"]]
    assert (cli.artifacts / "fp/copy/data/data.jsonl").read_text() == '{"x": 1}\n{"x": 2}\n'


WIDE = """recipe: wide
steps:
  - id: load
    uses: data.from_file
    with: {path: data/rows.jsonl}
  - id: pick
    uses: data.sample
    foreach: ${range(30)}
    with: {n: 1, seed: '${item}'}
    inputs: {data: '${steps.load.data}'}
"""


def test_output_levels_fold_big_steps_quiet_prints_three_lines_all_prints_every_row(cli):
    write(cli.tmp / "data/rows.jsonl", '{"x": 1}\n{"x": 2}\n')
    write(cli.tmp / "wide.yaml", WIDE)
    first = cli("run", "wide.yaml").stdout
    assert "pick[×30]" in first and "30 ran" in first and "pick[7]" not in first
    for args in (["--only", "pick"], []):  # the full path (--only never takes the fast path), then the fast one
        quiet = cli("run", "wide.yaml", "-q", *args).stdout.splitlines()
        assert len(quiet) == 2 and quiet[0].startswith("run ") and quiet[1].endswith("outputs under "
                                                                                    f"{cli.artifacts}/wide/")
        assert "31 cached" in quiet[1]
        default = cli("run", "wide.yaml", *args).stdout
        assert "pick[×30]" in default and "30 cached" in default and "pick[7]" not in default
        every = cli("run", "wide.yaml", "--all", *args).stdout
        assert all(f"pick[{i}]" in every for i in range(30)) and "×" not in every
    assert fast(cli)


def test_quiet_run_prints_the_failure(cli):
    write(cli.tmp / "data/rows.jsonl", '{"x": 1}\n')
    write(cli.tmp / "bad.yaml", "recipe: bad\nsteps:\n  - id: load\n    uses: data.from_file\n"
                                "    with: {path: data/rows.jsonl}\n  - id: div\n    uses: data.map\n"
                                "    with: {derive: {y: 'x / 0'}}\n    inputs: {data: '${steps.load.data}'}\n")
    out = cli("run", "bad.yaml", "-q", check=1).stdout.splitlines()
    assert len(out) == 3 and "failed" in out[1] and "div" in out[1] and "division by zero" in out[1]
    assert out[2].startswith("run ") and "1 ran, 1 failed" in out[2]


NOTED = """recipe: noted
steps:
  - id: load
    uses: data.from_file
    with: {path: data/rows.jsonl}
  - id: none
    uses: data.map
    with: {where: 'x > 100', allow_empty: true}
    inputs: {data: '${steps.load.data}'}
"""


def test_a_step_with_notes_takes_the_fast_path_and_its_notes_are_still_shown(cli):
    write(cli.tmp / "data/rows.jsonl", '{"x": 1}\n{"x": 2}\n')
    write(cli.tmp / "noted.yaml", NOTED)
    first = " ".join(cli("run", "noted.yaml").stdout.split())
    assert "ran (output data: 0 rows (allow_empty))" in first and not fast(cli)
    again = " ".join(cli("run", "noted.yaml").stdout.split())
    assert fast(cli), "a rerun of a recipe whose step has notes did not take the fast path"
    assert "cached (output data: 0 rows (allow_empty))" in again
    assert cli.statuses() == {"load": "cached", "none": "cached"}


def test_a_damaged_snapshot_takes_the_full_path_and_never_makes_a_damaged_record(cli):
    f = str(write(cli.tmp / "r.yaml", "recipe: r\nsteps:\n  - id: s\n    uses: test.squares\n    with: {n: 4}\n"))
    cli("run", f)
    snapshot = next((cli.cache / "index" / "fastpath").iterdir())
    head, nodes = snapshot.read_text().split("\n", 1)
    for damaged in ("[1]\n[]", '{"format": 3}\n[]', head + "\n" + nodes[:40]):
        snapshot.write_text(damaged)
        p = cli("run", f)
        assert "Traceback" not in p.stderr
        assert cli.last_run()["fast_path"] is False  # the full path ran, and saved a good snapshot again
        cli("ls")  # every record reads back
    cli("run", f)
    assert cli.last_run()["fast_path"] is True
