"""The command line: help with examples, the step library, and a light start-up path."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, add_step_module, write

HEAVY = ("torch", "transformers", "datasets", "vllm", "trl", "sentencepiece", "matplotlib", "sympy", "pyarrow", "ray",
         "numba")


def test_help_shows_examples_and_exit_codes():
    out = subprocess.run([sys.executable, "-m", "engine.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    assert "recipe run recipes/quickstart.yaml" in out.stdout and "exit codes: 0 ok, 1 a step failed, 2" in out.stdout


def test_plan_and_step_discovery_import_nothing_heavy():
    code = ("import sys; from engine.recipe import step; step.load_all(); from engine.recipe.plan import plan_file; "
            "plan_file('recipes/demo.yaml'); import engine.run.runner, engine.cli.commands; "
            "from engine.run.executors import check_executor, make_executor; make_executor('local', 2).capacity(); "
            "check_executor('ray=10.0.0.1:6379'); "
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


DEMO = str(ROOT / "recipes" / "demo.yaml")
COMMANDS = ("run", "plan", "show", "reproduce", "ls", "verify", "config", "gc", "push", "pull", "dag", "report",
            "steps")


def test_every_command_help_ends_with_examples_of_that_command(cli):
    for command in COMMANDS:
        out = cli(command, "--help").stdout
        assert f"examples:\n  recipe {command}" in out, command


def test_a_misspelt_command_choice_or_flag_names_the_closest(cli):
    last = cli("runn", DEMO, check=2).stderr.splitlines()[-1]
    assert last.startswith("recipe: error: argument COMMAND: invalid choice: 'runn' (choose from 'run', 'plan'")
    assert last.endswith("; did you mean run?")
    assert cli("run", DEMO, "--onyl", "load", check=2).stderr.splitlines()[-1] == (
        "recipe run: error: unrecognized arguments: --onyl load; did you mean --only?")
    assert cli("dag", DEMO, "--format", "mermiad", check=2).stderr.splitlines()[-1] == (
        "recipe dag: error: argument --format: invalid choice: 'mermiad' (choose from 'text', 'mermaid', 'dot'); "
        "did you mean mermaid?")


def test_counts_out_of_range_are_refused(cli):
    assert cli("run", DEMO, "-j", "0", check=2).stderr.splitlines()[-1] == (
        "recipe run: error: argument -j/--jobs: expected an integer >= 1, got '0'")
    assert cli("gc", "--keep-last", "-1", check=2).stderr.splitlines()[-1] == (
        "recipe gc: error: argument --keep-last: expected an integer >= 0, got '-1'")
    assert not cli.cache.exists()


def test_a_misspelt_executor_is_refused_when_nothing_changed(cli):
    cli("run", DEMO, "-q")
    p = cli("run", DEMO, "-q", "--executor", "rai", check=2)
    assert p.stderr == "error: unknown executor 'rai'; expected local, ray or ray=ADDRESS; did you mean ray?\n"


def test_plan_refuses_a_misspelt_executor_as_run_does(cli):
    """`recipe plan` took no --executor and planned for a recipe's misspelt `executor:` (exit 0)."""
    for command in ("plan", "run"):
        p = cli(command, DEMO, "--executor", "rya=10.0.0.1:6379", check=2)
        assert p.stderr == ("error: unknown executor 'rya=10.0.0.1:6379'; expected local, ray or ray=ADDRESS; "
                            "did you mean ray?\n")
    cli("plan", DEMO, "--executor", "ray")  # checked by name: ray is not imported (see the test above)


def test_show_says_a_run_prefix_is_ambiguous_and_prints_no_python_values(cli):
    cli("run", DEMO, "-q")
    cli("run", DEMO, "-q", "--set", "vars.sample=3")
    first, second = sorted(p.stem for p in (cli.cache / "runs").glob("*.json"))
    shared = next(i for i in range(len(first)) if first[i] != second[i])
    p = cli("show", first[:shared], check=1)
    assert p.stderr == f"error: run prefix {first[:shared]!r} is ambiguous: {first}, {second}\n"
    head = cli("show", first).stdout.splitlines()[0]
    assert head.endswith("status ok  profile -  sets -")
    assert cli("show", second).stdout.splitlines()[0].endswith("profile -  sets vars.sample=3")
    key = cli.last_run()["nodes"][0]["key"]
    assert cli("show", key, "--log-lines", "0").stdout.splitlines()[-1] == "  log (tail):"


def test_a_relative_cache_path_links_artifacts_that_outlive_the_working_folder(cli):
    sub = cli.tmp / "sub"
    sub.mkdir()
    cli("run", DEMO, "-q", cache=Path("../relative-cache"), cwd=sub)
    sub.rmdir()  # the links name the cache without `sub/..`
    link = cli.artifacts / "demo" / "load" / "data"
    assert ".." not in os.readlink(link)
    assert len(list(link.iterdir())) == 1


