"""Typos are caught before anything runs, with the closest name: `--set` paths (vars, steps,
config fields, defaults), `--only`, `--force`, `--profile`; and a step module that failed to
import shows its exception where its step type is missing."""
import pytest
from conftest import write
from test_engine_cache import demo


@pytest.mark.parametrize("args, message", [
    (["--set", "vars.smaple=3"],
     "--set vars.smaple: the recipe has no var 'smaple'; did you mean vars.sample? (vars: source, test_fraction, "
     "sample)"),
    (["--set", "steps.splitt.with.seed=2"],
     "--set steps.splitt.with.seed: no step with id 'splitt'; did you mean steps.split.with.seed? "
     "(ids: load, text, split, sample, both)"),
    (["--set", "steps.split.wiht.seed=2"],
     "--set steps.split.wiht.seed: cannot set steps.split.wiht; did you mean steps.split.with.seed?"),
    (["--set", "steps.split.with.sed=2"],
     "--set steps.split.with.sed: step split: data.split has no config field 'sed'; did you mean seed?"),
    (["--set", "var.sample=2"], "--set var.sample: cannot override 'var.sample'; did you mean vars.sample?"),
    (["--set", "defaults.data.splt.seed=1"],
     "--set defaults.data.splt.seed: no step of the recipe uses 'data.splt', so its defaults apply to nothing; "
     "did you mean defaults.data.split.seed?"),
    (["--profile", "smal"], "demo.yaml: unknown profile 'smal'; did you mean small? (profiles: small)"),
])
def test_a_misspelt_override_is_an_error_naming_the_closest_path(cli, args, message):
    f = demo(cli)
    for command in ("plan", "run"):
        p = cli(command, f, *args, check=2)
        assert p.stderr.startswith("error: " + message) and p.stderr.count("\n") == 1, p.stderr
    assert not cli.cache.exists() or not list(cli.cache.rglob("entry.json"))


def test_a_new_key_inside_a_mapping_var_is_an_addition_but_a_new_var_is_a_typo(cli):
    write(cli.tmp / "r.yaml", """
recipe: r
vars: {ops: {add: "+"}}
steps:
  - id: make
    uses: problems.arithmetic
    foreach: ${vars.ops}
    with: {count: 2, operators: ["${item.value}"]}
""")
    out = cli("plan", "r.yaml", "--set", "vars.ops.mul=*").stdout
    assert "make[add]" in out and "make[mul]" in out
    p = cli("plan", "r.yaml", "--set", "vars.opps.mul=*", check=2)
    assert "the recipe has no var 'opps'; did you mean vars.ops.mul?" in p.stderr


@pytest.mark.parametrize("option", ["--only", "--force"])
def test_only_and_force_suggest_the_closest_step(cli, option):
    f = demo(cli)
    p = cli("run", f, option, "splitt", check=2)
    assert p.stderr.startswith(f"error: demo.yaml: {option} splitt: no step 'splitt' in recipe demo; did you mean "
                               "split? (steps: both, load, sample, split, text)"), p.stderr
    assert not cli.cache.exists() or not list(cli.cache.rglob("entry.json"))


def test_a_misspelt_input_name_is_suggested(cli):
    f = demo(cli)
    p = cli("plan", f, "--set", "steps.text.inputs.dta=${steps.load.data}", check=2)
    assert "data.map has no input 'dta'; did you mean data? (inputs: data: Dataset)" in p.stderr


PLUGIN_RECIPE = """
recipe: team
steps:
  - id: add
    uses: team.add_column
"""


def test_a_plugin_module_not_on_the_path_shows_why_in_unknown_step_type(cli):
    write(cli.tmp / "team.yaml", PLUGIN_RECIPE)
    cli.env["RECIPE_STEP_MODULES"] = "mysteps"
    p = cli("plan", "team.yaml", check=2)
    assert p.stderr.startswith("error: team.yaml:5:5: unknown step type 'team.add_column'; step module mysteps "
                               "failed to import (ModuleNotFoundError: No module named 'mysteps')"), p.stderr
    assert p.stderr.count("\n") == 1


def test_a_plugin_module_that_raises_on_import_shows_its_exception(cli):
    write(cli.tmp / "team.yaml", PLUGIN_RECIPE)
    write(cli.tmp / "plugins" / "brokensteps.py", "import json\nraise RuntimeError('column registry is missing')\n")
    cli.env["RECIPE_STEP_MODULES"] = "brokensteps"
    cli.env["PYTHONPATH"] = f"{cli.tmp / 'plugins'}:{cli.env['PYTHONPATH']}"
    p = cli("plan", "team.yaml", check=2)
    assert ("unknown step type 'team.add_column'; step module brokensteps failed to import "
            "(RuntimeError: column registry is missing)") in p.stderr, p.stderr


def test_a_misspelt_nested_config_field_is_suggested_from_its_own_model(cli):
    write(cli.tmp / "n.yaml", """
recipe: n
steps:
  - id: make
    uses: problems.arithmetic
    with: {count: 2}
  - id: gen
    uses: generate.responses
    with: {model: x}
    inputs: {problems: "${steps.make.problems}"}
""")
    p = cli("plan", "n.yaml", "--set", "steps.gen.with.backend.kidn=vllm", check=2)
    assert ("generate.responses has no config field 'backend.kidn'; did you mean backend.kind? (fields of backend: "
            "kind, ") in p.stderr, p.stderr
