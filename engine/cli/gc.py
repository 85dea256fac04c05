"""`recipe gc`: delete entries no kept run refers to, never what a live run uses.

gc takes the cache's gc lock (engine/cache/hold.py). When no driver is live, it removes every
entry the kept runs do not refer to (those left by killed runs, which have no record,
included), commits cut short, and every staging folder. While drivers are live, it removes
only entries that
  - dropped run records refer to and kept ones do not (an entry no record names yet may be a
    live run's: it goes once no run is live),
  - are older than the gc's start, and
  - no live run reuses, commits or computes (both of the key's lock bytes are free),
and no staging folder or unfinished commit. Entries are renamed into a trash folder while the
lock is held, and deleted after it is let go.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from itertools import islice

from engine.cache.hold import GcLock
from engine.cache.store import Store

from .display import escape, human_size, plural


def cmd_gc(args, console) -> int:
    store = Store(args.cache_dir)
    start = time.time()
    runs = store.runs.ids()
    kept = set(islice(store.runs.newest_local(), max(args.keep_last, 0)))  # pulled records never count
    for ref in args.keep:
        kept.add(store.runs.read(ref)["run_id"])
    keep_keys = _keys(store, kept)
    with GcLock(store.root) as lock:
        if not lock.exclusive:
            named = _keys(store, set(runs) - kept)  # by dropped records only: old enough to be nobody's
        doomed, spared = [], 0
        for key in store.keys():
            if key in keep_keys:
                continue
            if not lock.exclusive and (key not in named or _newer(store, key, start) or not lock.take(key)):
                spared += 1
                continue
            doomed.append(key)
        freed = sum(_size(store, key) for key in doomed)
        trash = None if args.dry_run else _trash(store, doomed, lock.exclusive)
        if not args.dry_run:
            for rid in runs:
                if rid not in kept:
                    store.runs.path(rid).unlink(missing_ok=True)
                    store.runs.path(rid).with_suffix(".ray.log").unlink(missing_ok=True)  # Ray's own output
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    verb = "would remove" if args.dry_run else "removed"
    live = "" if lock.exclusive else (f"; runs are live: spared {plural(spared, 'entry')} they may use or that have "
                                      "no record yet, and all staging (run gc again when no run is live)")
    console.print(f"{verb} {plural(len(doomed), 'entry')} ({human_size(freed)}) and "
                  f"{plural(len(runs) - len(kept), 'run record')}; kept {plural(len(kept), 'run')}{escape(live)}",
                  soft_wrap=True)
    return 0


def _keys(store: Store, run_ids: set[str]) -> set[str]:
    return {n["key"] for rid in run_ids for n in store.runs.read(rid)["nodes"] if n.get("key")}


def _newer(store: Store, key: str, start: float) -> bool:
    try:
        return os.stat(store.entry_dir(key) / "entry.json").st_mtime >= start
    except OSError:
        return True


def _size(store: Store, key: str) -> int:
    try:
        return sum(o.get("size", 0) for o in store.read_entry(key)["outputs"].values())
    except Exception:  # noqa: BLE001 - removed meanwhile, or unreadable: it goes all the same
        return 0


def _trash(store: Store, doomed: list[str], everything: bool):
    """Rename what goes into one folder (fast, under the lock); `everything` (no live driver):
    also commits cut short and the staging folders of runs that died."""
    tmp = store.root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    trash = tempfile.mkdtemp(prefix="gc-", dir=tmp)
    moves = [store.entry_dir(key) for key in doomed]
    if everything:
        moves += list(store.unsealed()) + [p for p in tmp.iterdir() if str(p) != trash]
    for n, path in enumerate(moves):
        try:
            os.rename(path, os.path.join(trash, str(n)))
        except FileNotFoundError:
            pass
    return trash
