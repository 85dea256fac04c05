"""A killed step leaves no entry and resumes at its last finished shard; two processes that
need the same key compute it once; Ctrl-C says so once; a damaged run record is one message."""
import signal
import time

import pytest
from conftest import write

SQUARES = """recipe: squares
steps:
  - id: squares
    uses: test.squares
    with: {n: 40, shard_size: 5, delay: DELAY}
  - id: copy
    uses: test.count
    with: {tag: copy, delay: COPY_DELAY}
    inputs: {data: "${steps.squares.data}"}
"""


def recipe(cli, delay, copy_delay=0.0):
    return str(write(cli.tmp / "squares.yaml",
                     SQUARES.replace("COPY_DELAY", str(copy_delay)).replace("DELAY", str(delay))))


def wait_for(predicate, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_sigkill_leaves_no_entry_and_the_rerun_resumes_with_identical_digests(cli, tmp_path):
    f = recipe(cli, 0.3)
    proc = cli.popen("run", f)
    wait_for(lambda: sum(" shard " in line for line in cli.trace_lines()) >= 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not any(p.name == "entry.json" for p in cli.cache.rglob("entry.json")), "a killed step left an entry"
    shards_before = [l for l in cli.trace_lines() if " shard " in l]
    cli.trace.write_text("")

    cli("run", f)
    resumed = [int(l.split()[-1]) for l in cli.trace_lines() if " shard " in l]
    # finished shards (the ones whose checkpoint was written) are not computed again
    assert min(resumed) >= 5 * (len(shards_before) - 1)
    assert len(resumed) < 8
    digests = {n["label"]: n["outputs"] for n in cli.last_run()["nodes"]}

    clean = tmp_path / "clean"
    cli("run", f, cache=clean)
    assert {n["label"]: n["outputs"] for n in cli.last_run(clean)["nodes"]} == digests


def test_two_processes_compute_each_key_once(cli):
    f = recipe(cli, 0.05, copy_delay=1.0)
    a, b = cli.popen("run", f), cli.popen("run", f)
    assert a.wait() == 0 and b.wait() == 0
    lines = cli.trace_lines()
    assert sum(" count copy" in line for line in lines) == 1
    assert sum(" shard 0" in line for line in lines) == 1


def test_a_lock_left_by_a_killed_process_does_not_block(cli):
    f = str(write(cli.tmp / "slow.yaml", "recipe: slow\nsteps:\n  - id: s\n    uses: test.squares\n"
                                         "    with: {n: 10, shard_size: 5, delay: 1.0}\n"))
    proc = cli.popen("run", f)
    wait_for(lambda: any(" shard " in line for line in cli.trace_lines()))
    proc.send_signal(signal.SIGKILL)  # dies holding the key's lock
    proc.wait()
    assert list((cli.cache / "locks").glob("*.lock"))
    cli("run", f, timeout=60)
    assert cli.statuses() == {"s": "ran"}


def test_ctrl_c_during_a_step_says_so_once_on_the_terminal_and_the_rerun_resumes(cli):
    f = recipe(cli, 0.3)
    proc = cli.popen("run", f)
    wait_for(lambda: sum(" shard " in line for line in cli.trace_lines()) >= 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    # the line was routed into the running step's log (and deleted with its staging folder)
    assert err.count("interrupted: no entry was written for the step that was running; rerun to resume") == 1, err
    assert "Traceback" not in out + err
    assert not list(cli.cache.rglob("entry.json"))
    cli.trace.write_text("")

    cli("run", f)
    assert cli.statuses() == {"squares": "ran", "copy": "ran"}
    assert min(int(line.split()[-1]) for line in cli.trace_lines() if " shard " in line) >= 5  # shard 0 kept


@pytest.mark.parametrize("damage", ["cut", "binary", "list"])
def test_a_damaged_run_record_is_one_message_naming_it_in_every_command_that_reads_runs(cli, damage):
    f = write(cli.tmp / "r.yaml", "recipe: r\nsteps:\n  - id: s\n    uses: test.squares\n    with: {n: 4}\n")
    cli("run", str(f))
    record = next((cli.cache / "runs").glob("*.json"))
    record.write_bytes({"cut": record.read_bytes()[:150], "binary": b"\xff\xfe\x00", "list": b"[1, 2]"}[damage])
    for args in (["ls"], ["show", record.stem], ["report"], ["reproduce", record.stem], ["gc"]):
        p = cli(*args, check=1)
        assert f"error: run record {record} is damaged (" in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr, args
    assert next(cli.cache.glob("??/*/entry.json"))  # gc deleted nothing on the strength of a record it cannot read


def test_a_damaged_entry_json_is_set_aside_and_recomputed_by_run_and_one_message_elsewhere(cli):
    f = recipe(cli, 0.0)
    cli("run", f)
    digests = {n["label"]: n["outputs"] for n in cli.last_run()["nodes"]}
    copy = next(n["key"] for n in cli.last_run()["nodes"] if n["label"] == "copy")
    entry = cli.cache / copy[:2] / copy / "entry.json"
    entry.chmod(0o644)
    entry.write_text(entry.read_text()[:100])  # cut short
    p = cli("ls", check=1)
    assert f"error: entry {copy[:12]} in {cli.cache} is damaged: entry.json unreadable (" in p.stderr
    assert "Traceback" not in p.stderr
    p = cli("verify", "--recompute", check=1)
    assert f"tampered {copy[:12]}: entry.json unreadable (" in p.stdout
    assert "recomputed 1 deterministic entry: 1 match" in p.stdout, p.stdout + p.stderr

    p = cli("run", f)
    assert f"copy: cached entry {copy[:12]} is damaged (entry.json unreadable (" in p.stdout + p.stderr
    assert cli.statuses() == {"squares": "cached", "copy": "ran"}
    assert {n["label"]: n["outputs"] for n in cli.last_run()["nodes"]} == digests
    assert "2 of 2 entries verified" in cli("verify").stdout
