"""Share a cache: `push` copies entries and run records to any fsspec URL (a directory, s3://,
hf://buckets/...); `pull` brings them back, verifying every entry before it enters the local store.

Both list the remote once and move only what the other side lacks, in batches: an object
store answers one paginated listing instead of one request per entry, and s3fs transfers a
batch concurrently. A Hub storage bucket (hf://buckets/...) takes each batch in one call; a Hub
*repository* (hf://datasets/..., hf://models/...) gets one commit per push, not one per file."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from engine.recipe.errors import CacheError

from . import nofollow
from .digest import tree_files, tree_manifest
from .names import component_problem, is_key, path_problem, printable, shown, symlink_in, symlink_problem
from .records import Entry, RunRecord
from .reuse import remember_outputs
from .store import Store


def entry_problem(folder: Path) -> tuple[Entry | None, str | None]:
    """The cheap checks of an entry folder, no digest: its entry.json is an entry (its schema, and
    no name in it that would leave the folder), no symlink leads out of the folder, and its
    contents hash to the folder's key. Returns the entry (None when it is none) and what is wrong."""
    data, why = _read_json(folder / "entry.json")
    if why:
        return None, f"entry.json {why}"
    why = Entry.problem(data) or symlink_problem(folder)
    if why:  # before any digest: a digest would read what the names point to
        return None, why
    entry = Entry.from_json(data)
    if entry.expected_key() != folder.name:
        return entry, "entry.json does not match its key (config, inputs or version edited)"
    return entry, None


