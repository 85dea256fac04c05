"""Console hygiene: what libraries print while a step runs (warnings, logging records, tqdm
bars, trl's loss dicts) goes to that step's log.txt; the console shows the engine's lines,
`-v` streams step output live, and a failure shows the end of its log."""
from __future__ import annotations

import os
import re
import subprocess

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
        bar: int = 0  # a bar of this many updates that, like a trainer, keeps updating its text at the end

    outputs = {"data": Dataset}

    def run(self, ctx):
        tag = self.config.tag
        if self.config.bar:
            with ctx.progress(self.config.bar, "training") as bar:
                for _ in range(self.config.bar):
                    bar.update()
                for loss in ("0.5", "0.4", "0.3"):
                    bar.desc = f"training, loss {loss}"
                    bar.update(0)
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


# ---------------------------------------------------------------------------- what the console shows

def in_a_terminal(cli, *args: str, timeout: float = 120) -> str:
    """`recipe ARGS` with a pseudo-terminal as its stdout and stderr: everything it drew, colours
    and cursor moves left out."""
    import pty

    main, child = pty.openpty()
    proc = subprocess.Popen(cli.args(*args), env={**cli.env, "TERM": "xterm"}, cwd=cli.tmp, stdin=child,
                            stdout=child, stderr=child, close_fds=True)
    os.close(child)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(main)
        proc.wait(timeout=timeout)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode("utf-8", errors="replace"))


def test_quiet_on_a_terminal_keeps_one_live_line_with_the_step_count_and_eta(noisy):
    """Issue 22: `-q` printed only the run id until the end, which looks hung."""
    out = in_a_terminal(noisy, "run", str(noisy.recipe(lines_a=4, delay=0.3)), "-q")
    assert "step 0/2 · running a" in out and re.search(r"step 1/2 · running b · 0:0\d elapsed · ETA 0:0\d", out)
    assert "ran      a" not in out  # still quiet: no line per step
    assert re.search(r"run \S+ done: 2 ran", out)


def test_a_terminal_shows_an_overall_line_above_the_bars(noisy):
    out = in_a_terminal(noisy, "run", str(noisy.recipe(lines_a=4, delay=0.3)))
    assert re.search(r"step 1/2 · running b · 0:0\d elapsed · ETA 0:0\d", out)
    assert "ran      a" in out and "ran      b" in out


def test_piped_progress_prints_each_bars_final_state_once(noisy):
    """Issue 22: a bar that kept updating its text after reaching its total printed a line per update."""
    recipe = noisy.recipe()
    write(recipe, recipe.read_text().replace("{tag: beta,", "{tag: beta, bar: 5,"))
    p = noisy("run", str(recipe))
    bars = [line.strip() for line in p.stdout.splitlines() if "b training" in line]
    assert bars == ["b training, loss 0.3: 5/5"], p.stdout


def test_verbose_prefixes_every_streamed_line_with_its_step(noisy):
    """Issue 22: under `-j 2` the two steps' output interleaved with nothing saying whose it was."""
    p = noisy("run", str(noisy.recipe(lines_a=6, delay=0.05)), "-v", "-j", "2")
    streamed = [line for line in p.stdout.splitlines() if re.search(r"alpha|beta", line)] + p.stderr.splitlines()
    assert len(streamed) >= 16, p.stdout + p.stderr
    for line in streamed:  # the warning's second line (its source line) names neither step
        assert line.startswith(("a | ", "b | ")), line
        assert ("alpha" in line) <= line.startswith("a | ") and ("beta" in line) <= line.startswith("b | "), line
    assert "a | stdout line 5 from alpha" in p.stdout and "b | progress 3/3 from beta" in p.stderr


FOREACH = """
recipe: twins
vars: {copies: [1, 2]}
steps:
  - id: a
    uses: noisy.step
    foreach: ${vars.copies}
    with: {tag: same, fail: true}
"""


