"""The content-addressed store under a cache directory:

    <root>/<key[:2]>/<key>/entry.json   the record, written last: without it the folder is no entry
    <root>/<key[:2]>/<key>/outputs/...  the step's outputs, one folder per output
    <root>/<key[:2]>/<key>/log.txt      the step's log
    <root>/runs/<run-id>.json           run records
    <root>/tmp/                         staging folders of entries being written
    <root>/scratch/<key>/               resumable work (shards, checkpoints) of unfinished keys
    <root>/locks/keys.lock              one process computes a key at a time: a byte per key
                                        (<key>.lock where byte locks are missing, <key>.lease on NFS/GPFS)
    <root>/index/                       diskcache: stat cache and the latest key per step
    <root>/quarantine/<key>/            entries found damaged before reuse, moved aside
    <root>/config                       settings of the cache (`shared = group`: engine/cache/perms.py)
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from . import perms
from .digest import StatCache
from .hold import _FLOCK, byte_locks, key_offset, lock_kind
from .last_keys import LastKeys
from .runs import Runs
from engine.recipe.errors import CacheError

if TYPE_CHECKING:
    from .records import Entry


class DamagedEntry(CacheError):
    """An entry.json that is there but cannot be read: a run sets the entry aside and recomputes it."""

    def __init__(self, key: str, root: Path, problem: str):
        super().__init__(f"entry {key[:12]} in {root} is damaged: {problem}; `recipe run` sets it aside and "
                         "recomputes it")
        self.problem = problem


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(os.path.abspath(root))  # no `..` in the links made into it
        self.runs = Runs(self.root / "runs")
        self.last_keys = LastKeys(self.root / "index")
        self._stat: StatCache | None = None
        self._lock_kind: str | None = None
        self._made: set[Path] = set()  # folders this process made: a cold run makes thousands of entries
        self.shared = perms.apply(self.root)  # a team cache: group-writable (`recipe config shared group`)

    def _folder(self, path: Path) -> Path:
        if path not in self._made:
            path.mkdir(parents=True, exist_ok=True)
            self._made.add(path)
        return path

    # ------------------------------------------------------------ entries
    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def _entry_file(self, key: str) -> str:
        return f"{self.root}/{key[:2]}/{key}/entry.json"  # a string: asked 10,000 times by a plan

    def has(self, key: str) -> bool:
        return os.path.isfile(self._entry_file(key))

    def read_entry(self, key: str) -> dict[str, Any]:
        try:
            with open(self._entry_file(key), encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise CacheError(f"no entry {key[:12]} in {self.root}") from None
        except ValueError as e:  # cut short by a crash of the machine, edited: JSONDecodeError, UnicodeDecodeError
            raise DamagedEntry(key, self.root, f"entry.json unreadable ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("outputs"), dict):
            raise DamagedEntry(key, self.root, "entry.json is not an entry")
        return data

    def output_path(self, key: str, name: str) -> Path:
        return self.entry_dir(key) / "outputs" / name

    def keys(self) -> Iterator[str]:
        return (d.name for d in self._key_folders() if (d / "entry.json").is_file())

    def _key_folders(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.iterdir()):
            if len(shard.name) == 2 and shard.is_dir():
                yield from sorted(shard.iterdir())

    def find(self, prefix: str) -> str | None:
        if len(prefix) < 2:
            return None
        shard = self.root / prefix[:2]
        if not shard.is_dir():
            return None
        hits = [d.name for d in shard.iterdir() if d.name.startswith(prefix) and (d / "entry.json").is_file()]
        if len(hits) > 1:
            raise CacheError(f"key prefix {prefix} is ambiguous ({len(hits)} entries)")
        return hits[0] if hits else None

    def staging(self, key: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{key[:16]}-", dir=self._folder(self.root / "tmp")))

    def scratch(self, key: str) -> Path:
        return self.root / "scratch" / key

    def commit(self, key: str, staging: Path, entry: "Entry", replace: bool = False) -> None:
        """`place`, then seal: for callers that have nothing to do in between."""
        if self.place(key, staging, replace):
            self.sealer(key, entry)()

    def place(self, key: str, staging: Path, replace: bool = False, locked: bool = True) -> bool | None:
        """Move a finished step's staged folder (outputs, log) to the key's place in one rename.
        It is not an entry until `sealer` writes its entry.json, so downstream steps can read the
        outputs while the entry is being flushed to disk. False when the key is an entry
        already: another process committed it first, with the same content. A caller without
        the key's lock (`locked=False`: a pull) gets None where the key's folder is there unsealed,
        a commit in flight or cut short: only the lock tells which, and so whether it may go."""
        final = self.entry_dir(key)
        self._folder(final.parent)
        perms.fix_modes(staging, self.shared)
        if replace and final.exists():
            self._discard(key, final)
        try:
            os.replace(staging, final)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if self.has(key):
                shutil.rmtree(staging, ignore_errors=True)
                return False
            if not locked:
                return None
            self._discard(key, final)  # outputs of a commit cut short before its seal
            os.replace(staging, final)
        return True

    def sealer(self, key: str, entry: "Entry") -> Callable[[], None]:
        """Make a placed key an entry, in two parts: its entry.json is written now, and the call
        returned flushes it to disk and renames it into the key's folder. Only that call waits
        for the disk; it may run in another thread. A crash before the rename leaves a folder
        without entry.json: no entry."""
        final = self.entry_dir(key)
        tmp = final / "entry.json.tmp"
        f = tmp.open("w", encoding="utf-8")
        try:
            f.write(entry.dumps())
            f.flush()
        except BaseException:
            f.close()
            raise

        def flush_and_rename() -> None:
            with f:
                os.fsync(f.fileno())
            os.replace(tmp, final / "entry.json")
            if os.path.isdir(scratch := self.scratch(key)):  # resumable work, needed no more
                shutil.rmtree(scratch, ignore_errors=True)
        return flush_and_rename

    def _discard(self, key: str, folder: Path) -> None:
        trash = self.staging(key + "-old")
        os.replace(folder, trash / "entry")
        shutil.rmtree(trash, ignore_errors=True)

    def quarantine(self, key: str) -> Path:
        """Move a damaged entry aside (under the key's lock): `quarantine/<key>`, or
        `<key>.N` when that key was quarantined before. Never served again."""
        folder = self._folder(self.root / "quarantine")
        for n in range(1000):
            target = folder / (key if n == 0 else f"{key}.{n}")
            try:
                os.rename(self.entry_dir(key), target)  # fails rather than replacing an older one
                return target
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        raise CacheError(f"cannot quarantine {key[:12]}: {folder} is full")

    def hold(self, noop: bool = False):
        """This driver's shared hold on the cache, which keeps `recipe gc` from removing what it uses."""
        from .hold import CacheHold

        return CacheHold(self.root, noop)

    @property
    def read_only(self) -> bool:
        """A read-only mount, or a folder this process may not write to."""
        path = self.root if self.root.exists() else self.root.parent
        try:
            return bool(os.statvfs(path).f_flag & os.ST_RDONLY) or not os.access(path, os.W_OK)
        except OSError:
            return False

    def unsealed(self) -> Iterator[Path]:
        """Key folders without an entry.json: commits cut short by a crash."""
        return (d for d in self._key_folders() if not (d / "entry.json").is_file())

    def lock(self, key: str):
        """One process computes a key at a time. An flock, which the kernel releases when its
        process dies; on a network filesystem, where flock does not hold across nodes, a lease
        file with host, pid and expiry (RECIPE_LOCK=lease|flock overrides the choice)."""
        folder = self._folder(self.root / "locks")
        if self._lock_kind is None:
            self._lock_kind = lock_kind(self.root)
        if self._lock_kind == "lease":
            from .lease import Lease

            return Lease(folder / f"{key}.lease")
        if byte_locks():
            return KeyLock(folder / "keys.lock", key)
        return Flock(folder / f"{key}.lock")

    # ------------------------------------------------------------ the stat cache
    @property
    def stat_cache(self) -> StatCache:
        if self._stat is None:
            self._stat = StatCache(self.root / "index" / "stat")
        return self._stat

    def flush(self) -> None:
        """Write the digests learned during this run to the stat cache, in one transaction."""
        if self._stat:
            self._stat.flush()

    def close(self) -> None:
        if self._stat:
            self._stat.close()
        self.last_keys.close()


class Flock:
    """An exclusive flock on a lock file; the kernel releases it if the process dies."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> "Flock":
        import fcntl

        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)  # closing the last descriptor releases the lock


class KeyLock(Flock):
    """The lock of one key: a byte of the shared file `locks/keys.lock`, at an offset taken
    from the key. One lock per key without a file per key: creating that file cost as much as
    the engine's other work on a trivial step. An open file description lock (Linux): like a
    flock, the kernel releases it when its process dies, and it excludes other threads too."""

    def __init__(self, path: Path, key: str):
        super().__init__(path)
        self.offset = key_offset(key)

    def __enter__(self) -> "KeyLock":
        import fcntl

        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.fcntl(self._fd, fcntl.F_OFD_SETLKW, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, self.offset, 1, 0))
        return self
