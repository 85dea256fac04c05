"""The no-op fast path's checks, in process: every part of the command is in the fingerprint,
and a saved plan holds only while the recipe files, the stats of code and data files and
folders, and every entry's stamps are what they were."""
import os
import socket
import sys
from types import SimpleNamespace

import pytest

from engine.cache.records import Entry
from engine.cache.store import Store
from engine.cli import fastpath


def command(tmp_path, **changes) -> SimpleNamespace:
    args = dict(file=str(tmp_path / "r.yaml"), profile=None, sets=[], cache_dir=str(tmp_path / "cache"),
                only=[], force=[], rerun_changed_code=False)
    return SimpleNamespace(**{**args, **changes})


@pytest.mark.parametrize("change", ["file", "profile", "sets", "cwd", "host", "python", "engine", "env"])
def test_every_part_of_the_command_is_in_the_fingerprint(tmp_path, monkeypatch, change):
    monkeypatch.chdir(tmp_path)
    before = fastpath.fingerprint(command(tmp_path))
    args = command(tmp_path)
    if change == "file":
        args.file = str(tmp_path / "other.yaml")
    elif change == "profile":
        args.profile = "tiny"
    elif change == "sets":
        args.sets = ["vars.scale=0.1"]
    elif change == "cwd":
        (tmp_path / "sub").mkdir()
        monkeypatch.chdir(tmp_path / "sub")
    elif change == "host":
        monkeypatch.setattr(socket, "gethostname", lambda: "elsewhere")
    elif change == "python":
        monkeypatch.setattr(sys, "executable", "/opt/other/python")
    elif change == "engine":  # another checkout on the same Python (PYTHONPATH)
        monkeypatch.setattr(fastpath, "ENGINE", tmp_path / "other-checkout" / "engine")
    else:
        monkeypatch.setenv("RECIPE_SHARD_SIZE", "7")
    assert fastpath.fingerprint(args) != before


def test_a_secret_in_the_environment_is_not_part_of_the_fingerprint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = fastpath.fingerprint(command(tmp_path))
    monkeypatch.setenv("RECIPE_HUB_TOKEN", "hf_abcdefghijklmnop")
    assert fastpath.fingerprint(command(tmp_path)) == before


def test_runs_that_ask_for_work_never_take_the_fast_path(tmp_path):
    for change in ({"only": ["a"]}, {"force": ["a"]}, {"rerun_changed_code": True}):
        assert fastpath.noop_run(command(tmp_path, **change)) is None


def test_a_saved_check_holds_until_a_recipe_file_or_a_stat_changes(tmp_path):
    recipe, code, data = tmp_path / "r.yaml", tmp_path / "step.py", tmp_path / "data"
    recipe.write_text("recipe: r\n")
    code.write_text("x = 1\n")
    data.mkdir()
    check = {"format": fastpath.FORMAT, "sources": {str(recipe): fastpath._file_digest(str(recipe))},
             "stats": {str(p): fastpath._stat(str(p)) for p in (code, data)}}
    assert fastpath.unchanged(check)

    recipe.write_text("recipe: s\n")  # same size, other content
    assert not fastpath.unchanged(check)
    recipe.write_text("recipe: r\n")
    assert fastpath.unchanged(check)

    st = os.stat(code)
    os.utime(code, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: the code may differ
    assert not fastpath.unchanged(check)
    os.utime(code, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fastpath.unchanged(check)

    (data / "new.jsonl").write_text("{}\n")  # a new file in a folder may match a step's glob
    assert not fastpath.unchanged(check)
    assert not fastpath.unchanged({**check, "format": fastpath.FORMAT - 1, "stats": {}})


def test_the_entries_must_keep_their_stamps(tmp_path):
    store, key = Store(tmp_path / "cache"), "b" * 64
    staging = store.staging(key)
    (staging / "outputs" / "data" / "part").mkdir(parents=True)
    (staging / "outputs" / "data" / "part" / "x.jsonl").write_text('{"x": 1}\n')
    store.commit(key, staging, Entry(key=key, uses="t.x", version="1", config={}, inputs={}, outputs={}))
    rows = [["a", "a", key, 9, ["data"], ["a note"], *fastpath.entry_seal(f"{store.root}/{key[:2]}/{key}/", ["data"])]]
    assert fastpath.entries_present(store.root, rows)

    out = store.output_path(key, "data") / "part" / "x.jsonl"
    st = os.stat(out)
    out.write_text('{"x": 2}\n')  # same size, new mtime
    assert not fastpath.entries_present(store.root, rows)
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fastpath.entries_present(store.root, rows)

    (out.parent / "y.jsonl").write_text("{}\n")  # a new file changes its folder's stamp
    assert not fastpath.entries_present(store.root, rows)
    (out.parent / "y.jsonl").unlink()
    (store.entry_dir(key) / "entry.json").unlink()
    assert not fastpath.entries_present(store.root, rows)
