"""The command line: help with examples, the step library, and a light start-up path."""
import re
import subprocess
import sys

from conftest import ROOT

HEAVY = ("torch", "transformers", "datasets", "vllm", "trl", "sentencepiece", "matplotlib", "sympy", "pyarrow", "ray")


def test_help_shows_examples_and_exit_codes():
    out = subprocess.run([sys.executable, "-m", "engine.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    assert "recipe run recipes/quickstart.yaml" in out.stdout and "exit codes: 0 ok, 1 a step failed, 2" in out.stdout


def test_plan_and_step_discovery_import_nothing_heavy():
    code = ("import sys; from engine.recipe import step; step.load_all(); from engine.recipe.plan import plan_file; "
            "plan_file('recipes/demo.yaml'); import engine.run.runner, engine.cli.commands; "
            "from engine.run.executors import make_executor; make_executor('local', 2).capacity(); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_steps_lists_every_built_in_step_with_its_types(cli):
    out = cli("steps").stdout
    for name in ("data.from_file", "data.map", "data.concat", "data.split", "data.sample", "test.squares"):
        assert name in out
    one = cli("steps", "data.split").stdout
    assert "output train: Dataset" in one and re.search(r"│ test_fraction +│ float", one)


def test_no_step_module_fails_to_import():
    from engine.recipe import step

    step.load_all()
    assert step._BROKEN == {}
