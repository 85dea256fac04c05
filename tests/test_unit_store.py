"""The store, in process: `place` moves a staged folder under its key in one rename, `sealer`
makes it an entry (entry.json last), `lock` lets one thread or process compute a key at a
time; run records and the latest keys live beside it (Runs, LastKeys)."""
import json
import multiprocessing
import threading
import time

from engine.cache.records import Entry, NodeRecord, RunRecord
from engine.cache.runs import SavedRun
from engine.cache.store import Store

KEY = "a" * 64


def staged(store: Store, text: str, key: str = KEY):
    staging = store.staging(key)
    (staging / "outputs" / "data").mkdir(parents=True)
    (staging / "outputs" / "data" / "x.txt").write_text(text)
    (staging / "log.txt").write_text(f"log of {text}\n")
    return staging


def entry(key: str = KEY, who: str = "") -> Entry:
    return Entry(key=key, uses="t.x", version="1", config={}, inputs={}, outputs={}, extra={"who": who})


def test_a_placed_key_is_readable_but_no_entry_until_its_seal_is_flushed(tmp_path):
    store = Store(tmp_path / "cache")
    scratch = store.scratch(KEY)
    scratch.mkdir(parents=True)
    staging = staged(store, "one")
    assert store.place(KEY, staging)
    assert not staging.exists() and (store.output_path(KEY, "data") / "x.txt").read_text() == "one"
    assert not store.has(KEY) and list(store.unsealed()) == [store.entry_dir(KEY)]
    seal = store.sealer(KEY, entry(who="one"))
    assert not store.has(KEY), "entry.json appeared before the seal was flushed"
    seal()
    assert store.has(KEY) and store.read_entry(KEY)["who"] == "one" and list(store.keys()) == [KEY]
    assert not scratch.exists(), "the key's resumable work outlived its entry"
    assert list(store.unsealed()) == [] and store.find(KEY[:8]) == KEY


def test_place_over_an_entry_is_a_no_op_unless_replacing(tmp_path):
    store = Store(tmp_path / "cache")
    store.commit(KEY, staged(store, "first"), entry(who="first"))
    second = staged(store, "second")
    assert store.place(KEY, second) is False and not second.exists()
    assert (store.output_path(KEY, "data") / "x.txt").read_text() == "first"
    assert store.place(KEY, staged(store, "forced"), replace=True)  # --force: the old entry goes
    assert (store.output_path(KEY, "data") / "x.txt").read_text() == "forced" and not store.has(KEY)
    store.sealer(KEY, entry(who="forced"))()
    assert store.read_entry(KEY)["who"] == "forced"
    assert [p.name for p in (store.root / "tmp").iterdir()] == []


def test_a_quarantined_entry_is_never_served_and_a_second_one_keeps_the_first(tmp_path):
    store = Store(tmp_path / "cache")
    store.commit(KEY, staged(store, "bad"), entry(who="bad"))
    first = store.quarantine(KEY)
    assert not store.has(KEY) and first == store.root / "quarantine" / KEY
    store.commit(KEY, staged(store, "worse"), entry(who="worse"))
    assert store.quarantine(KEY).name == f"{KEY}.1" and (first / "outputs/data/x.txt").read_text() == "bad"


def _hold_lock(root: str, started, release) -> None:
    with Store(root).lock(KEY):
        started.set()
        release.wait(10)


def test_a_key_lock_makes_another_process_wait(tmp_path):
    ctx = multiprocessing.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path / "cache"), started, release))
    holder.start()
    assert started.wait(10)
    got = []
    waiter = threading.Thread(target=lambda: got.append(Store(tmp_path / "cache").lock(KEY).__enter__()))
    waiter.start()
    time.sleep(0.3)
    assert got == [], "the key's lock was taken while another process held it"
    release.set()
    waiter.join(10)
    holder.join(10)
    assert len(got) == 1
    got[0].__exit__(None, None, None)


def test_run_records_are_written_whole_and_listed_oldest_first(tmp_path):
    store = Store(tmp_path / "cache")
    node = NodeRecord(label="a", recipe="r", step_id="a", uses="t.x", version="1", config={"n": 1}, inputs={},
                      key=KEY, status="cached", outputs={"data": "d" * 64})
    record = RunRecord(run_id="20260101-000000000-aaaa", recipe="r", file="r.yaml", nodes=[node], sets=["a=1"])
    store.runs.write(record)
    saved = SavedRun({**{k: v for k, v in record.to_json().items() if k != "nodes"},
                      "run_id": "20260101-000000001-bbbb"}, json.dumps([node.to_json()]))
    store.runs.write(saved)
    pulled = RunRecord(run_id="29991231-000000000-cccc", recipe="r", file="r.yaml", nodes=[],
                       extra={"pulled_from": "file:///elsewhere"})
    store.runs.write(pulled)
    assert store.runs.ids() == [record.run_id, saved.run_id, pulled.run_id]
    assert list(store.runs.newest_local()) == [saved.run_id, record.run_id]  # a pulled record is never the latest
    one, two = store.runs.read("20260101-000000000"), store.runs.read(saved.run_id)
    assert {**one, "run_id": None} == {**two, "run_id": None}  # the fast path's record is a run record too
    assert RunRecord.problem(two) is None and list(store.runs.folder.glob("*.tmp")) == []


def test_the_latest_keys_and_their_token(tmp_path):
    store = Store(tmp_path / "cache")
    assert store.last_keys.get("r", "a") is None and store.last_keys.token("r") is None
    store.last_keys.set({("r", "a"): KEY, ("r", "b"): "b" * 64}, token="t1")
    assert store.last_keys.get("r", "a") == KEY and store.last_keys.token("r") == "t1"
    store.last_keys.set({("r", "a"): "c" * 64})
    assert store.last_keys.get("r", "a") == "c" * 64 and store.last_keys.token("r") is None
    store.close()
    assert Store(tmp_path / "cache").last_keys.get("r", "b") == "b" * 64
