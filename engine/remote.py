"""Share a cache: `push` copies entries and run records to any fsspec URL (a directory, s3://,
hf://...); `pull` brings them back, verifying every entry before it enters the local store."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .digest import tree_digest, tree_files
from .records import Entry
from .store import Store


def verify_entry(folder: Path) -> list[str]:
    """Problems with an entry folder: outputs whose content no longer matches entry.json,
    or an entry.json whose contents do not hash to the folder's key."""
    try:
        entry = Entry.read(folder / "entry.json")
    except (OSError, json.JSONDecodeError, TypeError) as e:
        return [f"entry.json unreadable ({e})"]
    problems = []
    if entry.expected_key() != folder.name:
        problems.append("entry.json does not match its key (config, inputs or version edited)")
    for name, out in entry.outputs.items():
        path = folder / "outputs" / name
        if not path.exists():
            problems.append(f"output {name} is missing")
        elif tree_digest(path) != out["digest"]:
            problems.append(f"output {name} changed (digest {tree_digest(path)[:12]}, recorded {out['digest'][:12]})")
    return problems


def _fs(url: str):
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/")


def push(store: Store, url: str, console=None) -> tuple[int, int]:
    fs, root = _fs(url)
    n_entries = n_runs = 0
    for key in store.keys():
        remote = f"{root}/{key[:2]}/{key}"
        if fs.exists(f"{remote}/entry.json"):
            continue
        local = store.entry_dir(key)
        files = [f for f in tree_files(local) if f.name != "entry.json" or f.parent != local]
        for f in files + [local / "entry.json"]:  # entry.json last: a half-pushed entry is not an entry
            target = f"{remote}/{f.relative_to(local).as_posix()}"
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(f), target)
        n_entries += 1
    for rid in store.run_ids():
        target = f"{root}/runs/{rid}.json"
        if not fs.exists(target):
            fs.makedirs(f"{root}/runs", exist_ok=True)
            fs.put_file(str(store.runs / f"{rid}.json"), target)
            n_runs += 1
    return n_entries, n_runs


def pull(store: Store, url: str, console=None) -> tuple[int, int, list[str]]:
    fs, root = _fs(url)
    n_entries, refused = 0, []
    for entry_json in sorted(fs.glob(f"{root}/*/*/entry.json")):
        remote = entry_json.rsplit("/", 1)[0]
        key = remote.rsplit("/", 1)[1]
        if store.has(key):
            continue
        staging = store.staging(key)
        try:
            for f in fs.find(remote):
                rel = f[len(remote) + 1:]
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f, str(staging / rel))
            checked = staging.parent / key
            os.replace(staging, checked)  # verify under the key's name, still outside the store
            staging = checked
            problems = verify_entry(checked)
            if problems:
                refused.append(key)
                if console:
                    console.print(f"[bold red]refused[/] {key[:12]}: " + "; ".join(problems))
                continue
            final = store.entry_dir(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(checked, final)
            n_entries += 1
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    n_runs = 0
    for f in fs.glob(f"{root}/runs/*.json"):
        local = store.runs / f.rsplit("/", 1)[1]
        if not local.exists():
            store.runs.mkdir(parents=True, exist_ok=True)
            fs.get_file(f, str(local))
            n_runs += 1
    return n_entries, n_runs, refused
