"""Correct across processes and nodes: a commit that finds the key already committed is a
success; a lease file (for network filesystems, where flock does not hold) excludes other
drivers while its holder lives and expires when its holder died."""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import write

from engine.cache.lease import Lease, read_lease
from engine.cache.records import Entry
from engine.cache.store import Store


def staged(store: Store, text: str):
    staging = store.staging("k" * 64)
    (staging / "outputs" / "data").mkdir(parents=True)
    (staging / "outputs" / "data" / "x.txt").write_text(text)
    return staging


def entry(key: str, who: str) -> Entry:
    return Entry(key=key, uses="t.x", version="1", config={}, inputs={}, outputs={}, extra={"who": who})


def test_a_commit_that_finds_the_key_already_committed_is_a_success(tmp_path):
    store = Store(tmp_path / "cache")
    key = "k" * 64
    store.commit(key, staged(store, "first"), entry(key, "first"))
    second = staged(store, "second")
    store.commit(key, second, entry(key, "second"))  # the rename meets ENOTEMPTY
    assert store.read_entry(key)["who"] == "first"
    assert not second.exists() and not list((store.root / "tmp").iterdir())


def test_a_lease_of_a_dead_holder_on_another_node_expires(tmp_path):
    path = tmp_path / "locks" / "key.lease"
    path.parent.mkdir()
    expires = time.time() + 1.0
    path.write_text(json.dumps({"host": "node-b", "pid": 1, "token": "theirs", "expires": expires}))
    with Lease(path, poll=0.05) as lease:
        assert time.time() >= expires, "a live lease of another node was broken"
        assert read_lease(path)["token"] == lease.token
    assert not path.exists()


def test_a_lease_whose_holder_on_this_host_died_is_taken_at_once(tmp_path):
    path = tmp_path / "key.lease"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "token": "x",
                                "expires": time.time() + 3600}))
    with Lease(path, poll=0.05) as lease:
        assert read_lease(path)["token"] == lease.token


@pytest.mark.parametrize("text", ["", "[1]", '{"expires": "never", "host": "node-b"}'])
def test_a_lease_left_empty_or_not_a_lease_is_stale_once_older_than_a_lease_lives(tmp_path, text):
    """A holder that died between creating its lease and writing it left an empty file that every
    later driver waited on forever; a lease that was no JSON object failed the step."""
    path = tmp_path / "key.lease"
    path.write_text(text)
    old = time.time() - 2.0
    os.utime(path, (old, old))
    taken = threading.Event()

    def take():
        with Lease(path, ttl=1.0, poll=0.05):
            taken.set()

    threading.Thread(target=take, daemon=True).start()
    assert taken.wait(5), "the lease was never taken"


def test_a_live_lease_is_renewed_and_excludes_others_until_released(tmp_path):
    path = tmp_path / "key.lease"
    events = []
    holder = Lease(path, ttl=0.3, poll=0.05)
    holder.__enter__()

    def other():
        with Lease(path, ttl=0.3, poll=0.05):
            events.append("other acquired")

    t = threading.Thread(target=other)
    t.start()
    time.sleep(1.0)  # three lifetimes of an unrenewed lease
    events.append("holder releases")
    holder.__exit__(None, None, None)
    t.join(10)
    assert events == ["holder releases", "other acquired"]


def test_two_drivers_with_lease_locks_compute_each_key_once(cli):
    cli.env["RECIPE_LOCK"] = "lease"
    f = write(cli.tmp / "two.yaml", """recipe: two
steps:
  - {id: squares, uses: test.squares, with: {n: 10, shard_size: 5, delay: 0.05}}
  - {id: copy, uses: test.count, with: {tag: copy, delay: 1.0}, inputs: {data: "${steps.squares.data}"}}
""")
    a, b = cli.popen("run", str(f)), cli.popen("run", str(f))
    assert a.wait() == 0 and b.wait() == 0
    assert sum(" count copy" in line for line in cli.trace_lines()) == 1
    assert list((cli.cache / "locks").glob("*.lease")) == []


def test_a_key_lock_excludes_the_same_key_in_another_thread_but_not_another_key(tmp_path):
    store, events = Store(tmp_path / "cache"), []

    def take(key: str, tag: str) -> None:
        with store.lock(key):
            events.append(tag)

    with store.lock("a" * 64):
        same = threading.Thread(target=take, args=("a" * 64, "same key"))
        other = threading.Thread(target=take, args=("b" * 64, "other key"))
        same.start(), other.start()
        other.join(10)
        time.sleep(0.3)
        events.append("released")
    same.join(10)
    assert events == ["other key", "released", "same key"]
    files = sorted(p.name for p in (store.root / "locks").iterdir())
    assert files in (["keys.lock"], ["a" * 64 + ".lock", "b" * 64 + ".lock"])  # byte locks, or a file per key


