"""A remote is untrusted input (issue 19): names that would leave their entry, symlinks, and
malformed entries or run records are refused on pull, one line each, and nothing is written,
replaced or removed outside the cache and artifacts dirs: not by pull, nor by a later run,
nor by `recipe report`. A pulled run record never passes for a local run."""
import json
import os
import shutil
import zipfile

import pytest
from conftest import write
from test_engine_cache import demo
from test_report import needs_dot

from engine.cache.digest import tree_digest


def pushed(cli, tmp_path):
    """The demo, run and pushed to a directory remote; its entry keys by step label."""
    f = demo(cli)
    cli("run", f)
    remote = tmp_path / "remote"
    cli("push", f"file://{remote}")
    keys = {json.loads(e.read_text())["label"]: e.parent.name for e in remote.rglob("entry.json")}
    return f, remote, keys


def outside(root, *inside):
    """Every path under `root` but the `inside` folders: its kind, and a file's bytes."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):  # never follows a link
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in map(str, inside)]
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            seen[os.path.relpath(p, root)] = ("link", os.readlink(p)) if os.path.islink(p) else \
                ("dir",) if os.path.isdir(p) else ("file", open(p, "rb").read())
    return seen


def refusals(stdout):
    return [line for line in stdout.splitlines() if line.startswith("refused ")]


@pytest.mark.parametrize("name, why", [
    ("outputs/data/data.jsonl", None), ("a.b/..c/d..", None),
    ("../x", "has a '..' component"), ("outputs/../../x", "has a '..' component"), ("/tmp/x", "is absolute"),
    ("outputs//x", "has an empty component"), ("outputs/", "has an empty component"), ("", "is empty"),
    ("./x", "has a '.' component"), ("outputs\\x", "has a backslash"), ("x\0y", "has a control character"),
    ("x\ny", "has a control character"), (None, "is not a string"), ("a/" + "x" * 255, None),
    ("a/" + "x" * 256, "has a component longer than 255 bytes"), ("é" * 128, "has a component longer than 255 bytes")])
def test_the_one_rule_for_names_from_outside(name, why):
    from engine.cache.names import path_problem

    assert path_problem(name) == why


@pytest.mark.parametrize("prefix", ["team/", ""])
def test_a_zip_remote_naming_paths_outside_an_entry_is_refused_and_nothing_is_written_there(cli, tmp_path, prefix):
    f, remote, keys = pushed(cli, tmp_path)
    archive = tmp_path / "team.zip"
    dots, absolute = keys["both"], keys["sample[test]"]
    with zipfile.ZipFile(archive, "w") as z:
        for p in remote.rglob("*"):
            if p.is_file():
                z.write(p, f"{prefix}{p.relative_to(remote).as_posix()}")
        # staged as fresh/tmp/<folder>/<key>/<name>: four levels up is tmp_path
        z.writestr(f"{prefix}{dots[:2]}/{dots}/" + "../" * 4 + "escaped-dots", "x")
        z.writestr(f"{prefix}{absolute[:2]}/{absolute}/{tmp_path / 'escaped-abs'}", "x")  # KEY//tmp/...
    url = f"zip://{prefix.rstrip('/')}::file://{archive}"
    fresh = tmp_path / "fresh"
    out = cli("pull", url, cache=fresh, check=1)
    assert sorted(refusals(out.stdout)) == sorted([
        f"refused {dots} from {url}: name '{'../' * 4}escaped-dots' has a '..' component",
        f"refused {absolute} from {url}: name '{tmp_path / 'escaped-abs'}' is absolute"]), out.stdout
    assert "pulled 4 entries and 1 run record from" in out.stdout and "refused 2 tampered entries" in out.stdout
    assert not (tmp_path / "escaped-dots").exists() and not (tmp_path / "escaped-abs").exists()
    installed = {e.parent.name for e in fresh.rglob("entry.json")}
    assert len(installed) == 4 and not installed & {dots, absolute}
    assert not list((fresh / "tmp").iterdir())


def test_a_directory_remote_with_a_backslash_name_or_a_symlink_is_refused(cli, tmp_path):
    f, remote, keys = pushed(cli, tmp_path)
    slashed, linked = keys["both"], keys["load"]
    write(remote / slashed[:2] / slashed / "outputs\\..\\..\\x", "x")
    data = remote / linked[:2] / linked / "outputs" / "data" / "data.jsonl"
    mine = write(tmp_path / "mine.jsonl", data.read_text())  # same bytes: the digest would match
    data.unlink()
    data.symlink_to(mine)
    url = f"file://{remote}"
    out = cli("pull", url, cache=tmp_path / "fresh", check=1)
    assert sorted(refusals(out.stdout)) == sorted([
        f"refused {slashed} from {url}: name 'outputs\\\\..\\\\..\\\\x' has a backslash",
        f"refused {linked} from {url}: name 'outputs/data/data.jsonl' resolves through a symlink"]), out.stdout
    installed = {e.parent.name for e in (tmp_path / "fresh").rglob("entry.json")}
    assert len(installed) == 4 and not installed & {slashed, linked}


def test_a_pulled_entry_naming_outputs_outside_is_refused_and_no_later_run_touches_them(cli, tmp_path):
    """Issue 19 finding 2: outputs named /abs/folder and ../../file (digests matching) were
    accepted by pull and verify, and the next run removed them while linking artifacts."""
    f, remote, keys = pushed(cli, tmp_path)
    # one name for two places: verified at fresh/tmp/<folder>/<key>/outputs/<name> and linked at
    # artifacts/demo/both/<name>, both five levels below tmp_path
    fresh, cli.artifacts = tmp_path / "fresh", tmp_path / "a" / "b" / "artifacts"
    victim_dir = write(tmp_path / "victim_dir" / "keep.txt", "mine").parent
    victim_file = write(tmp_path / "victim_file", "mine too")
    key = keys["both"]
    entry_json = remote / key[:2] / key / "entry.json"
    entry = json.loads(entry_json.read_text())
    entry["outputs"][str(victim_dir)] = {"digest": tree_digest(victim_dir), "size": 4, "type": "Dataset"}
    entry["outputs"]["../" * 5 + "victim_file"] = {"digest": tree_digest(victim_file), "size": 8, "type": "Dataset"}
    entry_json.write_text(json.dumps(entry))
    for folder in (fresh, cli.artifacts):
        folder.mkdir(parents=True)
    before = outside(tmp_path, cli.cache, fresh, cli.artifacts)

    url = f"file://{remote}"
    out = cli("pull", url, cache=fresh, check=None)
    cli("run", f, cache=fresh)
    assert outside(tmp_path, cli.cache, fresh, cli.artifacts) == before
    assert out.returncode == 1 and refusals(out.stdout) == [
        f"refused {key} from {url}: output name '{victim_dir}' is absolute"], out.stdout
    assert "pulled 5 entries" in out.stdout and cli.statuses(fresh)["both"] == "ran"

    # the same entry.json put straight into a cache: verify refuses it, and a run that is not
    # the fast path (an override) reads its names but still writes nothing outside
    shutil.copy(entry_json, fresh / key[:2] / key / "entry.json")
    out = cli("verify", cache=fresh, check=1)
    assert f"tampered {key[:12]}: output name '{victim_dir}' is absolute" in out.stdout
    out = cli("run", f, "--set", "vars.sample=5", cache=fresh, check=None)
    assert "Traceback" not in out.stderr
    assert outside(tmp_path, cli.cache, fresh, cli.artifacts) == before


def test_verify_refuses_an_output_that_is_a_symlink_out_of_its_entry(cli, tmp_path):
    f = demo(cli)
    cli("run", f)
    data = next(cli.cache.rglob("data.jsonl"))
    key = data.relative_to(cli.cache).parts[1]
    mine = write(tmp_path / "mine.jsonl", data.read_text())  # same bytes: the digest matches
    data.unlink()
    data.symlink_to(mine)
    out = cli("verify", check=1)
    rel = data.relative_to(cli.cache / key[:2] / key)
    assert f"tampered {key[:12]}: '{rel}' is a symlink to outside the entry" in out.stdout, out.stdout


def test_malformed_run_records_are_refused_on_pull_and_the_rest_installed(cli, tmp_path):
    f, remote, keys = pushed(cli, tmp_path)
    record = json.loads(next((remote / "runs").glob("*.json")).read_text())
    node_key = json.loads(json.dumps(record))
    node_key["nodes"][1]["key"] = "../../../etc/passwd"
    bad = {"20990101-000000000-0001": (dict(record, recipe="../../outside"),
                                       "recipe name '../../outside' has a '..' component"),
           "20990101-000000000-0002": (dict(record, nodes="not a list"), "run record field 'nodes' is not a list"),
           "20990101-000000000-0003": (node_key, "node 1 ('text') key '../../../etc/passwd' is not a key"),
           "20990101-000000000-0004": (dict(record, status=None), "run record field 'status' is not str (found None)")}
    for rid, (data, _) in bad.items():
        write(remote / "runs" / f"{rid}.json", json.dumps(dict(data, run_id=rid)))
    write(remote / "runs" / "20990101-000000000-0005.json", json.dumps(dict(record, run_id="someone-else")))
    write(remote / "runs" / "20990101-000000000-0006.json", json.dumps(dict(record, run_id="20990101-000000000-0006")))
    url = f"file://{remote}"
    fresh = tmp_path / "fresh"
    out = cli("pull", url, cache=fresh, check=1)
    expected = [f"refused runs/{rid}.json from {url}: {why}" for rid, (_, why) in bad.items()]
    expected.append(f"refused runs/20990101-000000000-0005.json from {url}: run record 20990101-000000000-0005 "
                    f"holds run id 'someone-else'")
    assert sorted(refusals(out.stdout)) == sorted(expected), out.stdout
    assert "pulled 6 entries and 2 run records" in out.stdout and "refused 5 run records" in out.stdout
    assert sorted(p.stem for p in (fresh / "runs").glob("*.json")) == [record["run_id"], "20990101-000000000-0006"]


@needs_dot
def test_a_pulled_run_record_never_becomes_the_default_of_report(cli, tmp_path):
    """Issue 19 finding 9: a pulled record with a future run id was what plain `recipe report` picked."""
    f, remote, keys = pushed(cli, tmp_path)
    local = cli.last_run()["run_id"]
    future = "29991231-235959999-ffff"
    write(remote / "runs" / f"{future}.json", json.dumps(dict(cli.last_run(), run_id=future)))
    assert "pulled 0 entries and 1 run record from" in cli("pull", f"file://{remote}").stdout
    assert json.loads((cli.cache / "runs" / f"{future}.json").read_text())["pulled_from"] == f"file://{remote}"
    assert cli("report").stdout.strip() == f"wrote {cli.artifacts / 'demo' / f'report-{local}.html'}"
    assert cli("report", future[:8]).stdout.strip() == f"wrote {cli.artifacts / 'demo' / f'report-{future}.html'}"
    before = set((cli.cache / "runs").glob("*.json"))
    cli("run", f, "--set", "vars.sample=3")  # a newer local run is the default now
    (newer,) = set((cli.cache / "runs").glob("*.json")) - before
    assert cli("report").stdout.strip().endswith(f"report-{newer.stem}.html")


def test_report_never_writes_where_a_record_names(cli, tmp_path):
    f = demo(cli)
    cli("run", f)
    cli.artifacts = tmp_path / "a" / "artifacts"
    rid = "20990101-000000000-0009"
    write(cli.cache / "runs" / f"{rid}.json", json.dumps(dict(cli.last_run(), run_id=rid, recipe="../../escaped")))
    p = cli("report", rid, check=1)
    assert p.stderr == f"error: run {rid}: recipe name '../../escaped' has a '..' component\n"
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.rglob("report-*"))


def test_push_refuses_local_entries_that_are_no_entry_of_their_key_and_pushes_the_rest(cli, tmp_path):
    f = demo(cli)
    cli("run", f)
    keys = {n["label"]: n["key"] for n in cli.last_run()["nodes"]}
    edited = cli.cache / keys["text"][:2] / keys["text"] / "entry.json"
    edited.write_text(edited.read_text().replace('"version": "', '"version": "9', 1))  # outputs claimed by another
    linked = cli.cache / keys["split"][:2] / keys["split"] / "outputs" / "train"
    shutil.rmtree(linked)
    linked.symlink_to(write(tmp_path / "elsewhere" / "data.jsonl", "{}\n").parent)  # an output leading out
    url = f"file://{tmp_path / 'remote'}"
    out = cli("push", url, check=1)
    assert sorted(refusals(out.stdout)) == sorted([
        f"refused {keys['text']} to {url}: entry.json does not match its key (config, inputs or version edited)",
        f"refused {keys['split']} to {url}: 'outputs/train' is a symlink to outside the entry"]), out.stdout
    assert "pushed 4 entries and 1 run record " in out.stdout and "refused 2 (each named above)" in out.stdout
    pushed_keys = {p.parent.name for p in (tmp_path / "remote").rglob("entry.json")}
    assert pushed_keys == set(keys.values()) - {keys["text"], keys["split"]}
    assert not (tmp_path / "remote" / keys["split"][:2] / keys["split"]).exists()


def test_pull_remembers_the_digests_it_verified_so_the_first_reuse_reads_nothing(cli, tmp_path):
    from engine.cache.digest import StatCache, file_digest
    from engine.cache.remote import pull
    from engine.cache.store import Store

    f, remote, keys = pushed(cli, tmp_path)
    store = Store(tmp_path / "fresh")
    assert pull(store, f"file://{remote}")[:2] == (6, 1)
    store.close()
    stats = StatCache(store.root / "index" / "stat").db
    for key in keys.values():
        for path in (store.entry_dir(key) / "outputs").rglob("*"):
            if path.is_file():
                st = path.stat()
                assert stats.get((str(path), st.st_size, st.st_mtime_ns, st.st_ino)) == file_digest(path), path