def test_ls_of_an_empty_cache_says_where_it_looked(cli):
    assert cli("ls").stdout == (f"no runs and no entries in {cli.cache} yet: `recipe run RECIPE` fills it "
                                "(--cache-dir or RECIPE_CACHE_DIR names another)\n")
    cli("run", DEMO, "-q")
    assert cli("ls").stdout.splitlines()[-1].startswith("1 run, 6 entries, ")


def test_a_cache_path_that_cannot_be_a_folder_stops_the_run_before_any_step(cli):
    (cli.tmp / "afile").write_text("")
    p = cli("run", DEMO, cache=cli.tmp / "afile", check=2)
    assert p.stderr == f"error: cannot use {cli.tmp / 'afile'} as the cache folder (--cache-dir, RECIPE_CACHE_DIR): " \
                       "a file, not a folder\n"
    assert p.stdout == "" and not cli.artifacts.exists()
    p = cli("run", DEMO, cache=cli.tmp / "afile" / "cache", check=2)
    assert p.stderr.endswith("as the cache folder (--cache-dir, RECIPE_CACHE_DIR): not a directory\n")


def test_steps_lock_with_a_step_name_is_refused_and_writes_nothing(cli):
    lock = ROOT / "steps" / "versions.lock"
    before = lock.stat().st_mtime_ns
    p = cli("steps", "--lock", "data.map", check=2)
    assert p.stderr == ("error: --lock rewrites the lock of every built-in step; run `recipe steps --lock` "
                        "without 'data.map'\n")
    assert lock.stat().st_mtime_ns == before


def test_a_command_flag_given_before_the_command_says_where_it_goes(cli):
    p = cli("--profile", "small", "run", DEMO, check=2)
    assert p.stderr.splitlines()[-1] == "recipe: error: --profile goes after the command: recipe run ... --profile"
    assert not cli.cache.exists()


def test_a_misspelt_instance_label_names_the_closest_instance(cli):
    p = cli("run", DEMO, "--force", "sample[trian]", check=2)
    assert p.stderr == (f"error: {DEMO}: --force sample[trian]: no step 'sample[trian]' in recipe demo; did you mean "
                        "sample[train]? (steps: both, load, sample, split, text)\n")


TORCH_LOOP = '''
from pathlib import Path

from engine.recipe.artifact_types import Dataset
from engine.recipe.step import Step, register


@register("loop.torch")
class TorchLoop(Step):
    version = "1"
    outputs = {"data": Dataset}

    def run(self, ctx):
        import torch

        Path(__file__).with_name("started").write_text("")
        model = torch.nn.Linear(64, 64)
        while True:
            model(torch.randn(256, 64)).sum().backward()
'''


def test_ctrl_c_during_a_torch_step_says_so_and_exits_130(cli):
    plugins = add_step_module(cli, "loop_steps", TORCH_LOOP)
    write(cli.tmp / "loop.yaml", "recipe: loop\nsteps:\n  - id: spin\n    uses: loop.torch\n")
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731 - as a terminal starts it
    p = subprocess.Popen(cli.args("run", "loop.yaml"), env=cli.env, cwd=cli.tmp, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.time() + 60
    while not (plugins / "started").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.1)
    time.sleep(1)  # inside torch
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert (p.returncode, err) == (130, "interrupted: no entry was written for the step that was running; "
                                        "rerun to resume\n"), out
    assert not list(cli.cache.rglob("entry.json"))


def test_an_out_path_that_cannot_be_a_folder_stops_the_run_before_any_step(cli):
    (cli.tmp / "afile").write_text("")
    p = cli("run", DEMO, "--out", "afile", check=2)
    assert p.stderr == f"error: cannot use {cli.tmp / 'afile'} as the --out folder: a file, not a folder\n"
    assert p.stdout == "" and not list(cli.cache.rglob("entry.json"))


def test_show_of_a_failed_step_key_points_at_its_log(cli):
    write(cli.tmp / "fail.yaml", "recipe: fail\nsteps:\n  - id: load\n    uses: data.from_file\n    with:\n"
                                 f"      path: {ROOT / 'tests/data/demo_problems.jsonl'}\n  - id: text\n"
                                 "    uses: data.map\n    with:\n      derive: {text: 'problem + nosuch'}\n"
                                 "    inputs:\n      data: ${steps.load.data}\n")
    cli("run", "fail.yaml", check=1)
    key = next(n["key"] for n in cli.last_run()["nodes"] if n["label"] == "text")
    log = next((cli.cache / "failed").glob(f"{key}-*.log"))
    p = cli("show", key[:10], check=1)
    assert p.stderr == f"error: '{key[:10]}' is a step that failed, so it has no entry; its log: {log}\n"
