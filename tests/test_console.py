"""Console hygiene: what libraries print while a step runs (warnings, logging records, tqdm
bars, trl's loss dicts) goes to that step's log.txt; the console shows the engine's lines,
`-v` streams step output live, and a failure shows the end of its log."""
from __future__ import annotations

import re

import pytest
from conftest import write

TQDM_LINE = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")  # "Tokenizing train dataset:  66%|██▌ | 63/96 [00:00<..."

PLUGIN = '''
import logging, sys, threading, time, warnings

from engine.recipe.artifact_types import Dataset
from engine.recipe.step import Step, StepConfig, register


@register("noisy.step")
class Noisy(Step):
    """Prints, warns and logs the way libraries do, from its own thread and a helper thread."""

    class Config(StepConfig):
        tag: str = "a"
        lines: int = 3
        fail: bool = False
        delay: float = 0.0

    outputs = {"data": Dataset}

    def run(self, ctx):
        tag = self.config.tag
        for i in range(self.config.lines):
            print(f"stdout line {i} from {tag}")
            time.sleep(self.config.delay)
        sys.stderr.write(f"progress 3/3 from {tag}\\r\\n")
        warnings.warn(f"old API used by {tag}", FutureWarning)
        logging.getLogger("somelib.module").warning("library record from %s", tag)
        helper = threading.Thread(target=print, args=(f"helper thread of {tag}",))
        helper.start()
        helper.join()
        if self.config.fail:
            raise RuntimeError(f"{tag} broke")
        ctx.write_dataset("data", [{"tag": tag}])
'''

RECIPE = """
recipe: noisy
steps:
  - id: a
    uses: noisy.step
    with: {tag: alpha, lines: LINES_A, fail: FAIL, delay: DELAY}
  - id: b
    uses: noisy.step
    with: {tag: beta, lines: 3, delay: DELAY}
"""


@pytest.fixture
def noisy(cli, tmp_path):
    write(tmp_path / "plugin" / "noisy_steps.py", PLUGIN)
    cli.env["PYTHONPATH"] = f"{tmp_path / 'plugin'}:{cli.env['PYTHONPATH']}"
    cli.env["RECIPE_STEP_MODULES"] += ",noisy_steps"

    def recipe(lines_a=3, fail=False, delay=0.0):
        text = RECIPE.replace("LINES_A", str(lines_a)).replace("FAIL", str(fail).lower())
        return write(tmp_path / "noisy.yaml", text.replace("DELAY", str(delay)))

    cli.recipe = recipe
    return cli


def _log(cli, label: str) -> str:
    node = next(n for n in cli.last_run()["nodes"] if n["label"] == label)
    return (cli.cache / node["key"][:2] / node["key"] / "log.txt").read_text()


def test_library_output_goes_to_the_step_log_not_the_console(noisy):
    p = noisy("run", str(noisy.recipe()))
    console = p.stdout + p.stderr
    for leak in ("stdout line", "progress 3/3", "FutureWarning", "library record", "helper thread"):
        assert leak not in console
    assert "ran      a" in p.stdout and "ran      b" in p.stdout
    log = _log(noisy, "a")
    for line in ("stdout line 2 from alpha", "progress 3/3 from alpha", "FutureWarning: old API used by alpha",
                 "WARNING library record from alpha", "helper thread of alpha"):
        assert line in log
    assert "beta" not in log


def test_verbose_streams_step_output_live_and_still_logs_it(noisy):
    p = noisy("run", str(noisy.recipe()), "-v")
    assert "stdout line 2 from alpha" in p.stdout and "progress 3/3 from beta" in p.stderr
    assert "old API used by alpha" in p.stderr
    assert "stdout line 2 from alpha" in _log(noisy, "a")


def test_two_steps_at_once_each_log_only_their_own_output(noisy):
    noisy("run", str(noisy.recipe(lines_a=6, delay=0.05)), "-j", "2")
    a, b = _log(noisy, "a"), _log(noisy, "b")
    assert "stdout line 5 from alpha" in a and "beta" not in a
    assert "stdout line 2 from beta" in b and "alpha" not in b


def test_a_failure_shows_the_last_20_lines_of_its_log(noisy):
    p = noisy("run", str(noisy.recipe(lines_a=40, fail=True)), check=1)
    assert "RuntimeError: alpha broke" in p.stdout
    tail = p.stdout[p.stdout.index("last 20 lines of"):]
    assert "stdout line 39 from alpha" in tail and "ERROR step a failed: alpha broke" in tail
    assert "stdout line 10 from alpha" not in p.stdout  # only the end of the log
    assert "stdout line" not in p.stderr


# ---------------------------------------------------------------------------- the quickstart, captured

@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    from _tiny import quickstart_tiny_run

    return quickstart_tiny_run(tmp_path_factory)


def test_quickstart_console_has_only_the_engines_lines(quickstart):
    console = quickstart.first_stdout + quickstart.first_stderr
    assert "FutureWarning" not in console
    assert "{'loss'" not in console
    assert not [line for line in console.splitlines() if TQDM_LINE.search(line)]
    assert quickstart.first_stderr.strip() == ""
    # the engine's own progress line for training carries the latest loss
    assert re.search(r"sft training, loss [-0-9.e]+: \d+/\d+", quickstart.first_stdout)


def test_quickstart_library_output_is_in_the_step_logs(quickstart):
    logs = {}
    for n in quickstart.first_run["nodes"]:
        logs[n["label"]] = (quickstart.cache / n["key"][:2] / n["key"] / "log.txt").read_text()
    every = "\n".join(logs.values())
    assert "FutureWarning" in every
    assert "{'loss'" in logs["sft"] and "{'loss'" in logs["dpo"] and "{'loss'" in logs["grpo"]
    assert TQDM_LINE.search(logs["sft"])  # trl's "Tokenizing train dataset" bars