def test_a_commit_cut_short_before_its_seal_is_no_entry_and_the_next_commit_replaces_it(cli):
    store, key = Store(cli.cache), "c" * 64
    assert store.place(key, staged(store, "cut short"), replace=False)  # the process died here
    assert not store.has(key) and store.find(key[:12]) is None
    assert list(store.unsealed()) == [store.entry_dir(key)]
    store.commit(key, staged(store, "whole"), entry(key, "whole"))
    assert store.read_entry(key)["who"] == "whole"
    assert (store.output_path(key, "data") / "x.txt").read_text() == "whole"
    assert list(store.unsealed()) == [] and not list((store.root / "tmp").iterdir())

    other = "d" * 64
    store.place(other, staged(store, "cut short"))
    assert "removed 1 entry " in cli("gc").stdout  # `key`, in no run; `other` was never an entry
    assert not store.entry_dir(other).exists() and not store.entry_dir(key).exists()


def chain_of_two(tmp_path, monkeypatch):
    from engine.recipe.plan import plan_file

    monkeypatch.chdir(tmp_path)
    write(tmp_path / "rows.jsonl", "".join(f'{{"x": {i}}}\n' for i in range(5)))
    f = write(tmp_path / "two.yaml", "recipe: two\nsteps:\n"
              "  - {id: load, uses: data.from_file, with: {path: rows.jsonl}}\n"
              "  - {id: twice, uses: data.map, with: {derive: {y: 'x * 2'}}, inputs: {data: '${steps.load.data}'}}\n")
    return plan_file(str(f))


def test_a_downstream_step_starts_while_its_input_entry_is_flushed_and_the_run_waits_for_it(tmp_path, monkeypatch):
    from engine.run.runner import Runner
    from steps.data.transforms import Map

    downstream_started, sealed = threading.Event(), []
    real_run, real_sealer = Map.run, Store.sealer

    def run(self, ctx):
        downstream_started.set()
        return real_run(self, ctx)

    def sealer(self, key, entry):
        flush_and_rename = real_sealer(self, key, entry)

        def held_back():
            if entry.label == "load":  # until the step reading its outputs has started
                assert downstream_started.wait(30), "the downstream step waited for its input's entry"
            flush_and_rename()
            sealed.append(entry.label)
        return held_back

    monkeypatch.setattr(Map, "run", run)
    monkeypatch.setattr(Store, "sealer", sealer)
    store = Store(tmp_path / "cache")
    runner = Runner(chain_of_two(tmp_path, monkeypatch), store)
    results = runner.run()
    assert {r.label: r.status for r in results.values()} == {"load": "ran", "twice": "ran"}
    assert sorted(sealed) == ["load", "twice"]  # both sealed before run() returned
    assert all(store.has(r.key) for r in results.values())
    assert [n["status"] for n in store.runs.read(runner.run_id)["nodes"]] == ["ran", "ran"]


def test_a_step_whose_entry_cannot_be_written_fails_and_leaves_no_entry(tmp_path, monkeypatch):
    import errno

    from engine.run.runner import Runner

    real_sealer = Store.sealer

    def sealer(self, key, entry):
        def no_space():  # the flush to disk fails
            raise OSError(errno.ENOSPC, "No space left on device", str(self.entry_dir(key) / "entry.json.tmp"))
        return no_space if entry.label == "twice" else real_sealer(self, key, entry)

    monkeypatch.setattr(Store, "sealer", sealer)
    store = Store(tmp_path / "cache")
    runner = Runner(chain_of_two(tmp_path, monkeypatch), store)
    results = runner.run()
    twice = results["twice"]
    assert twice.status == "failed" and twice.outputs == {}
    assert twice.error.startswith("no space left on ") and " while writing twice's entry; log: " in twice.error
    assert store.has(results["load"].key) and not store.has(twice.key)
    assert store.runs.read(runner.run_id)["status"] == "failed"
    assert store.last_keys.get("two", "twice") is None

    monkeypatch.setattr(Store, "sealer", real_sealer)  # space again: the rerun computes it
    again = Runner(chain_of_two(tmp_path, monkeypatch), store).run()
    assert {r.label: r.status for r in again.values()} == {"load": "cached", "twice": "ran"}


def test_a_steps_outputs_are_linked_under_artifacts_while_the_run_goes_on(tmp_path, monkeypatch):
    from engine.run.runner import Runner
    from steps.data.transforms import Map

    link, seen = tmp_path / "artifacts" / "two" / "load" / "data", []
    real_run = Map.run

    def run(self, ctx):  # the downstream step looks for its input's link before it ends
        end = time.time() + 30
        while not link.is_symlink() and time.time() < end:
            time.sleep(0.01)
        seen.append(link.is_symlink())
        return real_run(self, ctx)

    monkeypatch.setattr(Map, "run", run)
    store = Store(tmp_path / "cache")
    results = Runner(chain_of_two(tmp_path, monkeypatch), store, artifacts_dir=tmp_path / "artifacts").run()
    assert seen == [True], "the finished step's outputs were linked only at the end of the run"
    assert link.resolve() == store.output_path(results["load"].key, "data").resolve()
