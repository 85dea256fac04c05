"""`recipe gc` beside live runs: it never removes what a live run made or uses, and still
frees what only dropped run records refer to."""
import json
import time

from conftest import write


def chain(cli, name: str, steps: int, delay: float = 0.0) -> str:
    lines = [f"recipe: {name}", "steps:", "  - id: s0", "    uses: test.squares", f"    with: {{n: 5, delay: {delay}}}"]
    for i in range(1, steps):
        lines += [f"  - id: s{i}", "    uses: test.count", f"    with: {{tag: {name}{i}, delay: {delay}}}",
                  f"    inputs: {{data: '${{steps.s{i - 1}.data}}'}}"]
    return str(write(cli.tmp / f"{name}.yaml", "\n".join(lines) + "\n"))


def entries(cli) -> set[str]:
    return {p.parent.name for p in cli.cache.glob("??/*/entry.json")}


def test_gc_during_a_60_step_run_keeps_every_entry_and_frees_only_dropped_runs(cli):
    cli("run", chain(cli, "old", 2))
    old = {n["key"] for n in cli.last_run()["nodes"]}  # its s0 is everybody's s0, still in use
    cli("run", chain(cli, "recent", 2))
    recent = {n["key"] for n in cli.last_run()["nodes"]}
    recent_run = cli.last_run()["run_id"]

    live = cli.popen("run", chain(cli, "live", 60, delay=0.05))
    while not any("count live" in line for line in cli.trace_lines()) and live.poll() is None:
        time.sleep(0.02)  # its steps compute
    gcs = []
    while live.poll() is None:
        gcs.append(cli("gc", "--keep-last", "1", "--keep", recent_run))  # `old` is dropped
        time.sleep(0.1)
    out, err = live.communicate()
    assert live.returncode == 0, out + err
    assert len(gcs) >= 3, "the run ended before gc could be called a few times"
    assert gcs[0].stdout.startswith("removed 1 entry") and "runs are live" in gcs[0].stdout  # old's s1

    record = cli.last_run()
    assert record["recipe"] == "live" and {n["status"] for n in record["nodes"]} == {"ran"}
    made = {n["key"] for n in record["nodes"]}
    assert len(made) == 60 and made <= entries(cli), "gc removed entries of the live run"
    assert "62 of 62 entries verified" in cli("verify").stdout  # 60 live + the 2 of `recent`
    assert recent <= entries(cli) and not (old - recent) & entries(cli), "the dropped run's entry was not freed"
    assert not list(cli.cache.glob("tmp/gc-*")), "gc left its trash behind"

    cli("run", chain(cli, "live", 60, delay=0.05))  # all cached: nothing was lost
    assert {n["status"] for n in cli.last_run()["nodes"]} == {"cached"}


def test_entries_of_a_killed_run_go_only_once_no_run_is_live(cli):
    import signal

    cli("run", chain(cli, "kept", 2))
    killed = cli.popen("run", chain(cli, "killed", 30, delay=0.1))
    deadline = time.time() + 60
    while len(entries(cli)) < 5 and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    orphans = entries(cli) - {n["key"] for n in cli.last_run()["nodes"]}
    assert orphans, "the killed run made no entry"

    seen = len(cli.trace_lines())
    live = cli.popen("run", chain(cli, "slow", 3, delay=1.0))
    while len(cli.trace_lines()) == seen and live.poll() is None:
        time.sleep(0.02)  # its first step computes
    out = cli("gc").stdout
    assert "runs are live" in out and orphans <= entries(cli), "gc removed record-less entries beside a live run"
    assert live.wait() == 0
    out = cli("gc").stdout
    assert "runs are live" not in out and not orphans & entries(cli)


def test_keep_last_counts_the_runs_made_here_never_a_pulled_record_with_a_future_id(cli, tmp_path):
    other = tmp_path / "other-cache"
    cli("run", chain(cli, "theirs", 2), cache=other)
    theirs = cli.last_run(other)
    future = "29991231-235959999-ffff"  # a remote may name its records anything
    (other / "runs" / f"{theirs['run_id']}.json").write_text(json.dumps({**theirs, "run_id": future}))
    (other / "runs" / f"{theirs['run_id']}.json").rename(other / "runs" / f"{future}.json")
    cli("push", f"file://{tmp_path / 'remote'}", cache=other)

    cli("run", chain(cli, "mine", 2))
    mine = {n["key"] for n in cli.last_run()["nodes"]}
    cli("pull", f"file://{tmp_path / 'remote'}")
    assert cli.last_run()["run_id"] == future and "pulled_from" in cli.last_run()

    out = cli("gc", "--keep-last", "1").stdout
    assert out.startswith("removed 1 entry (") and out.rstrip().endswith("kept 1 run")  # theirs' s1; s0 is shared
    assert mine <= entries(cli), "gc kept the pulled record and dropped the entries of the latest local run"
    assert [p.stem for p in (cli.cache / "runs").glob("*.json")] != [future]
