"""Recipe language: expressions, foreach, extends, profiles, --set coercion, cross-recipe refs."""
import pytest
from conftest import write

from engine.recipe.artifact_types import Dataset
from engine.recipe.errors import RecipeError
from engine.recipe.expr import ExprError, evaluate
from engine.recipe.plan import Ref, plan_file


def test_expressions_keep_types_and_interpolate():
    names = {"vars": {"scale": 0.5, "domains": {"algebra": 10000}}, "item": {"key": "algebra", "value": 10000}}
    assert evaluate("${round(item.value * vars.scale)}", names) == 5000
    assert evaluate("${vars.domains[item.key] > 100 and len(vars.domains) == 1}", names) is True
    assert evaluate("data/${item.key}_ins.json", names) == "data/algebra_ins.json"
    assert evaluate("${min(3, 4) + max([1, 9])}", names) == 12


@pytest.mark.parametrize("expr, words", [
    ("${vars.__class__}", "not allowed"),
    ("${open('/etc/passwd')}", "unknown function 'open'"),
    ("${__import__('os')}", "unknown function"),
    ("${vars.nope}", "no 'nope' here"),
    ("${1 +}", "not a valid expression"),
    ("${", "unclosed"),
])
def test_unsafe_or_wrong_expressions_are_refused(expr, words):
    with pytest.raises(ExprError, match=words):
        evaluate(expr, {"vars": {"a": 1}})


def test_foreach_over_a_mapping_with_items_and_set_coercion(tmp_path):
    f = write(tmp_path / "r.yaml", """
recipe: r
vars: {scale: 1.0, domains: {algebra: 10, calculus: 6}}
steps:
  - id: load
    uses: data.from_file
    with: {path: PATH}
  - id: pick
    uses: data.sample
    foreach: ${vars.domains}
    with: {n: "${round(item.value * vars.scale)}"}
    inputs: {data: "${steps.load.data}"}
  - id: all
    uses: data.concat
    inputs: {datasets: "${steps.pick.data}"}
  - id: one
    uses: data.map
    inputs: {data: "${steps.pick['calculus'].data}"}
  - id: two
    uses: data.map
    inputs: {data: "${steps.pick.algebra.data}"}
""".replace("PATH", str(write(tmp_path / "d.jsonl", '{"a": 1}\n'))))
    plan = plan_file(f, sets=["vars.scale=0.5"])
    assert [n.label for n in plan.nodes] == ["load", "pick[algebra]", "pick[calculus]", "all", "one", "two"]
    assert plan.by_label["pick[algebra]"].config.n == 5
    assert plan.by_label["all"].inputs["datasets"] == [Ref("pick[algebra]", "data"), Ref("pick[calculus]", "data")]
    assert plan.by_label["one"].inputs["data"] == Ref("pick[calculus]", "data")
    assert plan.by_label["two"].inputs["data"] == Ref("pick[algebra]", "data")
    assert plan.vars["scale"] == 0.5 and isinstance(plan.vars["scale"], float)
    # an int given for a float var stays a float; a number given for a string var stays a string
    assert plan_file(f, sets=["vars.scale=1"]).vars["scale"] == 1.0


def test_extends_merges_vars_and_overrides_steps_by_id(tmp_path):
    data = write(tmp_path / "d.jsonl", '{"a": 1}\n{"a": 2}\n')
    write(tmp_path / "base.yaml", f"""
recipe: base
vars: {{n: 1, keep: yes}}
defaults:
  data.sample: {{seed: 5}}
steps:
  - id: load
    uses: data.from_file
    with: {{path: {data}}}
  - id: pick
    uses: data.sample
    with: {{n: "${{vars.n}}"}}
    inputs: {{data: "${{steps.load.data}}"}}
""")
    f = write(tmp_path / "child.yaml", """
recipe: child
extends: base.yaml
vars: {n: 2}
steps:
  - id: pick
    uses: data.sample
    with: {n: "${vars.n}", seed: 9}
    inputs: {data: "${steps.load.data}"}
  - id: extra
    uses: data.map
    inputs: {data: "${steps.pick.data}"}
""")
    plan = plan_file(f)
    assert plan.name == "child" and [n.label for n in plan.nodes] == ["load", "pick", "extra"]
    assert plan.by_label["pick"].config.n == 2 and plan.by_label["pick"].config.seed == 9


