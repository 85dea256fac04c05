"""What a step leaves behind. Its output is the entry's content: a symlink in it that leads out
of the output folder (to /etc, to a file that may change) or back into a folder above it, or a
FIFO (reading it waits forever), fails the step with one line, and nothing is cached; so does a
Model output with no content. What it prints goes to its log, and a failure shows the log's
end, bounded however much it printed."""
import pytest
from conftest import add_step_module, write

STEP = '''
import os
from engine.recipe.artifact_types import Dataset
from engine.recipe.step import Step, StepConfig, register


@register("test.linker")
class Linker(Step):
    class Config(StepConfig):
        target: str = ""

    outputs = {"data": Dataset}

    def run(self, ctx):
        if self.config.target == "fifo":
            os.mkfifo(ctx.out("data") / "link")
        else:
            os.symlink(self.config.target, ctx.out("data") / "link")
        ctx.write_dataset("data", [{"i": 1}])
'''


@pytest.mark.parametrize("target, why", [("/etc", "'data/link' is a symlink to outside the entry"),
                                         ("{tmp}/rows.jsonl", "'data/link' is a symlink to outside the entry"),
                                         (".", "'data/link' is a symlink to a folder that holds it"),
                                         ("fifo", "'data/link' is not a regular file (a FIFO, socket or device)"),
                                         ("gone.jsonl", "'data/link' is a symlink to nothing")])
def test_a_symlink_leaving_the_output_fails_the_step_and_caches_nothing(cli, target, why):
    add_step_module(cli, "link_steps", STEP)
    write(cli.tmp / "rows.jsonl", '{"i": 2}\n')  # a file that may change after the entry is sealed
    target = target.format(tmp=cli.tmp)
    f = write(cli.tmp / "links.yaml", f"recipe: links\nsteps:\n  - id: s\n    uses: test.linker\n"
                                      f"    with: {{target: '{target}'}}\n")
    p = cli("run", str(f), check=1, timeout=60)  # a FIFO hung the digest walk
    assert f"s: its output {why}; nothing was cached" in p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert not list(cli.cache.rglob("entry.json"))
    assert cli.statuses() == {"s": "failed"}


LOUD = '''
from engine.recipe.artifact_types import Dataset
from engine.recipe.errors import StepError
from engine.recipe.step import Step, register


@register("test.loud")
class Loud(Step):
    outputs = {"data": Dataset}

    def run(self, ctx):
        for i in range(30):
            print(f"line {i}")
        print("z" * 3_000_000, end="")  # one line of 3 MB, no newline
        raise StepError("s: gave up")
'''


def test_a_failed_step_shows_a_bounded_end_of_its_log(cli):
    add_step_module(cli, "loud_steps", LOUD)
    f = write(cli.tmp / "loud.yaml", "recipe: loud\nsteps:\n  - id: s\n    uses: test.loud\n")
    out = cli("run", str(f), check=1).stdout
    assert len(out) < 30_000, len(out)  # the whole 3 MB line reached the terminal
    assert "s failed; last 20 lines of" in out
    assert "z" * 500 + " [...]" in out and "z" * 501 not in out


HOLLOW = '''
from engine.recipe.artifact_types import Model
from engine.recipe.step import Step, StepConfig, register


@register("test.hollow")
class Hollow(Step):
    class Config(StepConfig):
        empty_file: bool = False

    outputs = {"model": Model}

    def run(self, ctx):
        if self.config.empty_file:
            (ctx.out("model") / "model.safetensors").write_bytes(b"")
        else:
            ctx.out("model")
'''


@pytest.mark.parametrize("empty_file", [False, True])
def test_a_model_output_with_no_content_fails_the_step(cli, empty_file):
    add_step_module(cli, "hollow_steps", HOLLOW)
    f = write(cli.tmp / "hollow.yaml", "recipe: hollow\nsteps:\n  - id: m\n    uses: test.hollow\n"
                                       f"    with: {{empty_file: {str(empty_file).lower()}}}\n")
    p = cli("run", str(f), check=1)
    assert "m: output model holds no file with content; nothing was cached" in p.stdout + p.stderr
    assert not list(cli.cache.rglob("entry.json"))
