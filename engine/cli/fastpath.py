"""The no-op fast path: "nothing to do" costs next to nothing.

After a successful `recipe run`, `remember` saves what that run resolved under
`<cache>/index/fastpath/<fingerprint>`, where the fingerprint is a digest of the command (recipe
path, --profile, --set values, working directory, host, the RECIPE_* environment). The next
`recipe run` with the same fingerprint (`noop_run`) reuses it, without parsing YAML,
validating configs or importing the step library, if and only if:

- every recipe file read (the recipe, its `extends` parents, recipes it refers to) has the
  same content digest;
- the engine's and the step library's source files and folders, the step modules of other
  packages, and the folders on sys.path (a `pip install` changes them) have the same stats;
- every external file a step reads (and the folder it lies in, so a new file matching a glob
  counts) has the same (size, mtime, inode);
- every step's cache entry is still there and unchanged: its entry.json and every folder and
  file of its outputs have the (size, mtime, inode) they had when the plan was saved (where
  one changed, the full run checks the entry, re-digesting what changed).

While it works it holds the cache shared (engine/cache/hold.py), so `recipe gc` waits for it.
Its run record goes through the store like any other, and the run ends as a full one does
(finish.py: links, summary, warnings, final line, exit code).

Anything else falls through to the full run, which saves a new snapshot. A plan with a step
that places files outside the cache (`Step.place`) is never snapshotted: placing needs the step.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

FORMAT = 3  # 3: rows keep the steps' notes
ENGINE = Path(__file__).resolve().parents[1]  # engine/


class Row:
    """A cached step instance, as the display shows it (a plain class: a dataclass would
    cost this path a code generation)."""

    status, seconds, error, why = "cached", 0.0, None, ()

    def __init__(self, label: str, step_id: str, key: str, size: int, outputs: list[str], notes: list[str]):
        self.label, self.step_id, self.key, self.size, self.outputs = label, step_id, key, size, outputs
        self.notes = notes  # the entry's own lines (ctx.note): a cached run shows them too


def fingerprint(args) -> str:
    from engine.cache.secrets import SECRET_NAME

    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("RECIPE_") and not SECRET_NAME.search(k))
    # the engine's folder too: two checkouts on one Python (PYTHONPATH) must not serve each other's plans
    parts = [FORMAT, os.path.abspath(args.file), args.profile, list(args.sets), os.getcwd(), socket.gethostname(),
             sys.executable, str(ENGINE), env]
    return hashlib.blake2b(json.dumps(parts).encode(), digest_size=16).hexdigest()


def snapshot_path(args) -> Path:
    return Path(args.cache_dir).absolute() / "index" / "fastpath" / fingerprint(args)


# ------------------------------------------------------------------ what is checked

def _file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.blake2b(f.read(), digest_size=16).hexdigest()
    except OSError:
        return None


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _external_paths(root: str, files: list[str], folders: list[str]) -> None:
    """A file and its folder (a new file there may match a glob), or a folder and all in it."""
    if os.path.isdir(root):
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            folders.append(dirpath)
            files += [os.path.join(dirpath, f) for f in filenames]
    else:
        files.append(root)
        folders.append(os.path.dirname(root))


def _code_paths(step_classes, files: list[str], folders: list[str]) -> None:
    """What can change a plan: engine/ and steps/ sources, other step modules, installed
    packages (a `pip install` changes site-packages)."""
    folders += [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]
    for top in (ENGINE, ENGINE.parent / "steps"):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            folders.append(dirpath)
            files += [os.path.join(dirpath, f) for f in filenames if f.endswith(".py")]
    for cls in step_classes:
        module = sys.modules.get(cls.__module__)
        if getattr(module, "__file__", None):
            files.append(module.__file__)


def unchanged(check: dict[str, Any]) -> bool:
    if check.get("format") != FORMAT:
        return False
    if any(_file_digest(p) != d for p, d in check["sources"].items()):
        return False
    stats = check["stats"]
    return all(_stat(p) == s for p, s in stats.items())


def entries_present(root: Path, rows: list[list]) -> bool:
    """Every step's entry is there with the stamps it had when the plan was saved (`entry_seal`:
    the last two items of a row; its key is the third)."""
    base = str(root)
    return all(row[-1] is not None and _seal(f"{base}/{row[2][:2]}/{row[2]}/", row[-2]) == row[-1] for row in rows)


def entry_seal(folder: str, names: list[str]) -> tuple[list[str], str | None]:
    """What `entries_present` compares: entry.json and every folder and file of the outputs
    (paths relative to the entry folder), and a digest of their (size, mtime, inode)."""
    paths = ["entry.json"]
    for name in names:
        paths.append(f"outputs/{name}")
        for dirpath, dirnames, filenames in os.walk(f"{folder}outputs/{name}"):
            dirnames.sort()
            rel = os.path.relpath(dirpath, folder)
            paths += [f"{rel}/{d}" for d in dirnames] + [f"{rel}/{f}" for f in sorted(filenames)]
    return paths, _seal(folder, paths)


def _seal(folder: str, paths: list[str]) -> str | None:
    try:
        stats = [os.stat(folder + p) for p in paths]
    except OSError:
        return None
    text = " ".join(f"{st.st_size},{st.st_mtime_ns},{st.st_ino}" for st in stats)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# ------------------------------------------------------------------ saving a snapshot

def observe(args, plan) -> dict[str, Any] | None:
    """Before the run: the recipe files, code and data files it was planned from (None: never
    snapshot). Folders are stat'ed after the run, which may create some (cache/, artifacts/)."""
    from engine.recipe.step import Step

    classes = {n.step_cls for n in plan.nodes}
    if any(cls.place is not Step.place for cls in classes):
        return None
    files: list[str] = []
    folders: list[str] = []
    _code_paths(classes, files, folders)
    for n in plan.nodes:
        for f in n.step_cls(n.config).external_files():
            _external_paths(os.path.abspath(f), files, folders)
    return {"format": FORMAT, "sources": {str(p): _file_digest(str(p)) for p in plan.sources},
            "stats": {p: _stat(p) for p in files}, "folders": sorted(set(folders))}


