"""Reuse only what verifies, and a key always names one content: a damaged entry is quarantined
and recomputed (never served), `verify --recompute` recomputes and compares, a file that
changes while a step reads it caches nothing, and `--rerun-changed-code` keeps the old key's
content."""
import json
import shutil
import threading

from conftest import ROOT, add_step_module, write

DEMO = ROOT / "recipes" / "demo.yaml"


def demo(cli):
    shutil.copy(DEMO, cli.tmp / "demo.yaml")
    write(cli.tmp / "tests/data/demo_problems.jsonl", (ROOT / "tests/data/demo_problems.jsonl").read_text())
    return "demo.yaml"


def keys(cli, cache=None):
    return {n["label"]: n["key"] for n in cli.last_run(cache)["nodes"]}


def outputs(cli, cache=None):
    return {n["label"]: n["outputs"] for n in cli.last_run(cache)["nodes"]}


def output_file(cli, key, name="data"):
    return cli.cache / key[:2] / key / "outputs" / name / "data.jsonl"


def test_a_deleted_output_is_quarantined_and_recomputed_on_the_fast_path_and_the_full_one(cli, tmp_path):
    f = demo(cli)
    cli("run", f)
    cli("run", f)
    assert cli.last_run().get("fast_path")
    text = keys(cli)["text"]
    output_file(cli, text).unlink()

    out = cli("run", f, "-q")  # the saved plan no longer holds: the full run checks the entry
    assert f"text: cached entry {text[:12]} is damaged (output data has 0 bytes, " in out.stdout
    assert cli.statuses()["text"] == "ran" and cli.statuses()["load"] == "cached"
    assert (cli.cache / "quarantine" / text / "entry.json").is_file()
    assert output_file(cli, text).is_file()

    # a changed byte, same size, under a --set that reruns the downstream steps
    path = output_file(cli, text)
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"answer": "', b'"answer": "#', 1)[: len(data)])
    out = cli("run", f, "--set", "vars.test_fraction=0.3")
    assert "does not match its recorded digest" in out.stdout
    assert cli.statuses()["text"] == "ran"
    assert (cli.cache / "quarantine" / f"{text}.1").is_dir()
    damaged = outputs(cli)

    clean = tmp_path / "clean"
    cli("run", f, "--set", "vars.test_fraction=0.3", cache=clean)
    assert outputs(cli, clean) == damaged
    assert cli("verify").returncode == 0


def test_plan_says_a_damaged_entry_will_run_and_moves_nothing(cli):
    f = demo(cli)
    cli("run", f)
    split = keys(cli)["split"]
    (cli.cache / split[:2] / split / "outputs" / "train" / "data.jsonl").write_text("")
    out = cli("plan", f).stdout
    assert "cached entry damaged: output train has 0 bytes" in out
    assert (cli.cache / split[:2] / split / "entry.json").is_file() and not (cli.cache / "quarantine").exists()


def test_verify_recompute_finds_an_entry_whose_output_and_digest_were_both_replaced(cli):
    f = demo(cli)
    cli("run", f)
    out = cli("verify", "--recompute").stdout
    assert "recomputed 6 deterministic entries: 6 match, 0 differ, 0 failed, 0 skipped" in out

    # a remote's entry with other rows and digests that match them: plain verify cannot tell
    from engine.cache.digest import tree_digest, tree_size

    text = keys(cli)["text"]
    folder = cli.cache / text[:2] / text
    rows = [json.loads(line) for line in (folder / "outputs/data/data.jsonl").read_text().splitlines()]
    rows[0]["answer"] = "42"
    (folder / "outputs/data/data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    entry = json.loads((folder / "entry.json").read_text())
    data = folder / "outputs/data"
    entry["outputs"]["data"].update(digest=tree_digest(data), size=tree_size(data))
    (folder / "entry.json").write_text(json.dumps(entry))
    assert cli("verify").returncode == 0

    bad = cli("verify", "--recompute", check=1).stdout
    assert f"differ {text[:12]} text: output data" in bad
    assert "1 differ" in bad
    assert not list((cli.cache / "tmp").glob("verify-*")), "the scratch folders were left behind"
    sampled = cli("verify", "--recompute", "--sample", "0.5", check=None).stdout
    summary = next(line for line in sampled.splitlines() if line.startswith("recomputed "))
    assert sum(int(part.split()[0]) for part in summary.split(": ")[1].split(", ")) == 3  # half of 6
    assert cli("verify", "--sample", "2", check=2).returncode == 2


def test_a_file_appended_while_it_is_read_fails_the_step_and_caches_nothing(cli):
    line = '{"n": %9d, "text": "a row of exactly sixty-four bytes.."}\n'  # writes never straddle a page
    assert len(line % 0) == 64
    big = cli.tmp / "big.jsonl"
    big.write_text("".join(line % i for i in range(100_000)))
    write(cli.tmp / "read.yaml", "recipe: read\nsteps:\n  - id: load\n    uses: data.from_file\n"
                                 "    with: {path: big.jsonl}\n")
    stop = threading.Event()

    def append():
        n = 100_000
        with open(big, "a") as f:
            while not stop.wait(0.005):
                f.write(line % n)
                f.flush()
                n += 1
    appender = threading.Thread(target=append)
    appender.start()
    try:
        out = cli("run", "read.yaml", check=1)
    finally:
        stop.set()
        appender.join()
    assert "load: big.jsonl changed while it was read; nothing was cached" in out.stdout
    assert not list(cli.cache.rglob("entry.json"))

    cli("run", "read.yaml")  # the file holds still: key and content agree
    key = keys(cli)["load"]
    rows = output_file(cli, key).read_text().count("\n")
    assert rows == big.read_text().count("\n") > 100_000


STEP = '''
from engine.recipe.step import Step, StepConfig, register


@register("code.tag")
class Tag(Step):
    version = "1"
    outputs = {{"data": __import__("engine.recipe.artifact_types", fromlist=["Dataset"]).Dataset}}

    def run(self, ctx):
        ctx.write_dataset("data", [{{"tag": "{tag}"}}])
'''


def test_rerun_changed_code_recomputes_under_another_key_and_the_old_content_stays(cli):
    plugins = add_step_module(cli, "code_steps", STEP.format(tag="old"))
    write(cli.tmp / "code.yaml", "recipe: code\nsteps:\n  - id: tag\n    uses: code.tag\n")
    cli("run", "code.yaml")
    old = keys(cli)["tag"]
    old_bytes = output_file(cli, old).read_bytes()

    add_step_module(cli, "code_steps", STEP.format(tag="new"))  # same version, other output
    shutil.rmtree(plugins / "__pycache__", ignore_errors=True)
    assert "code changed" in cli("run", "code.yaml").stdout  # reused, with the warning
    cli("run", "code.yaml", "--rerun-changed-code")
    new = keys(cli)["tag"]
    assert new != old and cli.statuses() == {"tag": "ran"}
    assert output_file(cli, old).read_bytes() == old_bytes  # the old key's content is untouched
    assert '"new"' in output_file(cli, new).read_text()

    out = cli("run", "code.yaml").stdout  # from now on the recomputation serves, without a warning
    assert keys(cli)["tag"] == new and cli.statuses() == {"tag": "cached"} and "code changed" not in out
    assert "2 of 2 entries verified" in cli("verify").stdout