def test_two_foreach_instances_with_one_key_each_show_their_own_log(noisy):
    """Issue 22: instances whose config does not use `item` share a key; when both failed, each
    showed the log tail of whichever failed last."""
    p = noisy("run", str(write(noisy.tmp / "twins.yaml", FOREACH)), check=1)
    keys = {n["label"]: n["key"] for n in noisy.last_run()["nodes"]}
    assert keys["a[1]"] == keys["a[2]"]
    for me, other in (("a[1]", "a[2]"), ("a[2]", "a[1]")):
        tail = p.stdout[p.stdout.index(f"{me} failed; last 20 lines of"):]
        tail = tail[:tail.index("failed; last 20 lines of", 30)] if "failed; last" in tail[30:] else tail
        assert f"step {me} failed: same broke" in tail and f"step {other} " not in tail, tail


def test_steps_name_prints_a_field_table_and_the_listing_shows_factory_defaults(cli):
    """Issue 22: `recipe steps NAME` printed raw JSON Schema; the listing showed `=PydanticUndefined`."""
    p = cli("steps", "generate.responses")
    assert '"$defs"' not in p.stdout and '"properties"' not in p.stdout
    assert re.search(r"┃ field +┃ type +┃ default +┃ description +┃", p.stdout)
    assert re.search(r"│ backend\.kind +│ str +│ 'transformers' +│ +│", p.stdout)
    assert re.search(r"│ backend\.concurrency +│ int +│ 8 +│ not part of the key +│", p.stdout)
    assert re.search(r"│ max_failed_fraction +│ float, >= 0\.0, <= 1\.0 +│ 0\.5 +│ fail the step when", p.stdout)
    assert re.search(r"│ stop +│ list\[str\] +│ \[\] +│", p.stdout)
    listing = cli("steps").stdout
    assert "PydanticUndefined" not in listing
    assert re.search(r"│ evaluate\.compare .*│ labels=\[\], title='accuracy' +│", listing)


def test_counts_in_messages_are_singular_for_one(cli, tmp_path):
    """Issue 22: "1 run records", "1 entries"."""
    recipe = write(tmp_path / "one.yaml", "recipe: one\nsteps:\n  - {id: nums, uses: problems.arithmetic, "
                                          "with: {count: 2, seed: 0}}\n")
    cli("run", str(recipe))
    assert re.search(r"^1 run, 1 entry, ", cli("ls").stdout, re.MULTILINE)
    pushed = cli("push", f"file://{tmp_path / 'remote'}").stdout
    assert f"pushed 1 entry and 1 run record to file://{tmp_path / 'remote'}" in pushed


RAY_RECIPE = """recipe: rays
steps:
  - {id: squares, uses: raytest.squares, with: {n: 8, shard_size: 2, delay: 1.5, trace: TRACE}}
"""


@pytest.mark.ray
def test_rays_own_output_goes_to_a_log_under_the_run(cli, ray_address):
    """Issue 22: under --executor ray, Ray's "(raylet) ..." messages (a worker died, with ANSI
    colours and state dumps) landed in the run's output."""
    import signal
    import time

    cli.env["RECIPE_STEP_MODULES"] = "engine_test_steps,ray_test_steps"
    recipe = write(cli.tmp / "rays.yaml", RAY_RECIPE.replace("TRACE", str(cli.trace)))
    proc = cli.popen("run", str(recipe), "--executor", f"ray={ray_address}")
    for _ in range(1200):  # a shard has started: kill its worker
        started = [line.split() for line in cli.trace_lines() if line.split()[2:3] == ["start"]]
        if started:
            break
        time.sleep(0.1)
    os.kill(int(started[0][0]), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert "raylet" not in out + err and "\x1b[" not in out + err, out + err
    log = cli.cache / "runs" / f"{cli.last_run()['run_id']}.ray.log"
    assert f"Ray's own output goes to {log}" in out
    text = log.read_text()
    assert "(raylet) A worker died or was killed while executing a task" in text and "\x1b[" not in text
