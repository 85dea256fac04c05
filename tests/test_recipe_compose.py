"""Composition as the README's "The recipe language" says: profiles merge by name across
`extends`, one precedence (parent < its profile < child < child's profile < --set), `plan`
explains across `extends`, and relative data paths resolve from the recipe file."""
import json
import os

from conftest import write

from engine.recipe.plan import plan_file

BASE = """
recipe: base
vars: {count: 40, n: 4, seed: 0}
profiles:
  tiny:
    vars: {count: 8, n: 2}
    steps: {pick: {with: {seed: 5}}}
steps:
  - id: make
    uses: problems.arithmetic
    with: {count: "${vars.count}", seed: "${vars.seed}"}
  - id: pick
    uses: data.sample
    with: {n: "${vars.n}"}
    inputs: {data: "${steps.make.problems}"}
"""

CHILD = """
recipe: child
extends: base.yaml
vars: {n: 3, m: 2}
profiles:
  tiny: {vars: {m: 1}}
steps:
  - id: first
    uses: data.sample
    with: {n: "${vars.m}"}
    inputs: {data: "${steps.pick.data}"}
"""


def configs(plan):
    return {n.label: n.config.model_dump() for n in plan.nodes}


def test_a_child_profile_merges_with_the_parents_profile_of_the_same_name(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    child = plan_file(write(tmp_path / "child.yaml", CHILD), "tiny")
    c = configs(child)
    assert c["make"]["count"] == 8  # base's tiny still applies: the child's tiny adds m, it does not replace it
    assert c["pick"]["seed"] == 5  # and so do its step patches
    assert c["first"]["n"] == 1 and child.profile == "tiny"


def test_precedence_parent_then_its_profile_then_child_then_its_profile_then_set(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    f = write(tmp_path / "child.yaml", CHILD)
    assert configs(plan_file(f))["pick"]["n"] == 3  # the child's vars over the parent's
    assert configs(plan_file(f, "tiny"))["pick"]["n"] == 3  # ... and over the parent's profile
    lone = write(tmp_path / "lone.yaml", CHILD.replace("profiles:\n  tiny: {vars: {m: 1}}\n", ""))
    assert configs(plan_file(lone, "tiny"))["pick"]["n"] == 3  # ... also where the child has no such profile
    assert configs(plan_file(lone, "tiny"))["make"]["count"] == 8  # which still applies where the child is silent
    assert configs(plan_file(f, "tiny", ["vars.n=1"]))["pick"]["n"] == 1  # --set over everything
    write(tmp_path / "child2.yaml", CHILD.replace("tiny: {vars: {m: 1}}", "tiny: {vars: {m: 1, n: 7}}"))
    assert configs(plan_file(tmp_path / "child2.yaml", "tiny"))["pick"]["n"] == 7  # the child's profile over the child


def test_a_step_the_child_redefines_loses_the_parents_profile_patch_and_plan_says_so(cli):
    write(cli.tmp / "base.yaml", BASE)
    write(cli.tmp / "child.yaml", CHILD + """
  - id: pick
    uses: data.sample
    with: {n: 2}
    inputs: {data: "${steps.make.problems}"}
""")
    p = cli("plan", "child.yaml", "--profile", "tiny")
    assert ("warning: child.yaml:13:5: step 'pick' replaces the one in base.yaml, so profile 'tiny' of base.yaml "
            "does not apply to it (patch it in this file's profile)") in " ".join(p.stderr.split()), p.stderr


def test_plan_of_a_child_that_never_ran_names_the_field_changed_from_its_parents_run(cli):
    write(cli.tmp / "base.yaml", BASE)
    write(cli.tmp / "child.yaml", CHILD)
    cli("run", "base.yaml", "--profile", "tiny")
    out = cli("plan", "child.yaml", "--profile", "tiny").stdout
    rows = {cells[1].strip(): [c.strip() for c in cells] for line in out.splitlines()
            if len(cells := line.split("│")) > 6}
    assert rows["make"][4] == "cached"
    assert rows["pick"][4:6] == ["will run", "with.n: 2 -> 3"], out  # not "never ran": base ran it with n 2
    assert rows["first"][4] == "waits"


DATA_RECIPE = """
recipe: rows
steps:
  - id: load
    uses: data.from_file
    with: {path: data/rows.jsonl}
  - id: files
    uses: data.load
    with: {path: data}
"""


def test_relative_data_paths_resolve_from_the_recipe_file_wherever_recipe_runs(cli):
    write(cli.tmp / "recipes" / "rows.yaml", DATA_RECIPE)
    write(cli.tmp / "recipes" / "data" / "rows.jsonl", '{"x": 1}\n{"x": 2}\n')
    cli("run", "recipes/rows.yaml")
    first = {n["label"]: n["key"] for n in cli.last_run()["nodes"]}
    cli("run", "rows.yaml", cwd=cli.tmp / "recipes")  # from the recipe's folder: the same keys, all cached
    assert {n["label"]: n["key"] for n in cli.last_run()["nodes"]} == first
    assert set(cli.statuses().values()) == {"cached"}
    source = json.loads((cli.artifacts / "rows" / "files" / "source" / "metrics.json").read_text())
    assert [f["path"] for f in source["files"]] == ["data/rows.jsonl"]  # as the recipe names it, not where it lies


def test_a_path_found_only_in_the_working_directory_still_works_with_one_warning(cli):
    write(cli.tmp / "recipes" / "rows.yaml", DATA_RECIPE)
    work = cli.tmp / "work"  # not a folder above the recipe
    write(work / "data" / "rows.jsonl", '{"x": 1}\n')
    p = cli("run", "../recipes/rows.yaml", cwd=work)
    warnings = [line for line in p.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "data/rows.jsonl was found only in the working directory" in warnings[0], p.stderr
    assert "write '../work/data/rows.jsonl'" in warnings[0]
    assert set(cli.statuses().values()) == {"ran"}


def test_keys_hold_the_path_as_written_not_where_it_was_found(cli, tmp_path):
    """The same recipe text and data in two checkouts: the same keys (sharing a cache works)."""
    keys = []
    for checkout in ("alice", "bob"):
        write(cli.tmp / checkout / "recipes" / "rows.yaml", DATA_RECIPE)
        write(cli.tmp / checkout / "recipes" / "data" / "rows.jsonl", '{"x": 1}\n')
        plan = plan_file(cli.tmp / checkout / "recipes" / "rows.yaml")
        from engine.cache.keys import config_for_key

        keys.append([config_for_key(n.config) for n in plan.nodes])
        assert os.path.isabs(plan.nodes[0].step_cls(plan.nodes[0].config).external_files()[0])
    assert keys[0] == keys[1] == [{"path": "data/rows.jsonl", "format": "auto", "output_format": "jsonl"},
                                  keys[0][1]] and keys[0][1]["path"] == ["data"]
