"""A remote crafted to harm the cache that pulls from it (an audit of the team cache): files an
entry.json does not name, a recorded size that reuse would reject, records nested past the
recursion limit, a name no filesystem takes, terminal control sequences in record text, and
credentials in a remote URL. Each is refused, one line per entry, or never printed; the rest of
the remote installs."""
import json
import os
import shutil
import zipfile

from conftest import write
from test_engine_cache import demo
from test_remote_untrusted import pushed, refusals


def test_a_pulled_entry_brings_only_the_files_its_entry_json_names(cli, tmp_path):
    """Extra files in a remote entry's folder were installed unverified (and pushed on from there),
    and a FIFO in a directory remote ended the whole pull."""
    f, remote, keys = pushed(cli, tmp_path)
    key = keys["text"]
    folder = remote / key[:2] / key
    write(folder / "planted.sh", "echo unverified")
    write(folder / "junk" / "big.bin", "x" * 100_000)
    write(folder / "outputs" / "extra" / "data.jsonl", "{}")  # an output entry.json does not name
    os.mkfifo(folder / "outputs" / "data" / "fifo")
    log_folder = keys["load"]
    log = remote / log_folder[:2] / log_folder / "log.txt"
    log.unlink()
    write(log / "x", "a log that is a folder")  # `recipe show` read it as a file
    fresh = tmp_path / "fresh"
    out = cli("pull", f"file://{remote}", cache=fresh)
    assert "pulled 6 entries and 1 run record" in out.stdout and not refusals(out.stdout), out.stdout
    local = fresh / key[:2] / key
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if not p.is_dir()) == [
        "entry.json", "log.txt", "outputs/data/data.jsonl"]
    assert not (fresh / log_folder[:2] / log_folder / "log.txt").exists()
    assert "6 of 6 entries verified" in cli("verify", cache=fresh).stdout
    assert f"entry {log_folder}" in cli("show", log_folder[:12], cache=fresh).stdout


def test_an_entry_whose_recorded_size_is_wrong_is_refused_by_pull_and_verify(cli, tmp_path):
    """Pull and verify checked only the digest; reuse checks the size too, so the pulled entry was
    quarantined and recomputed by the next run. Pull now compares the sizes the remote lists with
    the recorded ones before it fetches an output: it fetches no more than entry.json says."""
    f, remote, keys = pushed(cli, tmp_path)
    key = keys["text"]
    entry_json = remote / key[:2] / key / "entry.json"
    entry = json.loads(entry_json.read_text())
    actual = entry["outputs"]["data"]["size"]
    entry["outputs"]["data"]["size"] = 10**30
    entry_json.write_text(json.dumps(entry))
    url, fresh = f"file://{remote}", tmp_path / "fresh"
    out = cli("pull", url, cache=fresh, check=1)
    assert refusals(out.stdout) == [f"refused {key} from {url}: output data is {actual} bytes on the remote, "
                                    f"{10**30} recorded"]
    assert "pulled 5 entries" in out.stdout

    local = cli.cache / key[:2] / key / "entry.json"
    local.write_text(json.dumps(entry))
    out = cli("verify", check=1)
    assert f"tampered {key[:12]}: output data has {actual} bytes, {10**30} recorded" in out.stdout, out.stdout


