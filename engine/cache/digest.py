"""Content digests of artifacts: blake3 over (relative path, file digest) pairs.

File digests are remembered in a stat cache keyed by (path, size, mtime_ns, inode), so an
unchanged large output is not read again.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import blake3

CHUNK = 1 << 22


def stamp(st: os.stat_result) -> tuple[int, int, int]:
    """What says a file is unchanged without reading it: size, mtime and inode."""
    return st.st_size, st.st_mtime_ns, st.st_ino


def file_digest(path: Path) -> str:
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    size = path.stat().st_size
    if size > CHUNK:
        h.update_mmap(path)
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


class StatCache:
    """(path, size, mtime_ns, inode) -> digest, in diskcache so every process shares it.

    Only a cache: where its database cannot be opened or written (a read-only cache, a full
    disk) it keeps what it learns in memory for this process."""

    def __init__(self, folder: Path | None):
        self._db = None
        self._folder = folder
        self._new: dict[tuple, str] = {}  # written in one transaction by flush()

    @property
    def db(self):
        if self._db is None and self._folder is not None:
            import sqlite3

            import diskcache

            try:
                self._db = diskcache.Cache(str(self._folder), timeout=30)
            except (OSError, sqlite3.Error):
                self._folder = None  # read-only or full: memory only
        return self._db

    def digest(self, path: Path, seen: list | None = None) -> str:
        """`seen` collects (path, stamp) of the file as it was digested."""
        st = path.stat()
        if seen is not None:
            seen.append((str(path), stamp(st)))
        return self.digest_at(str(path.resolve()), st)

    def digest_at(self, name: str, st: os.stat_result) -> str:
        """The digest of the file `name` (an absolute path, used as given) whose stat is `st`."""
        key = (name, *stamp(st))
        hit = self._new.get(key)
        db = self.db
        if hit is None and db is not None:
            hit = db.get(key)
        if hit is not None:
            return hit
        d = file_digest(Path(name))
        if stamp(os.stat(name)) == key[1:]:  # not remembered if the file changed while it was read
            self._new[key] = d
        return d

    def remember(self, name: str, st_stamp: tuple[int, int, int], digest: str) -> None:
        self._new[(name, *st_stamp)] = digest

    def flush(self) -> None:
        import sqlite3

        if self._new and self.db is not None:
            try:
                with self.db.transact():
                    for key, d in self._new.items():
                        self.db.set(key, d)
            except (OSError, sqlite3.Error):  # "database or disk is full", read-only: digests are only a cache
                pass
        self._new.clear()

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None


def tree_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        out += [Path(dirpath) / f for f in sorted(filenames)]
    return out


def tree_digest(root: Path, stat_cache: StatCache | None = None, seen: list | None = None) -> str:
    """Digest of a file or a directory's files and their relative paths (`seen`: see StatCache.digest)."""
    root = Path(root)
    return combine(root, [(f, stat_cache.digest(f, seen) if stat_cache else file_digest(f))
                          for f in tree_files(root)])


def combine(root: Path, digests: list[tuple[Path, str]]) -> str:
    """The tree digest from its files' digests, in `tree_files` order."""
    h = blake3.blake3()
    for f, d in digests:
        rel = "." if f == root else f.relative_to(root).as_posix()
        h.update(f"{rel}\0{d}\n".encode())
    return h.hexdigest()


def tree_manifest(root: Path) -> tuple[str, int, dict[str, list]]:
    """Digest, size and {relative path: [size, mtime_ns, inode, digest]} of a freshly written
    output: the runner seeds the stat cache with its files, so checking it before reuse reads nothing."""
    root = Path(root)
    files, digests = {}, []
    for f in tree_files(root):
        st = f.stat()
        d = file_digest(f)
        digests.append((f, d))
        files["." if f == root else f.relative_to(root).as_posix()] = [*stamp(st), d]
    return combine(root, digests), sum(v[0] for v in files.values()), files


def tree_size(root: Path) -> int:
    return sum(f.stat().st_size for f in tree_files(Path(root)))


def canonical(obj: Any) -> str:
    return _encoder().encode(obj)


@functools.cache
def _encoder():
    """json.dumps(obj, sort_keys=True, ...) builds an encoder per call; a plan keys 100,000 nodes."""
    import json

    return json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def text_digest(text: str) -> str:
    return blake3.blake3(text.encode()).hexdigest()
