"""Reproduce a run from its record; share a cache through push/pull; catch tampering."""
import json

from test_engine_cache import demo


def test_reproduce_on_a_fresh_cache_recomputes_and_matches_digests(cli, tmp_path):
    f = demo(cli)
    cli("run", f, "--set", "vars.sample=4")
    record = cli.cache / "runs" / f"{cli.last_run()['run_id']}.json"
    fresh = tmp_path / "fresh"
    out = cli("reproduce", str(record), cache=fresh)
    assert "6 recomputed" in out.stdout and "6 match the record, 0 differ" in out.stdout
    assert set(cli.statuses(fresh).values()) == {"ran"}


def test_push_then_pull_into_a_fresh_cache_restores_without_running(cli, tmp_path):
    f = demo(cli)
    cli("run", f)
    run_id = cli.last_run()["run_id"]
    remote = tmp_path / "remote"
    assert "pushed 6 entries and 1 run record to" in cli("push", f"file://{remote}").stdout
    fresh = tmp_path / "fresh"
    assert "pulled 6 entries and 1 run record from" in cli("pull", f"file://{remote}", cache=fresh).stdout
    out = cli("reproduce", run_id[:15], cache=fresh)
    assert "6 restored from cache, 0 recomputed" in out.stdout
    assert set(cli.statuses(fresh).values()) == {"cached"}


def tamper(cache):
    entry = next(cache.rglob("entry.json"))
    data = next((entry.parent / "outputs").rglob("*.jsonl"))
    data.write_text(data.read_text().replace("1", "7"))
    return entry.parent.name


def test_verify_reports_a_tampered_entry_and_pull_refuses_it(cli, tmp_path):
    f = demo(cli)
    cli("run", f)
    assert "6 of 6 entries verified" in cli("verify").stdout
    remote = tmp_path / "remote"
    cli("push", f"file://{remote}")
    key = tamper(cli.cache)
    out = cli("verify", check=1).stdout
    assert f"tampered {key[:12]}" in out and "5 of 6 entries verified, 1 tampered" in out

    tamper(remote)
    fresh = tmp_path / "fresh"
    out = cli("pull", f"file://{remote}", cache=fresh, check=1).stdout
    assert "refused 1 tampered entry" in out
    assert len(list(fresh.rglob("entry.json"))) == 5
    assert not list((fresh / "tmp").iterdir())


def test_an_edited_entry_json_is_caught_too(cli):
    f = demo(cli)
    cli("run", f)
    entry = next(cli.cache.rglob("entry.json"))
    data = json.loads(entry.read_text())
    data["config"]["extra"] = 1
    entry.write_text(json.dumps(data))
    assert "does not match its key" in cli("verify", check=1).stdout


def test_gc_keeps_the_last_runs_entries(cli):
    f = demo(cli)
    cli("run", f)
    cli("run", f, "--set", "vars.sample=3")
    out = cli("gc", "--keep-last", "1").stdout
    assert "removed 3 entries" in out  # the old sample[train], sample[test], both
    cli("run", f, "--set", "vars.sample=3")
    assert set(cli.statuses().values()) == {"cached"}
    assert "2 runs" in cli("ls").stdout


def test_a_password_in_the_remote_url_is_never_printed(cli):
    out = cli("push", "ftp://team:hunter2-password@127.0.0.1:1/cache", check=1)
    assert out.stderr.startswith("error: remote ftp://team:***@127.0.0.1:1/cache: ")
    assert "hunter2-password" not in out.stdout + out.stderr and "Traceback" not in out.stderr
def test_reproduce_of_a_run_on_other_hardware_says_so(cli, tmp_path):
    from conftest import write

    f = write(cli.tmp / "noisy.yaml", "recipe: noisy\nsteps:\n  - id: train\n    uses: test.noisy\n")
    cli("run", f.name)
    record = cli.cache / "runs" / f"{cli.last_run()['run_id']}.json"
    out = cli("reproduce", str(record), cache=tmp_path / "same")
    assert "differs (step is not deterministic) train: data" in out.stdout, out.stdout
    data = json.loads(record.read_text())
    data["environment"]["cpu"] = "Another CPU x64"
    record.write_text(json.dumps(data))
    out = cli("reproduce", str(record), cache=tmp_path / "other")
    assert "differs (trained on other hardware) train: data" in out.stdout, out.stdout
    assert "0 differ" in out.stdout  # a non-deterministic step is reported, not failed
