"""A step's output is the entry's content: a symlink in it that leads out of the output folder
(to /etc, to a file that may change) or back into a folder above it fails the step with one
line, and nothing is cached."""
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
        os.symlink(self.config.target, ctx.out("data") / "link")
        ctx.write_dataset("data", [{"i": 1}])
'''


@pytest.mark.parametrize("target, why", [("/etc", "'data/link' is a symlink to outside the entry"),
                                         ("{tmp}/rows.jsonl", "'data/link' is a symlink to outside the entry"),
                                         (".", "'data/link' is a symlink to a folder that holds it")])
def test_a_symlink_leaving_the_output_fails_the_step_and_caches_nothing(cli, target, why):
    add_step_module(cli, "link_steps", STEP)
    write(cli.tmp / "rows.jsonl", '{"i": 2}\n')  # a file that may change after the entry is sealed
    target = target.format(tmp=cli.tmp)
    f = write(cli.tmp / "links.yaml", f"recipe: links\nsteps:\n  - id: s\n    uses: test.linker\n"
                                      f"    with: {{target: '{target}'}}\n")
    p = cli("run", str(f), check=1)
    assert f"s: its output {why}; nothing was cached" in p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert not list(cli.cache.rglob("entry.json"))
    assert cli.statuses() == {"s": "failed"}
