"""Correct across processes and nodes: a commit that finds the key already committed is a
success; a lease file (for network filesystems, where flock does not hold) excludes other
drivers while its holder lives and expires when its holder died."""
import json
import socket
import subprocess
import sys
import threading
import time

from conftest import write

from engine.lease import Lease, read_lease
from engine.records import Entry
from engine.store import Store


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
