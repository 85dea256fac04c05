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


CHATTY = '''
import sys
from engine.recipe.artifact_types import Dataset
from engine.recipe.errors import StepError
from engine.recipe.step import Step, StepConfig, register


@register("test.chatty")
class Chatty(Step):
    class Config(StepConfig):
        fail: bool = False

    outputs = {"data": Dataset}

    def run(self, ctx):
        token = ctx.secret("MR_TEST_TOKEN")
        print("first line")
        for i in range(120_000):  # 10 MB, a secret on every line
            print(f"row {i:06d} token {token} " + "." * 64)
        ctx.run_process([sys.executable, "-c", f"print('from a command, token {token}')"])
        ctx.log.info("last line, token %s", token)
        if self.config.fail:
            raise StepError("s: gave up")
        ctx.write_dataset("data", [{"i": 1}])
'''


@pytest.mark.parametrize("fail", [False, True])
def test_a_step_log_keeps_its_head_and_tail_and_says_how_much_was_cut(cli, fail):
    """A step that printed 10 MB stored all of it in its entry (pushed, pulled and copied into
    reports as is); its failed log too. The log keeps 1 MiB of head and 3 MiB of tail, scrubbed."""
    import re

    LOG_HEAD, LOG_TAIL = 1 << 20, 3 << 20  # engine/run/steplog.py

    token = "plain-secret-value-42xyz"
    cli.env["MR_TEST_TOKEN"] = token
    add_step_module(cli, "chatty_steps", CHATTY)
    f = write(cli.tmp / "chatty.yaml", "recipe: chatty\nsteps:\n  - id: s\n    uses: test.chatty\n"
                                       f"    with: {{fail: {str(fail).lower()}}}\n")
    out = cli("run", str(f), check=int(fail)).stdout
    [log] = cli.cache.rglob("failed/*.log") if fail else cli.cache.rglob("log.txt")
    text = log.read_text()
    cuts = re.findall(r"^\[\.\.\. ([0-9,]+) bytes cut \.\.\.\]$", text, re.M)
    printed = 120_000 * len("row 000000 token *** " + "." * 64 + "\n")  # and a few lines more
    assert len(cuts) == 1 and 0 <= int(cuts[0].replace(",", "")) - (printed - LOG_HEAD - LOG_TAIL) < 1000, cuts
    assert len(text.encode()) <= LOG_HEAD + LOG_TAIL + 100
    head, tail = text.split(f"[... {cuts[0]} bytes cut ...]\n")
    assert "first line\nrow 000000 token *** ....." in head and head.endswith("\n")
    assert re.match(r"row \d{6} token \*\*\* \.{64}\n", tail)  # from a line's start
    assert "row 119999 token *** " in tail and "from a command, token ***\n" in tail
    assert ("step s failed: s: gave up" if fail else "step s finished") in tail.splitlines()[-1]
    assert token[:8] not in text and token[:8] not in out
    if fail:
        assert re.search(r"INFO last line, token \*\*\*\n.*ERROR step s failed: s: gave up", out, re.S)
    else:
        key = cli.last_run()["nodes"][0]["key"]
        shown = cli("show", key[:12], "--log-lines", "3").stdout
        assert "INFO last line, token ***" in shown and "INFO step s finished" in shown


def test_a_log_of_one_long_line_is_cut_between_characters_on_a_line_of_its_own(tmp_path):
    from engine.run.steplog import StepLog

    log = StepLog(tmp_path / "log.txt", head=100, tail=300)
    for _ in range(1000):
        log.write("€" * 333)  # 999 bytes, no newline: no line's start to cut at
    log.close()
    kept = (tmp_path / "log.txt").read_bytes()
    head, marker, tail = kept.decode("utf-8").split("\n")  # strict: no character halved
    assert (head, tail) == ("€" * 33, "€" * 100)
    assert marker == f"[... {999_000 - 99 - 300:,} bytes cut ...]"


def test_a_cut_log_is_the_head_of_what_was_written_one_line_and_its_tail(tmp_path, monkeypatch):
    """Whatever the writes (lines, no lines, 2- and 3-byte characters, a log just over the bound at
    its close, where a cut once wrote its line over the tail): the head, the count, the tail."""
    import random
    import re

    from engine.run import steplog

    rng = random.Random(0)
    for trial in range(300):
        monkeypatch.setattr(steplog, "_PIECE", rng.choice([8, 64, 1 << 20]))
        head, tail = rng.randint(0, 200), rng.randint(64, 400)
        log = steplog.StepLog(tmp_path / f"{trial}.txt", head=head, tail=tail)
        written = ["".join(rng.choice("ab\n€é") for _ in range(rng.randint(0, 60))) for _ in range(rng.randint(0, 40))]
        for text in written:
            log.write(text)
        log.close()
        full, kept = "".join(written).encode(), (tmp_path / f"{trial}.txt").read_bytes()
        kept.decode("utf-8")  # no character halved
        assert len(kept) <= head + tail + 64
        m = re.search(rb"\[\.\.\. ([0-9,]+) bytes cut \.\.\.\]\n", kept)
        if m is None:
            assert kept == full
            continue
        kept_head = kept[:m.start() - log._marker.startswith(b"\n")]  # a newline put before the line
        assert full.startswith(kept_head) and full.endswith(kept[m.end():]) and len(kept_head) <= head
        assert len(kept_head) + int(m.group(1).replace(b",", b"")) + len(kept) - m.end() == len(full)