def test_defaults_apply_per_step_type_and_with_wins(tmp_path):
    data = write(tmp_path / "d.jsonl", '{"a": 1}\n')
    f = write(tmp_path / "r.yaml", f"""
recipe: r
defaults:
  data.split: {{test_fraction: 0.5, seed: 3}}
profiles:
  other: {{defaults: {{data.split: {{seed: 4}}}}}}
steps:
  - id: load
    uses: data.from_file
    with: {{path: {data}}}
  - id: split
    uses: data.split
    with: {{seed: 1}}
    inputs: {{data: "${{steps.load.data}}"}}
  - id: split2
    uses: data.split
    inputs: {{data: "${{steps.load.data}}"}}
""")
    plan = plan_file(f)
    assert (plan.by_label["split"].config.test_fraction, plan.by_label["split"].config.seed) == (0.5, 1)
    assert plan.by_label["split2"].config.seed == 3
    assert plan_file(f, profile="other").by_label["split2"].config.seed == 4


def test_cross_recipe_reference_plans_the_other_recipe_and_reuses_its_cache(cli):
    write(cli.tmp / "d.jsonl", '{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    write(cli.tmp / "recipes/upstream.yaml", """
recipe: upstream
vars: {n: 3}
profiles:
  tiny: {vars: {n: 1}}
steps:
  - id: load
    uses: data.from_file
    with: {path: d.jsonl}
  - id: pick
    uses: data.sample
    with: {n: "${vars.n}"}
    inputs: {data: "${steps.load.data}"}
""")
    down = write(cli.tmp / "recipes/downstream.yaml", """
recipe: downstream
steps:
  - id: use
    uses: data.map
    inputs: {data: '${recipe("recipes/upstream.yaml", profile="tiny").steps.pick.data}'}
""")
    cli("run", "recipes/upstream.yaml", "--profile", "tiny")
    cli("run", str(down.relative_to(cli.tmp)))
    assert cli.statuses() == {"upstream[tiny]/load": "cached", "upstream[tiny]/pick": "cached", "use": "ran"}
    assert (cli.artifacts / "upstream[tiny]" / "pick" / "data").exists()


def test_cross_recipe_reference_with_overrides_is_the_other_recipe_run_with_set(cli):
    write(cli.tmp / "d.jsonl", '{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    write(cli.tmp / "up.yaml", """
recipe: up
vars: {n: 3}
steps:
  - {id: load, uses: data.from_file, with: {path: d.jsonl}}
  - {id: pick, uses: data.sample, with: {n: "${vars.n}"}, inputs: {data: "${steps.load.data}"}}
""")
    down = write(cli.tmp / "down.yaml", """
recipe: down
steps:
  - id: two
    uses: data.map
    inputs: {data: '${recipe("up.yaml", vars={"n": 2}).steps.pick.data}'}
  - id: one
    uses: data.map
    inputs:
      data: '${recipe("up.yaml", set={"steps.pick.with.n": 1, "steps.load.with.path": "./d.jsonl"}).steps.pick.data}'
""")
    cli("run", "up.yaml", "--set", "vars.n=2")
    cli("run", "down.yaml")
    set_tag = next(k for k in cli.statuses() if k.startswith("up[set-")).partition("/")[0]
    assert cli.statuses() == {"up[vars.n=2]/load": "cached", "up[vars.n=2]/pick": "cached", "two": "ran",
                              f"{set_tag}/load": "ran", f"{set_tag}/pick": "ran", "one": "ran"}
    assert [len(Dataset(cli.artifacts / "down" / s / "data")) for s in ("two", "one")] == [2, 1]
    write(down, down.read_text().replace('vars={"n": 2}', 'vars={"m": 2}'))
    assert cli("plan", "down.yaml", check=2).stderr.strip().splitlines()[-1] == (
        "error: down.yaml:6:14: step two: input data: recipe('up.yaml') vars.m: the recipe has no var 'm' (vars: n)")
    write(down, down.read_text().replace('vars={"m": 2}', 'vars=2'))
    assert cli("plan", "down.yaml", check=2).stderr.strip().splitlines()[-1].endswith(
        'recipe(): vars= takes a mapping of names to values, e.g. vars={"n": 5}, got int')
    write(down, down.read_text().replace('vars=2', 'var={"n": 2}'))
    assert cli("plan", "down.yaml", check=2).stderr.strip().splitlines()[-1].endswith(
        "recipe() takes profile=, vars= and set=, not var=; did you mean vars?")


def test_recipes_that_refer_to_each_other_are_an_error(tmp_path):
    a = write(tmp_path / "a.yaml", "recipe: a\nsteps:\n  - id: x\n    uses: data.map\n"
                                   "    inputs: {data: '${recipe(\"b.yaml\").steps.y.data}'}\n")
    write(tmp_path / "b.yaml", "recipe: b\nsteps:\n  - id: y\n    uses: data.map\n"
                               "    inputs: {data: '${recipe(\"a.yaml\").steps.x.data}'}\n")
    with pytest.raises(RecipeError, match="refers back"):
        plan_file(a)


def test_recipe_references_each_get_a_label_of_their_own(tmp_path):
    """A label names one planning: a path or profile with a slash is a digest (no extra artifacts folder),
    the text 'Infinity' and the float are two labels, two files named alike are an error, not
    one node whose outputs both references read."""
    write(tmp_path / "d.jsonl", '{"a": 1}\n')
    up = "recipe: up\nvars: {n: 3.0, x: {a: 1}}\nsteps:\n  - {id: load, uses: data.from_file, with: {path: d.jsonl}}\n"
    write(tmp_path / "up.yaml", up)
    write(tmp_path / "other/up.yaml", up)

    def labels(*refs: str) -> list[str]:
        steps = "".join(f"  - {{id: s{i}, uses: data.map, inputs: {{data: '${{recipe({r}).steps.load.data}}'}}}}\n"
                        for i, r in enumerate(refs))
        plan = plan_file(write(tmp_path / "down.yaml", f"recipe: down\nsteps:\n{steps}"))
        return sorted(label.partition("/")[0] for label in plan.by_label if "/" in label)

    [slashed] = labels('"up.yaml", vars={"x.c/d": 1}')
    assert slashed.startswith("up[set-") and "/" not in slashed
    write(tmp_path / "up.yaml", up + 'profiles: {"ti/ny": {vars: {n: 1.0}}}\n')
    [slashed] = labels('"up.yaml", profile="ti/ny"')
    assert slashed.startswith("up[set-") and "/" not in slashed
    write(tmp_path / "up.yaml", up)
    assert labels('"up.yaml", vars={"n": 1e400}', '"up.yaml", vars={"n": "Infinity"}')[0].startswith("up[set-")
    assert len(set(labels('"up.yaml", vars={"n": 1e400}', '"up.yaml", vars={"n": "Infinity"}'))) == 2
    with pytest.raises(RecipeError, match=r"would label its steps up/\.\.\., as a reference to .*up\.yaml with "
                                          r"other overrides does; give the recipes different names"):
        labels('"up.yaml"', '"other/up.yaml"')
    with pytest.raises(RecipeError, match=r"recipe\('up.yaml'\): vars.n is given twice \(in vars= and in set=\)"):
        labels('"up.yaml", vars={"n": 1}, set={"vars.n": 2}')


def test_a_recipe_referring_to_itself_with_other_overrides_stops_at_a_depth(tmp_path):
    write(tmp_path / "d.jsonl", '{"a": 1}\n')
    b = write(tmp_path / "b.yaml", """recipe: b
vars: {n: 0}
steps:
  - {id: load, uses: data.from_file, with: {path: d.jsonl}}
  - {id: more, uses: data.map, inputs: {data: '${recipe("b.yaml", vars={"n": vars.n + 1}).steps.load.data}'}}
""")
    with pytest.raises(RecipeError) as e:
        plan_file(b)
    assert str(e.value).endswith("recipe('b.yaml'): recipe() references nest more than 8 deep "
                                 "(a recipe that refers to itself with other overrides never ends)")
    assert "RecursionError" not in str(e.value) and "b[vars.n=8]/more" in str(e.value)


def test_an_override_path_with_an_empty_name_is_an_error(tmp_path):
    """`--set vars.x.=5` added a key "" to vars.x and the plan did not change: a silent typo;
    `steps.pick.with..n` said the step has no config field '(config)'."""
    write(tmp_path / "d.jsonl", '{"a": 1}\n')
    f = write(tmp_path / "up.yaml", "recipe: up\nvars: {x: {a: 1}}\nsteps:\n"
                                    "  - {id: load, uses: data.from_file, with: {path: d.jsonl}}\n")
    for path in ("vars.x.", "vars.x..a", "steps.load.with..path"):
        with pytest.raises(RecipeError) as e:
            plan_file(f, sets=[f"{path}=5"])
        assert str(e.value) == f"--set {path}: {path!r} has an empty name (a dot at an end, or two in a row)"
    down = write(tmp_path / "down.yaml", "recipe: down\nsteps:\n  - {id: s, uses: data.map, inputs: "
                                         """{data: '${recipe("up.yaml", vars={"x.": 5}).steps.load.data}'}}\n""")
    with pytest.raises(RecipeError, match=r"recipe\('up.yaml'\) vars.x.: 'vars.x.' has an empty name"):
        plan_file(down)