def _read_json(path: Path) -> tuple[Any, str | None]:
    """The JSON in `path`, or why it is unreadable: nested past Python's recursion limit, or
    holding a lone surrogate (a "\\ud800" escape), which no output can print or write."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError is a ValueError
        return data, None
    except (OSError, ValueError, RecursionError) as e:
        return None, f"unreadable ({e})"


def verify_entry(folder: Path, files: dict[str, dict[str, list]] | None = None) -> list[str]:
    """Problems with an entry folder: those of `entry_problem`, and outputs whose content no
    longer matches entry.json. `files` collects each intact output's file stamps and digests
    ({output: {relative path: [size, mtime_ns, inode, digest]}}), to seed the stat cache with."""
    entry, why = entry_problem(folder)
    if entry is None:
        return [why]
    problems = [why] if why else []
    for name, out in entry.outputs.items():
        path = folder / "outputs" / name
        if not path.exists():
            problems.append(f"output {name} is missing")
            continue
        digest, size, manifest = tree_manifest(path)
        if digest != out["digest"]:
            problems.append(f"output {name} changed (digest {digest[:12]}, recorded {out['digest'][:12]})")
        elif size != out.get("size", size):  # as reuse checks it: an entry that verifies is served
            problems.append(f"output {name} has {size} bytes, {out['size']} recorded")
        elif files is not None:
            files[name] = manifest
    return problems


def safe_url(url: str) -> str:
    """The URL without its credentials, fit to print and to record: a password goes
    (ftp://user:***@host/...), and so does a user name alone, which is how a token rides in a URL
    (https://***@host/...), and every query value (a signed URL's `?sig=`, a `?token=`). The host
    is kept as written: no port or host is parsed, which could fail."""
    parts = urlsplit(url)
    query = "&".join(f"{name}=***" if eq else name for name, eq, _ in _query(parts.query))
    userinfo, at, host = parts.netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        parts = parts._replace(netloc=f"{user}:***@{host}" if colon else f"***@{host}")
    return urlunsplit(parts._replace(query=query))


def url_secrets(url: str) -> set[str]:
    """What of `url` is a credential: its password, or a user name given without one (a token),
    and its query values of 8 characters or more (shorter ones, `?v=1`, would blank every `1` of a
    message), as written and percent-decoded."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    found = [password if colon else user] if at else []
    found += [value for _, _, value in _query(parts.query) if len(value) >= 8]
    return {form for value in found for form in (value, unquote(value), unquote_plus(value))} - {""}


def _query(query: str) -> list[tuple[str, str, str]]:
    """A query string's (name, "=", value) pieces, as written."""
    return [piece.partition("=") for piece in query.split("&") if piece]


@contextmanager
def remote_errors(url: str):
    """A remote that cannot be reached, read or written is one `error:` line, not a traceback;
    known secrets (the environment's keys, a password in the URL) are scrubbed from it."""
    from .secrets import Redactor

    try:
        yield
    except CacheError:
        raise
    except Exception as e:  # noqa: BLE001 - s3fs, botocore and the Hub client raise their own types
        redactor = Redactor()
        for secret in url_secrets(url):
            redactor.add(secret)
        hint = "; `pip install mathrecipe[s3]` adds s3fs" if isinstance(e, ImportError) else ""
        raise CacheError(redactor.scrub(f"remote {safe_url(url)}: {type(e).__name__}: {e}{hint}")) from None


class Remote:
    """A folder on any fsspec filesystem, seen as relative paths."""

    def __init__(self, url: str):
        import fsspec

        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.sizes: dict[str, int] = {}  # relative path -> bytes, where the listing says
        self.refused: dict[str, str] = {}  # relative path -> why, of names `upload` refused while writing

    def listing(self) -> set[str]:
        """Every file under the root, in one recursive listing. Of a directory remote, its files and
        symlinks (refused by `symlink`), not a FIFO or a device, which a download would open."""
        self.fs.invalidate_cache(self.root)  # fsspec reuses instances: list what is there now
        start = len(self.root) + 1 if self.root else 0  # zip://::archive.zip lists from ""
        found = self.fs.find(self.root, detail=True).items()
        files = {p[start:]: info for p, info in found if info.get("type") == "file" or info.get("islink")}
        self.sizes = {rel: info["size"] for rel, info in files.items() if isinstance(info.get("size"), int)}
        return set(files)

    def symlink(self, rel: str) -> str | None:
        """The component of `rel` that is a symlink (a name that would read from elsewhere); only
        a directory remote has them."""
        return None

    def upload(self, first: list[tuple[Path, str]], then: list[tuple[Path, str]]) -> None:
        """`first` completes before `then` starts (entry.json files go last, so a push cut
        short leaves no entry.json naming missing outputs, nor one whose output was refused)."""
        self.refused = self._put(first)
        held = {_owner(rel) for rel in self.refused}
        self.refused.update(self._put([pair for pair in then if _owner(pair[1]) not in held]))

    def _put(self, pairs: list[tuple[Path, str]]) -> dict[str, str]:
        """Write `pairs`; returns the names refused ({relative path: why})."""
        if pairs:
            targets = [f"{self.root}/{rel}" for _, rel in pairs]
            if not self.fs.async_impl:  # a directory tree needs its folders; object stores have none
                for folder in {t.rsplit("/", 1)[0] for t in targets}:
                    self.fs.makedirs(folder, exist_ok=True)
            self.fs.put([str(p) for p, _ in pairs], targets)
        return {}

    def download(self, pairs: list[tuple[str, Path]]) -> dict[str, str]:
        """Fetch `pairs`; returns the names refused ({relative path: why})."""
        for _, local in pairs:
            local.parent.mkdir(parents=True, exist_ok=True)
        if pairs:
            self.fs.get([f"{self.root}/{rel}" for rel, _ in pairs], [str(p) for _, p in pairs])
        return {}


class _LocalRemote(Remote):
    """A directory remote. Whoever else writes to it may swap a folder or file for a symlink or a
    FIFO after `symlink`'s check, and fsspec follows links: every transfer goes through `nofollow`,
    which cannot be raced. The check stays for its early, clear refusal."""

    def symlink(self, rel: str) -> str | None:
        return symlink_in(self.root, rel)

    def _put(self, pairs: list[tuple[Path, str]]) -> dict[str, str]:
        return self._each([(rel, path) for path, rel in pairs], nofollow.write, create=True)

    def download(self, pairs: list[tuple[str, Path]]) -> dict[str, str]:
        for _, local in pairs:
            local.parent.mkdir(parents=True, exist_ok=True)
        return self._each(pairs, nofollow.read, create=False)

    def _each(self, pairs: list[tuple[str, Path]], move, create: bool) -> dict[str, str]:
        refused: dict[str, str] = {}
        if not pairs:
            return refused
        root = nofollow.open_root(self.root, create)
        try:
            for rel, local in pairs:
                try:
                    move(root, rel, local)
                except nofollow.Refused as e:
                    refused[rel] = str(e)
        finally:
            os.close(root)
        return refused


def _owner(rel: str) -> str:
    """What a remote name belongs to, as a refusal names it: an entry's key, or runs/<id>.json."""
    return rel if rel.startswith("runs/") else rel.split("/")[1]


def _owners(refused: dict[str, str]) -> dict[str, str]:
    """{relative path: why} as {what it belongs to: why}."""
    return {_owner(rel): why for rel, why in refused.items()}


class _Hub(Remote):
    """A Hub repository or bucket and a folder in it: listed and written through HfApi in
    batches; read through HfFileSystem like any fsspec store."""

    def __init__(self, url: str, kind: str, hub_id: str, folder: str):
        super().__init__(url)
        self.kind, self.hub_id, self.prefix = kind, hub_id, f"{folder}/" if folder else ""

    def _relative(self, paths) -> set[str]:
        return {p[len(self.prefix):] for p in paths if p.startswith(self.prefix)}


class HubRepo(_Hub):
    """hf://datasets/org/name[/folder] (or models/, spaces/): one commit per push, which
    lands whole or not at all, so order within it does not matter."""

    def listing(self) -> set[str]:
        from huggingface_hub import HfApi

        return self._relative(HfApi().list_repo_files(self.hub_id, repo_type=self.kind))

    def upload(self, first: list[tuple[Path, str]], then: list[tuple[Path, str]]) -> None:
        from huggingface_hub import CommitOperationAdd, HfApi

        ops = [CommitOperationAdd(path_in_repo=self.prefix + rel, path_or_fileobj=str(p)) for p, rel in first + then]
        if ops:
            HfApi().create_commit(self.hub_id, ops, repo_type=self.kind,
                                  commit_message=f"recipe push: {len(ops)} files")


class HubBucket(_Hub):
    """hf://buckets/org/name[/folder]: Hub storage with no commits; one upload call per batch."""

    def listing(self) -> set[str]:
        from huggingface_hub import HfApi

        files = HfApi().list_bucket_tree(self.hub_id, self.prefix or None, recursive=True)
        return self._relative(f.path for f in files if f.type == "file")

    def _put(self, pairs: list[tuple[Path, str]]) -> dict[str, str]:
        from huggingface_hub import HfApi

        if pairs:
            HfApi().batch_bucket_files(self.hub_id, add=[(str(p), self.prefix + rel) for p, rel in pairs])
        return {}


def open_remote(url: str) -> Remote:
    if not url.startswith("hf://"):
        from fsspec.implementations.local import LocalFileSystem

        remote = Remote(url)
        return _LocalRemote(url) if isinstance(remote.fs, LocalFileSystem) else remote
    parts = url[len("hf://"):].strip("/").split("/")
    kind = parts.pop(0)[:-1] if parts[0] in ("buckets", "datasets", "models", "spaces") else "model"
    if len(parts) < 2:
        raise CacheError(f"remote {safe_url(url)}: expected hf://buckets/ORG/NAME[/FOLDER] or "
                         "hf://datasets/ORG/NAME[/FOLDER]")
    hub_id, folder = "/".join(parts[:2]).split("@")[0], "/".join(parts[2:])
    return (HubBucket if kind == "bucket" else HubRepo)(url, kind, hub_id, folder)


def _entry_files(listing: set[str]) -> dict[str, list[str]]:
    """key -> its files, for the entries in a remote listing that have an entry.json."""
    files: dict[str, list[str]] = {}
    for rel in listing:
        parts = rel.split("/", 2)
        if len(parts) == 3 and is_key(parts[1]) and parts[0] == parts[1][:2]:  # anything else is never read
            files.setdefault(parts[1], []).append(parts[2])
    return {key: names for key, names in files.items() if "entry.json" in names}


def push(store: Store, url: str, console=None, keep=None) -> tuple[int, int, list[str]]:
    """Entries and run records the remote lacks. A local entry that is no entry of its key (its
    entry.json, a name in it, a symlink out of it: `entry_problem`) is refused and stays here;
    `recipe verify` checks output digests. `keep(key)` (the driver's CacheHold.keep) keeps each
    entry to push from a concurrent `recipe gc` until the push ends. Returns (entries, run
    records, refused keys)."""
    refused: dict[str, str] = {}
    with remote_errors(url):
        remote = open_remote(url)
        present = remote.listing()
        outputs, entries = [], []
        for key in store.keys():
            folder, where = store.entry_dir(key), f"{key[:2]}/{key}"
            if f"{where}/entry.json" in present:
                continue
            if keep is not None:
                keep(key)
                if not store.has(key):  # a gc removed it before it was kept
                    continue
            files = _entry_files_to_push(folder, refused)
            if files is None:
                continue
            pairs, entry = [(f, f"{where}/{rel}") for f, rel in files], (folder / "entry.json", f"{where}/entry.json")
            if not _written_through_symlink(remote, pairs + [entry], key, refused):
                outputs += pairs
                entries.append(entry)
        staging = store.staging("push-runs")
        try:
            runs = [run for run in _runs_to_push(store, present, staging)
                    if not _written_through_symlink(remote, [run], run[1], refused)]
            remote.upload(outputs, entries + runs)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    refused.update(_owners(remote.refused))
    for key, why in refused.items():
        _refused(console, key, url, why, "to")
    written = [rel for _, rel in entries + runs if _owner(rel) not in refused]
    written_runs = sum(rel.startswith("runs/") for rel in written)
    return len(written) - written_runs, written_runs, list(refused)


def _runs_to_push(store: Store, present: set[str], staging: Path) -> list[tuple[Path, str]]:
    """Copies, in `staging`, of the run records the remote lacks: a gc while the push runs drops
    records (it never touches staging)."""
    runs = []
    for rid in store.runs.ids():
        if f"runs/{rid}.json" not in present:
            try:
                shutil.copyfile(store.runs.path(rid), staging / f"{rid}.json")
            except FileNotFoundError:  # dropped by a gc already
                continue
            runs.append((staging / f"{rid}.json", f"runs/{rid}.json"))
    return runs


def _written_through_symlink(remote: Remote, pairs: list[tuple[Path, str]], what: str, refused: dict[str, str]) -> bool:
    """Whether a name to write on a directory remote passes a symlink there (one planted by whoever
    else writes to it would have this push write outside the remote); if so, why, in `refused`."""
    through = next((link for _, rel in pairs if (link := remote.symlink(rel))), None)
    if through is not None:
        link = shown(os.path.relpath(through, remote.root))
        refused[what] = f"{link} is a symlink there: nothing is written through it"
    return through is not None


def _entry_files_to_push(folder: Path, refused: dict[str, str]) -> list[tuple[Path, str]] | None:
    """The files of an entry but its entry.json, with their names in it; None (and why, in
    `refused`) for an entry that must not leave this cache."""
    _, why = entry_problem(folder)  # first: a symlink out of the entry is never followed
    files = [] if why else [(f, f.relative_to(folder).as_posix()) for f in tree_files(folder)
                            if f != folder / "entry.json"]
    bad = next((rel for _, rel in files if path_problem(rel) is not None), None)
    if bad is not None:
        why = f"name {shown(bad)} {path_problem(bad)}"
    if why:
        refused[folder.name] = why
        return None
    return files


def pull(store: Store, url: str, console=None) -> tuple[int, int, list[str]]:
    """Entries and run records this cache lacks. Returns (entries, run records, refused: keys
    and runs/<id>.json names); a remote with neither entries nor records is an error (a typo'd
    prefix lists as empty, and "pulled 0 entries" would pass for "up to date")."""
    puller = Puller(store, url, console)
    puller.entries(set(puller.keys))
    puller.runs(puller.run_ids)
    return puller.done()


class Puller:
    """A pull, one listing of the remote, then entries and run records fetched as asked (all of
    them, or what one recipe or run needs). A remote is untrusted: an entry with a name that
    would leave its folder, whose entry.json is no entry, or whose content does not match its
    entry.json and key is refused whole, as is a malformed run record; the rest install."""

    def __init__(self, store: Store, url: str, console=None):
        self.store, self.url, self.console = store, url, console
        with remote_errors(url):
            self.remote = open_remote(url)
            self.listing = self.remote.listing()
        self.keys = _entry_files(self.listing)  # key -> its file names
        self.run_ids = [rel[len("runs/"):-len(".json")] for rel in sorted(self.listing)
                        if rel.startswith("runs/") and rel.endswith(".json")]
        if not self.keys and not self.run_ids:
            raise CacheError(f"remote {safe_url(url)} holds no cache entries and no run records "
                             "(is the URL or prefix right? `recipe push` fills one)")
        self.refused: dict[str, str] = {}
        self.pulled = self.pulled_runs = 0

    def entries(self, keys: set[str]) -> int:
        """The entries among `keys` that the remote has and this cache lacks; returns how many installed."""
        missing = {k: self.keys[k] for k in sorted(keys) if k in self.keys and not self.store.has(k)
                   and k not in self.refused}
        with remote_errors(self.url):
            installed = _install(self.store, self.remote, missing, self.refused)
        self.pulled += installed
        return installed

    def runs(self, run_ids: list[str]) -> int:
        with remote_errors(self.url):
            installed = _pull_runs(self.store, self.remote, run_ids, self.url, self.refused)
        self.pulled_runs += installed
        return installed

    def done(self) -> tuple[int, int, list[str]]:
        """(entries, run records, refused), after one line per refused entry or record."""
        for what, why in self.refused.items():
            _refused(self.console, what, self.url, why)
        return self.pulled, self.pulled_runs, list(self.refused)


def _install(store: Store, remote: Remote, missing: dict[str, list[str]], refused: dict[str, str]) -> int:
    """Download `missing` (key -> names) into staging, verify each, and place the good ones.
    Each entry.json comes first, and is checked before anything else of its entry is fetched;
    then only the files an entry has (its log and the outputs entry.json names): whatever else
    a remote keeps in an entry's folder is never downloaded, so never unverified in the cache."""
    refused.update({key: why for key, names in missing.items() if (why := _names_problem(remote, key, names))})
    wanted = {key: names for key, names in missing.items() if key not in refused}
    staged = {key: store.staging(key) / key for key in wanted}  # verified under the key's name
    try:
        refused.update(_owners(remote.download([(f"{key[:2]}/{key}/entry.json", folder / "entry.json")
                                                for key, folder in staged.items()])))
        files = {key: _entry_names(remote, key, staged[key], names) for key, names in wanted.items()
                 if key not in refused}
        refused.update({key: why for key, (_, why) in files.items() if why})
        refused.update(_owners(remote.download([(f"{key[:2]}/{key}/{name}", staged[key] / name)
                                                for key, (names, _) in files.items() for name in names])))
        return sum(_place(store, key, staged[key], refused) for key in files if key not in refused)
    finally:
        for folder in staged.values():
            shutil.rmtree(folder.parent, ignore_errors=True)
        store.flush()


ENTRY_FILES = ("log.txt",)  # beside entry.json and outputs/: what `recipe show` and reports read


def _entry_names(remote: Remote, key: str, folder: Path, names: list[str]) -> tuple[list[str], str | None]:
    """The names among a remote entry's `names` to fetch (its log, and the files of the outputs its
    entry.json, already in `folder`, names), or why the entry is refused before any of them is:
    its entry.json, or an output whose files the remote lists at another size than recorded
    (so a pull fetches no more than entry.json says)."""
    entry, why = entry_problem(folder)
    if why:
        return [], why
    if len(entry.outputs) > MAX_ENTRY_FILES:  # each output is one file at least
        return [], f"entry.json names {len(entry.outputs):,} outputs, {_OVER_FILES}"
    outputs = {f"outputs/{name}": name for name in entry.outputs}
    fetch = [n for n in names if n in ENTRY_FILES]
    listed: dict[str, int | None] = dict.fromkeys(entry.outputs, 0)  # None: a size the remote does not say
    for n in names:
        output = next((outputs[p] for p in _prefixes(n) if p in outputs), None)
        if output is not None:
            fetch.append(n)
            size, total = remote.sizes.get(f"{key[:2]}/{key}/{n}"), listed[output]
            listed[output] = None if size is None or total is None else total + size
    for name, size in listed.items():
        if size is not None and size != entry.outputs[name].get("size", size):
            return [], f"output {name} is {size} bytes on the remote, {entry.outputs[name]['size']} recorded"
    return fetch, None


def _prefixes(name: str):
    """a/b/c -> a, a/b, a/b/c"""
    cut = name.find("/")
    while cut != -1:
        yield name[:cut]
        cut = name.find("/", cut + 1)
    yield name


def _place(store: Store, key: str, folder: Path, refused: dict[str, str]) -> int:
    """1 when the verified entry in `folder` was placed (or was there already); 0 when refused."""
    files: dict[str, dict[str, list]] = {}
    problems = verify_entry(folder, files)
    if problems:  # one line, however many of its outputs are missing
        more = f" (and {len(problems) - 3:,} more problems)" if len(problems) > 3 else ""
        refused[key] = "; ".join(problems[:3]) + more
        return 0
    placed = store.place(key, folder, locked=False)  # with its entry.json: an entry in one rename
    if placed is None:  # the key's folder is there unsealed: wait for its commit, if one is in flight
        with store.lock(key):
            placed = store.place(key, folder)
    if placed:
        remember_outputs(store.root, key, files, store.stat_cache)  # its first reuse reads nothing
    return 1


MAX_TEXT = 256 << 20  # bytes of an entry.json, log.txt or run record: each is read whole into memory
# files of one pulled entry: a step's outputs are a few files, or thousands (shards, a checkpoint);
# each is one request and one digest read, and a hostile remote could list millions
MAX_ENTRY_FILES = 100_000
_OVER_FILES = f"over the limit of {MAX_ENTRY_FILES:,} files for one entry (MAX_ENTRY_FILES)"


def _too_big(remote: Remote, rel: str) -> str | None:
    size = remote.sizes.get(rel, 0)
    return f"is {size} bytes on the remote, over the {MAX_TEXT >> 20} MiB it may be" if size > MAX_TEXT else None


def _names_problem(remote: Remote, key: str, names: list[str]) -> str | None:
    """Why the remote's listing of an entry refuses it before anything of it is fetched."""
    outputs = sum(name.startswith("outputs/") for name in names)  # what a pull may fetch; the rest never is
    if outputs > MAX_ENTRY_FILES:
        return f"its outputs are {outputs:,} files on the remote, {_OVER_FILES}"
    for name in sorted(names):
        rel = f"{key[:2]}/{key}/{name}"
        why = path_problem(name)
        if why is None and remote.symlink(rel):
            why = "resolves through a symlink"
        if why is None and name in ("entry.json", *ENTRY_FILES):
            why = _too_big(remote, rel)
        if why:
            return f"name {shown(name)} {why}"
    return None


def _pull_runs(store: Store, remote: Remote, run_ids: list[str], url: str, refused: dict[str, str]) -> int:
    """Run records the cache lacks, each schema-checked and marked with where it came from, so
    that a remote's record never passes for a local run (`recipe report` picks local ones)."""
    wanted = []
    for run_id in run_ids:
        if (why := component_problem(run_id)) is not None:
            refused[f"runs/{run_id}.json"] = f"run id {shown(run_id)} {why}"
        elif (why := _too_big(remote, f"runs/{run_id}.json")) is not None:
            refused[f"runs/{run_id}.json"] = f"run record {why}"
        elif not store.runs.path(run_id).exists():
            wanted.append(run_id)
    if not wanted:
        return 0
    staging = store.staging("runs")
    try:
        refused.update(remote.download([(f"runs/{rid}.json", staging / f"{rid}.json") for rid in wanted]))
        installed = 0
        for rid in wanted:
            if f"runs/{rid}.json" in refused:
                continue
            data, why = _read_json(staging / f"{rid}.json")
            why = f"run record {why}" if why else RunRecord.problem(data, rid)
            if why:
                refused[f"runs/{rid}.json"] = why
                continue
            record = RunRecord.from_json(data)
            record.extra["pulled_from"] = safe_url(url)
            store.runs.write(record)
            installed += 1
        return installed
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _refused(console, what: str, url: str, why: str, direction: str = "from") -> None:
    """One line per refused entry or record: the remote (no password), what, and why."""
    if console:
        from rich.markup import escape

        text = printable(f"{what} {direction} {safe_url(url)}: {why}")
        console.print(f"[bold red]refused[/] {escape(text)}", soft_wrap=True)
