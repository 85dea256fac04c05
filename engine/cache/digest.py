"""Content digests of artifacts: blake3 over (relative path, file digest) pairs.

File digests are remembered in a stat cache keyed by (path, size, mtime_ns, inode), so an
unchanged large output is not read again.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import blake3

CHUNK = 1 << 22


def file_digest(path: Path) -> str:
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    size = path.stat().st_size
    if size > CHUNK:
        h.update_mmap(path)
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


class StatCache:
    """(path, size, mtime_ns, inode) -> digest, in diskcache so every process shares it."""

    def __init__(self, folder: Path | None):
        self._db = None
        self._folder = folder
        self._new: dict[tuple, str] = {}  # written in one transaction by flush()

    @property
    def db(self):
        if self._db is None and self._folder is not None:
            import diskcache

            self._db = diskcache.Cache(str(self._folder), timeout=30)
        return self._db

    def digest(self, path: Path) -> str:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        hit = self._new.get(key)
        db = self.db
        if hit is None and db is not None:
            hit = db.get(key)
        if hit is not None:
            return hit
        d = self._new[key] = file_digest(path)
        return d

    def flush(self) -> None:
        if self._new and self.db is not None:
            with self.db.transact():
                for key, d in self._new.items():
                    self.db.set(key, d)
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


def tree_digest(root: Path, stat_cache: StatCache | None = None) -> str:
    """Digest of a file or a directory's files and their relative paths."""
    root = Path(root)
    h = blake3.blake3()
    for f in tree_files(root):
        rel = "." if f == root else f.relative_to(root).as_posix()
        d = stat_cache.digest(f) if stat_cache else file_digest(f)
        h.update(f"{rel}\0{d}\n".encode())
    return h.hexdigest()


def tree_size(root: Path) -> int:
    return sum(f.stat().st_size for f in tree_files(Path(root)))


def canonical(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def text_digest(text: str) -> str:
    return blake3.blake3(text.encode()).hexdigest()