def test_records_nested_too_deep_are_refused_one_line_each_and_the_rest_installed(cli, tmp_path):
    """An entry.json nested past Python's recursion limit ended the whole pull with a
    RecursionError naming no entry; a run record nested 960 levels installed, and `recipe
    reproduce` of it ended in a traceback."""
    f, remote, keys = pushed(cli, tmp_path)
    key = keys["text"]
    entry_json = remote / key[:2] / key / "entry.json"
    entry_json.write_text(entry_json.read_text()[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    record_file = next((remote / "runs").glob("*.json"))
    record = json.loads(record_file.read_text())
    record["vars"]["deep"] = "@"
    record_file.write_text(json.dumps(record).replace('"@"', "[" * 960 + "]" * 960))
    url, fresh = f"file://{remote}", tmp_path / "fresh"
    out = cli("pull", url, cache=fresh, check=1)
    assert sorted(refusals(out.stdout)) == [
        f"refused {key} from {url}: entry.json unreadable (maximum recursion depth exceeded while decoding a "
        "JSON array from a unicode string)",
        f"refused runs/{record_file.name} from {url}: run record nests lists or objects more than 100 levels deep"]
    assert "pulled 5 entries and 0 run records" in out.stdout and "Traceback" not in out.stderr
    assert not (fresh / key[:2] / key).exists() and not (fresh / "runs" / record_file.name).exists()
    assert not list((fresh / "tmp").iterdir())


def test_a_name_too_long_for_the_filesystem_is_refused_not_the_whole_pull(cli, tmp_path):
    """A 300-byte component (an object store allows 1,024) ended the pull with 'File name too long'."""
    f, remote, keys = pushed(cli, tmp_path)
    key = keys["both"]
    archive = tmp_path / "team.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in remote.rglob("*"):
            if p.is_file():
                z.write(p, p.relative_to(remote).as_posix())
        z.writestr(f"{key[:2]}/{key}/outputs/data/" + "L" * 300, "x")
    url, fresh = f"zip://::file://{archive}", tmp_path / "fresh"
    out = cli("pull", url, cache=fresh, check=1)
    assert refusals(out.stdout) == [
        f"refused {key} from {url}: name 'outputs/data/{'L' * 106}...' has a component longer than 255 bytes"]
    assert "pulled 5 entries and 1 run record" in out.stdout


def test_text_from_a_pulled_entry_or_record_never_reaches_the_terminal_as_a_control_sequence(cli, tmp_path):
    """A step's notes and host in an entry.json, and a run record's status, profile and steps,
    were printed raw: ESC sequences that recolour, retitle or write the clipboard of a terminal."""
    f, remote, keys = pushed(cli, tmp_path)
    esc = "\x1b]52;c;cHduZWQ=\x07\x1b[31m"
    key = keys["text"]
    entry_json = remote / key[:2] / key / "entry.json"
    entry = json.loads(entry_json.read_text())
    entry_json.write_text(json.dumps(dict(entry, notes=[f"note{esc}"], host=f"host{esc}")))
    record_file = next((remote / "runs").glob("*.json"))
    record = json.loads(record_file.read_text())
    record.update(status=f"ok{esc}", profile=f"p{esc}")
    for node in record["nodes"]:
        node.update(status=f"ran{esc}", uses=f"u{esc}")
    record_file.write_text(json.dumps(record))
    write(remote / "runs" / f"2099{esc}.json", "{}")  # refused by its name, which is printed

    fresh = tmp_path / "fresh"
    out = cli("pull", f"file://{remote}", cache=fresh, check=1).stdout
    out += cli("run", f, cache=fresh).stdout + cli("ls", cache=fresh).stdout
    out += cli("show", record["run_id"], cache=fresh).stdout + cli("show", key[:12], cache=fresh).stdout
    assert "\x1b" not in out and "\x07" not in out
    for shown in ("(note\\x1b]52;c;cHduZWQ=\\x07\\x1b[31m)", "on host\\x1b]52", "status ok\\x1b]52", "u\\x1b]52"):
        assert shown in out, shown


def test_credentials_in_a_remote_url_are_never_printed_and_a_url_without_a_host_is_one_error(cli):
    """A token given as the URL's user name was printed whole, and a URL with a password but no
    host or no valid port ended in a traceback."""
    cli("run", demo(cli))
    token = "ghp_abcdEFGH12345678token"
    for cmd in ("push", "pull"):
        out = cli(cmd, f"https://{token}@127.0.0.1:1/cache", check=1)
        assert token[4:12] not in out.stdout + out.stderr and "https://***@127.0.0.1:1/cache" in out.stderr
        for url in ("s3://user:hunter2pw@", "https://user:hunter2pw@host:notaport/x"):
            out = cli(cmd, url, check=1)
            assert "Traceback" not in out.stderr and "hunter2pw" not in out.stdout + out.stderr, out.stderr
            assert out.stderr.startswith("error: remote "), out.stderr
        out = cli(cmd, f"https://127.0.0.1:1/cache?sv=2024&sig={token}&flag", check=1)  # a signed URL
        assert token[4:12] not in out.stdout + out.stderr
        assert "https://127.0.0.1:1/cache?sv=***&sig=***&flag" in out.stderr, out.stderr


def test_records_whose_times_are_no_time_are_refused_so_ls_and_report_still_work(cli, tmp_path):
    """A pulled run record started at NaN or 1e300 (or an entry that ended then) made every later
    `recipe ls`, and `recipe report` of it, end in a traceback."""
    f, remote, keys = pushed(cli, tmp_path)
    key = keys["text"]
    entry_json = remote / key[:2] / key / "entry.json"
    entry_json.write_text(json.dumps(dict(json.loads(entry_json.read_text()), end=float("nan"))))
    record = json.loads(next((remote / "runs").glob("*.json")).read_text())
    for rid, started in (("20990101-000000000-0001", float("nan")), ("20990101-000000000-0002", 1e300)):
        write(remote / "runs" / f"{rid}.json", json.dumps(dict(record, run_id=rid, started=started)))
    url, fresh = f"file://{remote}", tmp_path / "fresh"
    out = cli("pull", url, cache=fresh, check=1)
    assert sorted(refusals(out.stdout)) == [
        f"refused {key} from {url}: entry.json field 'end' is no time (found nan)",
        f"refused runs/20990101-000000000-0001.json from {url}: run record field 'started' is no time (found nan)",
        f"refused runs/20990101-000000000-0002.json from {url}: run record field 'started' is no time (found 1e+300)"]
    assert "1 run, 5 entries" in cli("ls", cache=fresh).stdout


def test_reproduce_of_a_pulled_record_that_no_longer_fits_is_one_error_naming_run_and_step(cli, tmp_path):
    """A pulled record whose config the step no longer takes, or whose input names no earlier step
    (a typo, a cycle, a number) made `recipe reproduce` a traceback."""
    f, remote, keys = pushed(cli, tmp_path)
    record = json.loads(next((remote / "runs").glob("*.json")).read_text())
    load, text = record["nodes"][0]["label"], record["nodes"][1]["label"]

    def edited(n, node, **change):
        rid = f"20990101-000000000-000{n}"
        data = json.loads(json.dumps(record))
        data["nodes"][node].update(change)
        write(remote / "runs" / f"{rid}.json", json.dumps(dict(data, run_id=rid)))
        return rid

    cases = {edited(1, 0, config={"path": 5}): f"step {load}: its recorded config is no config of",
             edited(2, 1, inputs={"data": "ghost.data"}): f"step {text} reads 'ghost.data', which no earlier step",
             edited(3, 0, inputs={"data": f"{text}.data"}): f"step {load} reads '{text}.data', which no earlier step",
             edited(4, 1, inputs={"data": 5}): f"step {text} reads 5, which no earlier step",
             edited(5, 1, needs=["ghost"]): f"step {text} comes twice, or before a step it needs"}
    fresh = tmp_path / "fresh"
    cli("pull", f"file://{remote}", cache=fresh)
    for rid, why in cases.items():
        out = cli("reproduce", rid, cache=fresh, check=1)
        assert out.stderr.startswith(f"error: run {rid}: {why}") and "Traceback" not in out.stderr, out.stderr


def test_a_pulled_record_whose_id_extends_a_run_id_never_makes_that_id_ambiguous(cli, tmp_path):
    """A record pushed as <a teammate's run id>x made the whole id ambiguous: `recipe show`,
    `reproduce` and `pull --run` of that run failed for whoever pulled it."""
    f, remote, keys = pushed(cli, tmp_path)
    record = json.loads(next((remote / "runs").glob("*.json")).read_text())
    rid = record["run_id"]
    write(remote / "runs" / f"{rid}x.json", json.dumps(dict(record, run_id=f"{rid}x")))
    out = cli("pull", f"file://{remote}", "--run", rid, cache=tmp_path / "selective")
    assert f"pulled 6 entries and 1 run record for run {rid}" in out.stdout
    assert cli("show", rid).stdout.startswith(f"run {rid} ")
    cli("pull", f"file://{remote}")
    assert cli("show", rid).stdout.startswith(f"run {rid} ")
    assert "6 restored from cache" in cli("reproduce", rid).stdout


def test_a_pulled_entry_naming_other_outputs_than_its_step_makes_is_recomputed(cli, tmp_path):
    """Output names are not part of a key: an entry under the right key with its output renamed
    (digests all matching) was served, and every run failed in the next step (AssertionError)."""
    f, remote, keys = pushed(cli, tmp_path)
    key = keys["text"]
    folder = remote / key[:2] / key
    entry = json.loads((folder / "entry.json").read_text())
    entry["outputs"] = {"other": entry["outputs"]["data"]}
    (folder / "entry.json").write_text(json.dumps(entry))
    (folder / "outputs" / "data").rename(folder / "outputs" / "other")
    fresh = tmp_path / "fresh"
    assert "pulled 6 entries" in cli("pull", f"file://{remote}", cache=fresh).stdout  # a consistent entry
    out = cli("run", f, cache=fresh)
    assert "has the outputs ['other'], the step makes ['data']" in out.stdout
    assert cli.statuses(fresh) == {"load": "cached", "text": "ran", "split": "cached", "sample[train]": "cached",
                                   "sample[test]": "cached", "both": "cached"}
    assert (fresh / "quarantine" / key).is_dir()


def test_push_never_writes_through_a_symlink_planted_in_a_directory_remote(cli, tmp_path):
    """Whoever else writes to a shared directory remote could link an entry's log.txt to a file of
    the pusher's, or runs/ to a folder of theirs: push overwrote and wrote there."""
    f = demo(cli)
    cli("run", f)
    key = next(cli.cache.rglob("entry.json")).parent.name
    remote = tmp_path / "remote"
    victim, victims = write(tmp_path / "victim.txt", "precious"), tmp_path / "victims"
    victims.mkdir()
    (remote / key[:2] / key).mkdir(parents=True)
    (remote / key[:2] / key / "log.txt").symlink_to(victim)
    (remote / "runs").symlink_to(victims)
    url = f"file://{remote}"
    out = cli("push", url, check=1)
    rid = cli.last_run()["run_id"]
    assert sorted(refusals(out.stdout)) == [
        f"refused {key} to {url}: '{key[:2]}/{key}/log.txt' is a symlink there: nothing is written through it",
        f"refused runs/{rid}.json to {url}: 'runs' is a symlink there: nothing is written through it"]
    assert "pushed 5 entries and 0 run records" in out.stdout
    assert victim.read_text() == "precious" and not list(victims.iterdir())


def swap_at_the_check(monkeypatch, swap):
    """The check that no remote name passes a symlink runs `swap` (what whoever else writes to the
    remote does) at its first call, then reports every name clean: the swap lands after the check,
    before the transfer, every time."""
    from engine.cache import remote as remote_module

    swapped = []

    def check(base, rel):
        if not swapped:
            swapped.append(swap())
        return None

    monkeypatch.setattr(remote_module, "symlink_in", check)
    return swapped


def test_push_never_writes_through_a_symlink_swapped_in_after_its_check(cli, tmp_path, monkeypatch, capsys):
    """fsspec follows symlinks: a folder or file of a directory remote swapped for one between the
    check and the write had push create folders, and overwrite files, outside the remote."""
    from engine.cli.main import main

    f = demo(cli)
    cli("run", f)
    linked, folder = sorted(e.parent.name for e in cli.cache.rglob("entry.json"))[:2]
    remote, victim, victims = tmp_path / "remote", write(tmp_path / "victim.txt", "precious"), tmp_path / "victims"
    for path in (remote / "runs", remote / linked[:2] / linked, victims / "runs", victims / "entry"):
        path.mkdir(parents=True)

    def swap():
        (remote / "runs").rmdir()
        (remote / "runs").symlink_to(victims / "runs")
        (remote / linked[:2] / linked / "log.txt").symlink_to(victim)
        (remote / folder[:2]).mkdir(exist_ok=True)
        (remote / folder[:2] / folder).symlink_to(victims / "entry")

    swapped = swap_at_the_check(monkeypatch, swap)
    url = f"file://{remote}"
    assert main(["push", url, "--cache-dir", str(cli.cache)]) == 1 and swapped
    out = capsys.readouterr().out
    there = "is a symlink there: nothing is written through it"
    assert sorted(refusals(out)) == sorted([
        f"refused {linked} to {url}: '{linked[:2]}/{linked}/log.txt' {there}",
        f"refused {folder} to {url}: '{folder[:2]}/{folder}' {there}",
        f"refused runs/{cli.last_run()['run_id']}.json to {url}: 'runs' {there}"]), out
    assert "pushed 4 entries and 0 run records" in out
    assert victim.read_text() == "precious" and not [*(victims / "runs").iterdir(), *(victims / "entry").iterdir()]
    assert not (remote / linked[:2] / linked / "entry.json").exists() and len(list(remote.rglob("entry.json"))) == 4


def test_pull_never_reads_through_a_symlink_or_a_fifo_swapped_in_after_its_check(cli, tmp_path, monkeypatch, capsys):
    """fsspec follows symlinks: a remote file swapped for a link to a file of the puller's between
    the check and the read was installed as an entry's log or a run record, and a FIFO ended the
    whole pull (a read of it would wait for a writer forever)."""
    import threading

    from engine.cli.main import main

    f, remote, keys = pushed(cli, tmp_path)
    linked, piped = keys["text"], keys["load"]
    log = remote / linked[:2] / linked / "log.txt"
    data = next(p for p in (remote / piped[:2] / piped / "outputs").rglob("*") if p.is_file())
    record = next((remote / "runs").glob("*.json"))
    secret, outside = write(tmp_path / "secret.txt", "the puller's secret"), tmp_path / "outside.json"
    outside.write_bytes(record.read_bytes())

    def swap():
        for path, target in ((log, secret), (record, outside)):
            path.unlink()
            path.symlink_to(target)
        data.unlink()
        os.mkfifo(data)

    swapped = swap_at_the_check(monkeypatch, swap)
    url, fresh, code = f"file://{remote}", tmp_path / "fresh", []
    pull = threading.Thread(target=lambda: code.append(main(["pull", url, "--cache-dir", str(fresh)])), daemon=True)
    pull.start()
    pull.join(60)
    hung = pull.is_alive()
    if hung:  # a writer's open and close ends the read that waits, so this process ends
        os.close(os.open(data, os.O_WRONLY | os.O_NONBLOCK))
    assert not hung and code == [1] and swapped
    out = capsys.readouterr().out
    assert sorted(refusals(out)) == sorted([
        f"refused {linked} from {url}: '{linked[:2]}/{linked}/log.txt' is a symlink there: nothing is read through it",
        f"refused {piped} from {url}: '{data.relative_to(remote).as_posix()}' is no regular file there: "
        "nothing is read from it",
        f"refused runs/{record.name} from {url}: 'runs/{record.name}' is a symlink there: nothing is read through it"])
    assert "pulled 4 entries and 0 run records" in out
    assert not (fresh / linked[:2] / linked).exists() and not (fresh / piped[:2] / piped).exists()
    assert not (fresh / "runs" / record.name).exists() and not list((fresh / "tmp").iterdir())
    assert not any(b"secret" in p.read_bytes() for p in fresh.rglob("*") if p.is_file())


def test_printable_escapes_terminal_controls_and_bidi_but_keeps_tabs_newlines_and_other_text():
    from engine.cache.names import printable

    assert printable("a\x1b[31mb\x07\r\x9b\u202eevil\u2066\tx\ny é∑") == \
        "a\\x1b[31mb\\x07\\r\\x9b\\u202eevil\\u2066\tx\ny é∑"


def test_a_gc_during_a_push_removes_none_of_the_entries_it_pushes(cli, tmp_path, monkeypatch, capsys):
    """push held the cache but kept no key, so a gc while it uploaded removed entries of dropped
    runs from under it and the push failed (FileNotFoundError). The gc runs, as a real process,
    from a hook at the start of the upload: the one point a timing could not hit every time."""
    import subprocess

    from engine.cache import remote as remote_module
    from engine.cli.main import main

    f = demo(cli)
    cli("run", f)
    cli("run", f, "--set", "vars.sample=3")  # the first run's sample and both entries: only it names them
    upload = remote_module.Remote.upload
    gc = []

    def gc_then_upload(self, first, then):
        gc.append(subprocess.run(cli.args("gc", "--keep-last", "1"), env=cli.env, capture_output=True, text=True))
        upload(self, first, then)

    monkeypatch.setattr(remote_module.Remote, "upload", gc_then_upload)
    remote = tmp_path / "remote"
    assert main(["push", f"file://{remote}", "--cache-dir", str(cli.cache)]) == 0
    assert "pushed 9 entries and 2 run records" in capsys.readouterr().out
    assert "removed 0 entries" in gc[0].stdout and "spared 3 entries" in gc[0].stdout, gc[0].stdout
    assert len(list(remote.rglob("entry.json"))) == 9


def test_an_entry_a_gc_removes_while_verify_reads_is_not_called_tampered(cli, monkeypatch, capsys):
    """verify holds nothing: an entry a gc removed between the listing and its check was reported
    tampered ("entry.json unreadable"). The gc runs, as a real process, from a hook before the first check."""
    import subprocess

    from engine.cache import remote as remote_module
    from engine.cli.main import main

    f = demo(cli)
    cli("run", f)
    cli("run", f, "--set", "vars.sample=3")
    verify, gc = remote_module.verify_entry, []

    def gc_then_verify(folder, files=None):
        if not gc:
            gc.append(subprocess.run(cli.args("gc", "--keep-last", "1"), env=cli.env, capture_output=True, text=True))
        return verify(folder, files)

    monkeypatch.setattr(remote_module, "verify_entry", gc_then_verify)
    assert main(["verify", "--cache-dir", str(cli.cache)]) == 0
    assert "removed 3 entries" in gc[0].stdout, gc[0].stdout
    assert "6 of 6 entries verified" in capsys.readouterr().out


def test_a_pull_never_discards_a_commit_in_flight_of_the_same_key(cli, tmp_path):
    """A key's folder without entry.json is a commit between place and seal (its run holds the
    key's lock) or one cut short. Pull, holding no lock, took it for the latter and discarded the
    outputs a live run had just placed. Here the test process is that run: it holds the lock."""
    import shutil
    import time

    from engine.cache.store import Store

    f, remote, keys = pushed(cli, tmp_path)
    key, fresh = keys["text"], tmp_path / "fresh"
    placed = fresh / key[:2] / key
    with Store(fresh).lock(key):
        shutil.copytree(remote / key[:2] / key, placed, ignore=shutil.ignore_patterns("entry.json"))
        write(placed / "placed-by-the-run", "")
        pull = cli.popen("pull", f"file://{remote}", cache=fresh)
        staged = f"tmp/{key[:16]}-*/{key}/outputs/data/data.jsonl"
        deadline = time.monotonic() + 30
        while pull.poll() is None and not list(fresh.glob(staged)) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # staged: verifying and placing take milliseconds
        assert (placed / "placed-by-the-run").exists() and pull.poll() is None, "the pull went on"
        shutil.copy(remote / key[:2] / key / "entry.json", placed / "entry.json")  # the run's seal
    out, err = pull.communicate(timeout=60)
    assert pull.returncode == 0 and "pulled 6 entries" in out, out + err
    assert (placed / "placed-by-the-run").exists()


def test_records_holding_a_lone_surrogate_are_refused_so_no_output_fails_to_encode_them(cli, tmp_path):
    """JSON may escape a lone surrogate ("\\udcff"); in a pulled entry's notes or a record's status
    it made `recipe ls`, `show` and `report` end in UnicodeEncodeError."""
    f, remote, keys = pushed(cli, tmp_path)
    key = keys["text"]
    entry_json = remote / key[:2] / key / "entry.json"
    entry_json.write_text(json.dumps(dict(json.loads(entry_json.read_text()), notes=["bad\udcffnote"])))
    record_file = next((remote / "runs").glob("*.json"))
    record_file.write_text(json.dumps(dict(json.loads(record_file.read_text()), status="ok\ud800")))
    url, fresh = f"file://{remote}", tmp_path / "fresh"
    out = cli("pull", url, cache=fresh, check=1)
    assert [line.split(": ", 1)[0] for line in sorted(refusals(out.stdout))] == [
        f"refused {key} from {url}", f"refused runs/{record_file.name} from {url}"]
    assert "surrogates not allowed" in out.stdout and "Traceback" not in out.stderr
    cli("run", f, cache=fresh)
    assert "1 run, 6 entries" in cli("ls", cache=fresh).stdout


def test_a_log_or_record_too_big_to_read_whole_is_refused_before_it_is_fetched(cli, tmp_path):
    """Outputs are bounded by what entry.json records; a log and a run record are read whole, and a
    remote's 300 MB ones (sparse files here) were fetched, and the log installed."""
    f, remote, keys = pushed(cli, tmp_path)
    key = keys["text"]
    with open(remote / key[:2] / key / "log.txt", "r+b") as log:
        log.truncate(300 << 20)
    big = remote / "runs" / "20990101-000000000-0001.json"
    with open(big, "wb") as record:
        record.truncate(300 << 20)
    url, fresh = f"file://{remote}", tmp_path / "fresh"
    out = cli("pull", url, cache=fresh, check=1)
    too_big = f"is {300 << 20} bytes on the remote, over the 256 MiB it may be"
    assert sorted(refusals(out.stdout)) == [f"refused {key} from {url}: name 'log.txt' {too_big}",
                                            f"refused runs/{big.name} from {url}: run record {too_big}"]
    assert "pulled 5 entries and 1 run record" in out.stdout


def name_outputs(remote, key, n):
    """The remote's entry.json of `key` names `n` more outputs, o0 to o<n-1>, that the remote lacks."""
    entry_json = remote / key[:2] / key / "entry.json"
    entry = json.loads(entry_json.read_text())
    entry["outputs"].update({f"o{i}": {"digest": "0" * 64, "size": 0} for i in range(n)})
    entry_json.write_text(json.dumps(entry))


def test_an_entry_of_more_files_than_one_entry_may_have_is_refused_before_any_is_fetched(cli, tmp_path):
    """A remote entry's file count had no bound: 100,001 files under an output were each fetched
    (then refused by digest), and an entry.json naming 100,001 outputs was refused with one
    "output ... is missing" per output, all on one line."""
    f, remote, keys = pushed(cli, tmp_path)
    many, named = keys["text"], keys["load"]
    folder = remote / many[:2] / many / "outputs" / "data"
    for i in range(100_000):  # empty: the output's listed size stays what entry.json records
        (folder / f"{i}").touch()
    name_outputs(remote, named, 100_000)
    url, fresh = f"file://{remote}", tmp_path / "fresh"
    out = cli("pull", url, cache=fresh, check=1)
    assert sorted(refusals(out.stdout)) == sorted([
        f"refused {many} from {url}: its outputs are 100,001 files on the remote, over the limit of 100,000 files "
        "for one entry (MAX_ENTRY_FILES)",
        f"refused {named} from {url}: entry.json names 100,001 outputs, over the limit of 100,000 files for one "
        "entry (MAX_ENTRY_FILES)"]), out.stdout[:2000]
    assert "pulled 4 entries and 1 run record" in out.stdout
    assert not (fresh / many[:2] / many).exists() and not (fresh / named[:2] / named).exists()


def test_an_entry_missing_many_outputs_is_one_short_refusal_line(cli, tmp_path):
    f, remote, keys = pushed(cli, tmp_path)
    key = keys["load"]
    name_outputs(remote, key, 5)
    url, fresh = f"file://{remote}", tmp_path / "fresh"
    out = cli("pull", url, cache=fresh, check=1)
    assert refusals(out.stdout) == [f"refused {key} from {url}: output o0 is missing; output o1 is missing; output o2 "
                                    "is missing (and 2 more problems)"]  # was one "output ... is missing" per output


def test_a_file_planted_where_a_folder_goes_or_a_folder_where_a_file_goes_refuses_that_entry(cli, tmp_path):
    """Push ended at the first one (`NotADirectoryError: 'outputs'`, `IsADirectoryError: '.push-…' ->
    'entry.json'`, exit 1 and the rest unpushed); no temporary file stays behind."""
    f, remote, keys = pushed(cli, tmp_path)
    planted_file, planted_folder = keys["text"], keys["load"]
    shutil.rmtree(remote / planted_file[:2] / planted_file)
    write(remote / planted_file[:2] / planted_file / "outputs", "a file, not a folder")
    shutil.rmtree(remote / planted_folder[:2] / planted_folder)
    write(remote / planted_folder[:2] / planted_folder / "entry.json" / "x", "a folder, not a file")
    for other in set(keys.values()) - {planted_file, planted_folder}:
        shutil.rmtree(remote / other[:2] / other)
    url = f"file://{remote}"
    out = cli("push", url, check=1)
    assert sorted(refusals(out.stdout)) == sorted([
        f"refused {planted_file} to {url}: '{planted_file[:2]}/{planted_file}/outputs' is no folder there: "
        "nothing is written through it",
        f"refused {planted_folder} to {url}: '{planted_folder[:2]}/{planted_folder}/entry.json' is a folder "
        "there: nothing is written over it"])
    assert f"pushed {len(keys) - 2} entries" in out.stdout
    assert not list(remote.rglob(".push-*"))