def remember(args, check: dict[str, Any] | None, runner, summaries: list[str]) -> None:
    """After a run where every step finished: save what a no-op rerun needs, atomically."""
    if check is None:
        return
    record = runner.provenance.run_record(runner.run_id, runner.executor.name, 0.0)
    for n in record.nodes:
        n.status, n.seconds, n.error = "cached", 0.0, None
    header = {k: v for k, v in record.to_json().items() if k not in ("nodes", "run_id", "argv", "started",
                                                                    "finished", "status")}
    header["fast_path"] = True
    base = str(runner.store.root)
    rows = [[r.label, r.step_id, r.key, r.size, list(r.outputs), list(r.notes),
             *entry_seal(f"{base}/{r.key[:2]}/{r.key}/", list(r.outputs))] for r in runner.results.values()]
    runner.store.last_keys.set_token(runner.plan.name, keys_token(rows))
    stats = {**check["stats"], **{p: _stat(p) for p in check.pop("folders")}}
    nodes = json.dumps([n.to_json() for n in record.nodes], separators=(",", ":"), default=str)
    check = {**check, "stats": stats, "recipe": runner.plan.name, "profile": runner.plan.profile, "rows": rows,
             "summaries": summaries, "header": header, "nodes_chars": len(nodes)}
    path = snapshot_path(args)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(json.dumps(check, separators=(",", ":")) + "\n")
            f.write(nodes)
        os.replace(tmp, path)
    except OSError:  # a read-only or full cache: the next no-op takes the full path
        with suppress(OSError):
            tmp.unlink()


def forget(args) -> None:
    try:
        os.unlink(snapshot_path(args))
    except OSError:
        pass


# ------------------------------------------------------------------ the no-op run

def noop_run(args) -> int | None:
    """Exit code of a run with nothing to do, or None when something may have changed."""
    if args.only or args.force or args.rerun_changed_code:
        return None
    if (args.executor or "local").partition("=")[0] not in ("local", "ray"):
        return None  # a plugin's executor or a typo: the full path checks the name
    root = Path(args.cache_dir).absolute()
    try:
        with open(snapshot_path(args)) as f:
            check = json.loads(f.readline())
            nodes_json = f.read()
    except (OSError, ValueError):
        return None
    # the nodes are copied into the run record unparsed: a snapshot cut short must not make a damaged
    # record (their length is checked, not their digest: it costs nothing on a 10,000-step plan)
    if not isinstance(check, dict) or check.get("nodes_chars") != len(nodes_json):
        return None
    try:
        if not unchanged(check):
            return None
    except (KeyError, TypeError, AttributeError):  # a snapshot of another shape: it is only an index
        return None
    from engine.cache.store import Store

    store = Store(root)  # a shared cache's umask, before anything is written
    with store.hold(noop=True):  # before looking at the entries: gc waits for this run
        if not entries_present(root, check["rows"]):
            return None
        return _finish(args, store, check, nodes_json)


def _finish(args, store, check: dict[str, Any], nodes_json: str) -> int:
    """The run's lines and record, then the same end as a full run (finish.py)."""
    from engine.run.runid import new_run_id

    from .display import Display, start_line
    from .finish import Outcome, finish

    started, run_id = time.time(), new_run_id()
    rows = {label: Row(label, step_id, key, size, names, notes)
            for label, step_id, key, size, names, notes, *_ in check["rows"]}
    print(start_line(run_id, check["recipe"], len(rows), check["profile"]), flush=True)
    display = Display(quiet=args.quiet, show_all=args.all)
    if not args.quiet:
        display.fold_steps(rows.values())
        for row in rows.values():
            display.event("cached", row)
    unrecorded = _write_record(store, run_id, started, check["header"], nodes_json)
    _set_last_keys(store, check)
    done = Outcome(run_id, check["recipe"], rows, store.root, summaries=check["summaries"], unrecorded=unrecorded,
                   read_only=store.read_only)
    code = finish(args, display, done)
    store.close()
    return code


def _write_record(store, run_id: str, started: float, header: dict[str, Any], nodes_json: str) -> str | None:
    """The run record of a no-op: the saved nodes (all cached) under a new run id. A cache that
    cannot be written (read-only, full) still serves the run: returns why it was not recorded."""
    from engine.cache.runs import SavedRun
    from engine.cache.secrets import Redactor

    head = {**header, "run_id": run_id, "argv": [Redactor().scrub(a) for a in sys.argv], "started": started,
            "finished": time.time(), "status": "ok"}
    try:
        store.runs.write(SavedRun(head, nodes_json))
    except OSError as e:
        from engine.run.faults import fault_line

        return fault_line(e, store.root) or str(e)
    return None


def _set_last_keys(store, check: dict[str, Any]) -> None:
    """The latest key per step (what `plan` compares with), rewritten only if another run of
    the same recipe has moved it since this snapshot was saved."""
    token = keys_token(check["rows"])
    if store.last_keys.token(check["recipe"]) != token:
        store.last_keys.set({(check["recipe"], r[0]): r[2] for r in check["rows"]}, token=token)


def keys_token(rows: list[list]) -> str:
    return hashlib.blake2b(json.dumps([r[0] + "\0" + r[2] for r in rows]).encode(), digest_size=16).hexdigest()
